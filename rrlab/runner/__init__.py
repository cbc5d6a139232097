"""The phase runner: starts the consumer and producers as processes and collects metrics."""
