"""drain across processes: purge_requested and draining_since on model versions, gateway heartbeats

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purge_requested", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("draining_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "gateway_heartbeats",
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica"),
    )
    with op.batch_alter_table("gateway_heartbeats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_heartbeats_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gateway_heartbeats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_heartbeats_expires_at"))
    op.drop_table("gateway_heartbeats")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("draining_since")
        batch_op.drop_column("purge_requested")
