"""Threshold versions: a QE saves the OK/NG and mask cuts tuned on the Predict screen as the model's thresholds.

* ``model_thresholds``: one row per saved version of a model (normalized image and pixel cuts, who, when, a
  note); version 0 is the trained thresholds (0.5, 0.5) and has no row.
* ``models.threshold_version``: the version predictions use when they name no cuts (0: the trained ones).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add model_thresholds and models.threshold_version (plain ADD COLUMN: see 0003)."""
    op.add_column("models", sa.Column("threshold_version", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "model_thresholds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("image", sa.Float, nullable=False),
        sa.Column("pixel", sa.Float, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.UniqueConstraint("model_id", "version", name="uq_model_thresholds_version"),
    )


def downgrade() -> None:
    """Back to revision 0004."""
    op.drop_table("model_thresholds")
    op.drop_column("models", "threshold_version")
