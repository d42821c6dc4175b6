"""Retraining from the inspection log: what a job trained from and which model it is compared with.

* ``jobs.tag``: the dataset tag a job's images were chosen by (NULL: chosen by id), so a model's card can say
  where its images came from and a retrain can start from the same tag.
* ``jobs.compare_with``: the model whose metrics the new model's card shows beside its own, on the same
  held-out images (a retrain after a review); NULL: none.
* ``results.raw_score`` (filled in for existing rows from their JSON): the log sorted by score ranks the NG
  images whose normalized scores are all 1.0 by their raw scores.

Revision ID: 0007
Revises: 0006
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the columns (plain ADD COLUMN: see 0003)."""
    op.add_column("jobs", sa.Column("tag", sa.String(128), nullable=True))
    op.add_column("jobs", sa.Column("compare_with", sa.Integer, nullable=True))
    op.add_column("results", sa.Column("raw_score", sa.Float, nullable=True))
    results = sa.table("results", sa.column("id", sa.Integer), sa.column("data", sa.Text),
                       sa.column("raw_score", sa.Float))
    connection = op.get_bind()
    for row_id, data in connection.execute(sa.select(results.c.id, results.c.data)).all():
        try:
            raw = json.loads(data or "{}").get("raw_score")
        except (ValueError, AttributeError):
            raw = None
        if isinstance(raw, (int, float)):
            connection.execute(results.update().where(results.c.id == row_id).values(raw_score=float(raw)))


def downgrade() -> None:
    """Back to revision 0006."""
    op.drop_column("results", "raw_score")
    op.drop_column("jobs", "compare_with")
    op.drop_column("jobs", "tag")
