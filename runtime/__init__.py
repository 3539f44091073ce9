"""Execution substrate of dataflow: tasks, objects and resources, never datasets.

The runtime knows nothing of ``dataflow``: it runs picklable functions over
Arrow tables held in a shared-memory object store, in worker processes
(``local`` backend), in-process (``inline``) or on Ray (``ray``).
"""
