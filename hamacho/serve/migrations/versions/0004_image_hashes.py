"""The content hash of registered images, so that a file uploaded twice into a tag is reported and skipped.

* ``images.sha256``: hex SHA-256 of the stored file; NULL for images registered before this revision (their
  hash is computed from the file the first time their tag gets new images).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add images.sha256 and its index (plain ADD COLUMN: see 0003 on SQLite's batch mode)."""
    op.add_column("images", sa.Column("sha256", sa.String(64), nullable=True))
    op.create_index("ix_images_sha256", "images", ["sha256"])


def downgrade() -> None:
    """Back to revision 0003."""
    op.drop_index("ix_images_sha256", table_name="images")
    op.drop_column("images", "sha256")
