"""Jobs owned through leases (several replicas and workers on one database), and the data folder's identity.

* ``jobs``: ``attempts`` (runs started), ``max_attempts``, ``owner`` (the worker holding it) and
  ``lease_until`` (database clock, seconds since the epoch; renewed by the worker's heartbeat); ``phase``
  widens to 255 characters (it says why a job was queued again).
* ``service_info``: key/value rows; ``data_id`` names the data folder the database belongs to (the same id is
  in the folder's marker file, so a worker on a wrong mount refuses to start).
* ``schema_info.version`` becomes 2, so that the first release refuses this database instead of misreading it.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the lease columns and service_info."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"))
        batch.add_column(sa.Column("owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.Float, nullable=True))
        batch.alter_column("phase", type_=sa.String(255), existing_type=sa.String(64), existing_nullable=False)
    op.execute("UPDATE jobs SET attempts = 1 WHERE status <> 'queued'")
    op.create_table("service_info", sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.Text, nullable=False))
    op.execute("UPDATE schema_info SET version = 2")


def downgrade() -> None:
    """Back to the first release's schema."""
    op.execute("UPDATE schema_info SET version = 1")
    op.drop_table("service_info")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("phase", type_=sa.String(64), existing_type=sa.String(255), existing_nullable=False)
        for column in ("lease_until", "owner", "max_attempts", "attempts"):
            batch.drop_column(column)
