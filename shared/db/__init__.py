"""PostgreSQL + pgvector access: pool, migrations and one repository module per table."""
