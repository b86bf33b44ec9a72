"""storage quotas: each key's quota, the sizes of inputs and outputs, uploads made from inputs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("storage_quota", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("input_bytes", sa.BigInteger(), server_default="0", nullable=False))
    # what the rows already hold counts from the start (outputs made before stay uncounted: 0)
    op.execute("UPDATE predictions SET input_bytes = length(CAST(input AS TEXT))")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prediction_id", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_uploads_api_key_id", ["api_key_id"], unique=False)
        batch_op.create_index("ix_uploads_prediction_id", ["prediction_id"], unique=False)
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.create_index("ix_output_files_api_key_id", ["api_key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.drop_index("ix_output_files_api_key_id")
        batch_op.drop_column("size")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index("ix_uploads_prediction_id")
        batch_op.drop_index("ix_uploads_api_key_id")
        batch_op.drop_column("prediction_id")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("input_bytes")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("storage_quota")
