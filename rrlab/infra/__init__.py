"""Infrastructure: the embedded or user-given PostgreSQL and ClickHouse, and their set-up."""
