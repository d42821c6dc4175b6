"""Alembic migrations of the service's database (run by :func:`hamacho.serve.db.open_database`)."""
