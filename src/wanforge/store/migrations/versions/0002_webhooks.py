"""webhooks: delivery state on predictions, server secrets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_url", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("webhook_state", sa.String(length=20), nullable=False, server_default="none")
        )
        batch_op.add_column(sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("webhook_next_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("webhook_error", sa.Text(), nullable=False, server_default=""))
        batch_op.create_index("ix_predictions_webhook", ["webhook_state", "webhook_next_at"], unique=False)
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_webhook")
        batch_op.drop_column("webhook_error")
        batch_op.drop_column("webhook_next_at")
        batch_op.drop_column("webhook_attempts")
        batch_op.drop_column("webhook_state")
        batch_op.drop_column("webhook_url")
