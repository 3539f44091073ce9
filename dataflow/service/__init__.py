"""The batch service: one gRPC service that streams a running dataset's blocks to
consumers in other processes and hosts, for ``Dataset.streaming_split`` (fixed
splits) and ``Dataset.serve``/``dataflow.connect`` (consumers that come and go).

``dispenser.py`` hands blocks out by a policy (``policies.py``), ``server.py``
serves it (token, TLS), ``client.py`` consumes it; ``protocol.py`` is the wire."""
