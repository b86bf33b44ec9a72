"""fair scheduling: each key's weight and turns, and its own cap on queued predictions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weight", sa.Float(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("fair_start", sa.Float(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("fair_finish", sa.Float(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("max_queued", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("max_queued")
        batch_op.drop_column("fair_finish")
        batch_op.drop_column("fair_start")
        batch_op.drop_column("weight")
