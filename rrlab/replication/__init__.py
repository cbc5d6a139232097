"""PostgreSQL logical replication: the copy-both wire protocol and the pgoutput decoder."""
