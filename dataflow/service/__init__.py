"""The batch service: a gRPC coordinator that streams a running dataset's blocks
to consumers in other processes and hosts (``Dataset.streaming_split``)."""
