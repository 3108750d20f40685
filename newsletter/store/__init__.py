"""The subscriber database: SQLAlchemy Core over SQLite or PostgreSQL."""
