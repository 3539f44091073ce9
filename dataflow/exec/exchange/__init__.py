"""All-to-all operations (repartition, shuffle, sort, groupby, join) as a map ->
exchange -> reduce over the object store: ``partition`` cuts blocks,
``aggregation`` reduces groups, ``tasks`` holds the task functions and
``operator`` the physical operator the executor drives."""
