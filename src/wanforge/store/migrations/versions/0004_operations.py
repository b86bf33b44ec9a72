"""operations: retention marks on predictions, worker GPU memory, shared metric counts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expired_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_predictions_expiry", ["expired_at", "completed_at"], unique=False)
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_memory", sa.JSON(), nullable=True))
    op.create_table(
        "metric_counts",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("labels", sa.String(length=500), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels"),
    )


def downgrade() -> None:
    op.drop_table("metric_counts")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("gpu_memory")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_expiry")
        batch_op.drop_column("expired_at")
