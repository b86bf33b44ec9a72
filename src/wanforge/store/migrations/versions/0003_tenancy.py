"""tenancy and quotas: admin keys, key limits and expiry, output file owners

Rows made before tenancy get an owner: the oldest key that is not revoked (on a server with one
key, the one that made them all), and that key inherits the server-wide webhook secret so its
receivers keep verifying. With no such key they stay without an owner: admin keys only.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LEGACY_SECRET = "webhook_secret"  # wanforge.webhooks.secret.SECRET_NAME

api_keys = sa.table(
    "api_keys",
    sa.column("id", sa.String),
    sa.column("created_at", sa.DateTime),
    sa.column("revoked_at", sa.DateTime),
)
predictions = sa.table(
    "predictions",
    sa.column("id", sa.String),
    sa.column("api_key_id", sa.String),
    sa.column("outputs", sa.JSON),
    sa.column("created_at", sa.DateTime),
)
uploads = sa.table("uploads", sa.column("api_key_id", sa.String))
server_secrets = sa.table(
    "server_secrets",
    sa.column("name", sa.String),
    sa.column("value", sa.Text),
    sa.column("created_at", sa.DateTime),
)
output_files = sa.table(
    "output_files",
    sa.column("key", sa.String),
    sa.column("prediction_id", sa.String),
    sa.column("api_key_id", sa.String),
    sa.column("created_at", sa.DateTime),
)


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("concurrency", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_window", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("rate_count", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_key_status", ["api_key_id", "status"], unique=False)
    op.create_table(
        "output_files",
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("prediction_id", sa.String(length=32), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_output_files_prediction_id"), ["prediction_id"], unique=False)
    _give_owners(op.get_bind())


def _give_owners(conn: Any) -> None:
    owner = conn.execute(
        sa.select(api_keys.c.id)
        .where(api_keys.c.revoked_at.is_(None))
        .order_by(api_keys.c.created_at, api_keys.c.id)
        .limit(1)
    ).scalar()
    if owner is not None:
        conn.execute(
            sa.update(predictions).where(predictions.c.api_key_id.is_(None)).values(api_key_id=owner)
        )
        conn.execute(sa.update(uploads).where(uploads.c.api_key_id.is_(None)).values(api_key_id=owner))
        legacy = conn.execute(
            sa.select(server_secrets.c.value).where(server_secrets.c.name == LEGACY_SECRET)
        ).scalar()
        if legacy is not None:
            conn.execute(
                sa.insert(server_secrets).values(
                    name=f"{LEGACY_SECRET}:{owner}",
                    value=legacy,
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )
    seen: set[str] = set()
    rows = conn.execute(
        sa.select(predictions.c.id, predictions.c.api_key_id, predictions.c.outputs, predictions.c.created_at)
    )
    for pid, key_id, outputs, created_at in rows.fetchall():
        for key in outputs or []:
            if isinstance(key, str) and key not in seen:
                seen.add(key)
                conn.execute(
                    sa.insert(output_files).values(
                        key=key, prediction_id=pid, api_key_id=key_id, created_at=created_at
                    )
                )


def downgrade() -> None:
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_output_files_prediction_id"))
    op.drop_table("output_files")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_key_status")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("rate_count")
        batch_op.drop_column("rate_window")
        batch_op.drop_column("concurrency")
        batch_op.drop_column("rpm")
        batch_op.drop_column("is_admin")
        batch_op.drop_column("expires_at")
