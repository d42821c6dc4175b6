"""Alembic's environment: runs on the connection :mod:`hamacho.serve.schema_upgrade` hands over (no alembic.ini).

The connection already holds the migration lock, so exactly one process migrates a database at a time.
"""

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table (a no-op on PostgreSQL).
context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
