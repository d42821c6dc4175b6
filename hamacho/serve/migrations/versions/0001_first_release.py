"""The schema of the first release (schema_info version 1): images, models, jobs, saved results.

A database that release created has these tables and no ``alembic_version``; it is stamped at this
revision and upgraded from here (:func:`hamacho.serve.schema_upgrade.upgrade_schema`).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the first release's tables."""
    op.create_table("schema_info", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("version", sa.Integer, nullable=False))
    op.execute("INSERT INTO schema_info (id, version) VALUES (1, 1)")
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("stored", sa.String(255), nullable=False, unique=True),
        sa.Column("group", sa.String(8), nullable=False, index=True),
        sa.Column("tag", sa.String(128), nullable=True, index=True),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tag", sa.String(128), nullable=False, unique=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("backbone", sa.String(64), nullable=False),
        sa.Column("image_size", sa.String(32), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("entry", sa.String(255), nullable=False),
        sa.Column("job_id", sa.Integer, nullable=True),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_tag", sa.String(128), nullable=False, index=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("phase", sa.String(64), nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("model_id", sa.Integer, nullable=True),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("image_ids", sa.Text, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("started_at", sa.String(32), nullable=True),
        sa.Column("finished_at", sa.String(32), nullable=True),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    """Drop everything."""
    for table in ("results", "jobs", "models", "images", "schema_info"):
        op.drop_table(table)
