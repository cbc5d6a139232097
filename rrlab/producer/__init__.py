"""The producer: realistic TaskRun inserts, updates and deletes at a target rate."""
