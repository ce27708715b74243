"""Database: SQLAlchemy models, async sessions, the run store and Alembic migrations."""
