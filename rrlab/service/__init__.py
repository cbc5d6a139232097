"""The runs replication service (the consumer): transactions, flush scheduling, transform, sinks."""
