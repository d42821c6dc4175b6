"""The inspection log: saved results searchable by name, score and decision, and a reviewer's verdict on each.

* ``results``: ``name``, ``score``, ``decision`` (copied from the result's JSON, filled in for existing rows
  here) so the log filters and sorts in the database; ``verdict`` (``correct``, ``false_alarm``,
  ``missed_defect`` or NULL: not reviewed), ``reviewed_by``, ``reviewed_at``, ``review_note``.

Revision ID: 0006
Revises: 0005
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ("name", "score", "decision", "verdict", "reviewed_by", "reviewed_at", "review_note")


def upgrade() -> None:
    """Add the columns (plain ADD COLUMN: see 0003), fill name, score and decision, index what the log filters."""
    op.add_column("results", sa.Column("name", sa.String(255), nullable=True))
    op.add_column("results", sa.Column("score", sa.Float, nullable=True))
    op.add_column("results", sa.Column("decision", sa.String(4), nullable=True))
    op.add_column("results", sa.Column("verdict", sa.String(16), nullable=True))
    op.add_column("results", sa.Column("reviewed_by", sa.String(128), nullable=True))
    op.add_column("results", sa.Column("reviewed_at", sa.String(32), nullable=True))
    op.add_column("results", sa.Column("review_note", sa.Text, nullable=True))
    results = sa.table("results", sa.column("id", sa.Integer), sa.column("data", sa.Text),
                       sa.column("name", sa.String), sa.column("score", sa.Float), sa.column("decision", sa.String))
    connection = op.get_bind()
    for row_id, data in connection.execute(sa.select(results.c.id, results.c.data)).all():
        try:
            record = json.loads(data or "{}")
        except ValueError:
            record = {}
        score = record.get("score")
        connection.execute(results.update().where(results.c.id == row_id).values(
            name=str(record.get("name") or "")[:255] or None,
            score=float(score) if isinstance(score, (int, float)) else None,
            decision=record.get("decision") if record.get("decision") in ("OK", "NG") else None))
    op.create_index("ix_results_decision", "results", ["decision"])
    op.create_index("ix_results_verdict", "results", ["verdict"])
    op.create_index("ix_results_created_at", "results", ["created_at"])


def downgrade() -> None:
    """Back to revision 0005."""
    for index in ("ix_results_created_at", "ix_results_verdict", "ix_results_decision"):
        op.drop_index(index, table_name="results")
    for column in reversed(COLUMNS):
        op.drop_column("results", column)
