"""alert outbox: notifications written with their alert, delivered from here

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('monitor_alert_outbox_v2',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dedup_key', sa.String(length=64), nullable=False),
    sa.Column('alert_id', sa.BigInteger(), nullable=False),
    sa.Column('task_id', sa.BigInteger(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('destination', sa.String(length=255), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('digest_s', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('message_ref', sa.String(length=128), nullable=True),
    sa.Column('create_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('update_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedup_key', name='uq_outbox_dedup')
    )
    with op.batch_alter_table('monitor_alert_outbox_v2', schema=None) as batch_op:
        batch_op.create_index('idx_outbox_alert', ['alert_id'], unique=False)
        batch_op.create_index('idx_outbox_status_next', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('idx_outbox_task_channel_status', ['task_id', 'channel', 'status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('monitor_alert_outbox_v2', schema=None) as batch_op:
        batch_op.drop_index('idx_outbox_task_channel_status')
        batch_op.drop_index('idx_outbox_status_next')
        batch_op.drop_index('idx_outbox_alert')

    op.drop_table('monitor_alert_outbox_v2')
