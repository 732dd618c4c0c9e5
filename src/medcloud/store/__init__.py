"""Storage: content-addressed blob store (local folder, S3-compatible) and the metadata catalog
(SQLAlchemy Core tables, Alembic migrations, query functions). Nothing else touches SQL."""
