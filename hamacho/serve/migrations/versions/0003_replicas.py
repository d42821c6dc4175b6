"""Replicas and the models in their memory, shared through the database.

* ``replicas``: one row per running ``hamacho serve`` process (its id, host, process id, start), kept alive by
  its heartbeat (``seen_until``, database clock); a row past it is a replica that died, removed by the others.
* ``loaded_models``: which replica holds which model in memory (published by each replica), so that the list
  of loaded models and the model's "loaded" flag are the same on every replica.
* ``models.keep_loaded``: "Load" asked for the model to stay in memory (each replica loads it when it has
  room); ``models.memory_epoch``: "Unload" counts up, and every replica drops a copy it loaded before.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add replicas, loaded_models and the models' memory columns."""
    # plain ADD COLUMN, never a batch copy of "models": SQLite's batch mode drops the old table, and with
    # foreign keys on that deletes every saved result (ON DELETE CASCADE)
    op.add_column("models", sa.Column("keep_loaded", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("models", sa.Column("memory_epoch", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False),
        sa.Column("seen_until", sa.Float, nullable=False),
    )
    op.create_table(
        "loaded_models",
        sa.Column("replica_id", sa.String(128), sa.ForeignKey("replicas.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("last_used", sa.Float, nullable=False),
    )
    op.create_index("ix_loaded_models_model_id", "loaded_models", ["model_id"])


def downgrade() -> None:
    """Back to revision 0002."""
    op.drop_index("ix_loaded_models_model_id", table_name="loaded_models")
    op.drop_table("loaded_models")
    op.drop_table("replicas")
    op.drop_column("models", "memory_epoch")  # SQLite 3.35 and newer drop a column in place (see upgrade)
    op.drop_column("models", "keep_loaded")
