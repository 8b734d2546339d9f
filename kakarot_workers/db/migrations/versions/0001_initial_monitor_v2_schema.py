"""initial monitor_v2 schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('monitor_alert_log_v2',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dedup_key', sa.String(length=64), nullable=False),
    sa.Column('task_id', sa.BigInteger(), nullable=False),
    sa.Column('config_id', sa.BigInteger(), nullable=True),
    sa.Column('config_version', sa.Integer(), nullable=True),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.Column('epoch', sa.Integer(), nullable=True),
    sa.Column('target_id', sa.BigInteger(), nullable=True),
    sa.Column('chain_type', sa.String(length=16), nullable=False),
    sa.Column('ca', sa.String(length=128), nullable=False),
    sa.Column('token_symbol', sa.String(length=64), nullable=True),
    sa.Column('alert_type', sa.String(length=32), nullable=False),
    sa.Column('alert_data', sa.JSON(), nullable=True),
    sa.Column('tx_hash', sa.String(length=128), nullable=True),
    sa.Column('log_index', sa.Integer(), nullable=True),
    sa.Column('block_number', sa.BigInteger(), nullable=True),
    sa.Column('event_time', sa.DateTime(), nullable=True),
    sa.Column('price_usd', sa.Numeric(precision=30, scale=8), nullable=True),
    sa.Column('amount_usd', sa.Numeric(precision=30, scale=8), nullable=True),
    sa.Column('incomplete_data', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('notify_status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('create_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedup_key', name='uq_alert_dedup')
    )
    with op.batch_alter_table('monitor_alert_log_v2', schema=None) as batch_op:
        batch_op.create_index('idx_alert_ca_time', ['ca', 'create_time'], unique=False)
        batch_op.create_index('idx_alert_task_time', ['task_id', 'create_time'], unique=False)

    op.create_table('monitor_batch_item_v2',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=False),
    sa.Column('target_id', sa.BigInteger(), nullable=False),
    sa.Column('batch_order', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('batch_id', 'target_id', name='uq_batch_item')
    )
    with op.batch_alter_table('monitor_batch_item_v2', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_monitor_batch_item_v2_target_id'), ['target_id'], unique=False)

    op.create_table('monitor_batch_v2',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.BigInteger(), nullable=False),
    sa.Column('batch_no', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), server_default='1', nullable=False),
    sa.Column('item_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('consumer_id', sa.String(length=128), nullable=True),
    sa.Column('worker_id', sa.String(length=128), nullable=True),
    sa.Column('worker_pid', sa.Integer(), nullable=True),
    sa.Column('last_heartbeat', sa.DateTime(), nullable=True),
    sa.Column('total_alerts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_alert_time', sa.DateTime(), nullable=True),
    sa.Column('error_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('create_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('update_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'epoch', 'batch_no', name='uq_batch_task_epoch_no')
    )
    with op.batch_alter_table('monitor_batch_v2', schema=None) as batch_op:
        batch_op.create_index('idx_batch_task_epoch', ['task_id', 'epoch'], unique=False)

    op.create_table('monitor_config_v2',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('config_name', sa.String(length=128), nullable=False),
    sa.Column('config_category', sa.String(length=32), nullable=True),
    sa.Column('chain_type', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=True),
    sa.Column('market_type', sa.String(length=32), nullable=True),
    sa.Column('min_transaction_usd', sa.Numeric(precision=30, scale=8), nullable=True),
    sa.Column('cumulative_min_amount_usd', sa.Numeric(precision=30, scale=8), nullable=True),
    sa.Column('time_interval', sa.String(length=8), server_default='5m', nullable=False),
    sa.Column('top_holders_threshold', sa.Numeric(precision=8, scale=4), nullable=True),
    sa.Column('events_config', sa.JSON(), nullable=True),
    sa.Column('trigger_logic', sa.String(length=8), server_default='any', nullable=False),
    sa.Column('notify_methods', sa.JSON(), nullable=True),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('status', sa.SmallInteger(), server_default='1', nullable=False),
    sa.Column('del_flag', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('create_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('update_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('monitor_config_v2', schema=None) as batch_op:
        batch_op.create_index('idx_config_update_time', ['update_time'], unique=False)

    op.create_table('monitor_task_config_v2',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.BigInteger(), nullable=False),
    sa.Column('config_id', sa.BigInteger(), nullable=False),
    sa.Column('config_order', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'config_id', name='uq_task_config')
    )
    with op.batch_alter_table('monitor_task_config_v2', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_monitor_task_config_v2_config_id'), ['config_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_monitor_task_config_v2_task_id'), ['task_id'], unique=False)

    op.create_table('monitor_task_target_v2',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.BigInteger(), nullable=False),
    sa.Column('target_type', sa.String(length=16), server_default='token', nullable=False),
    sa.Column('target_value', sa.String(length=128), nullable=False),
    sa.Column('token_name', sa.String(length=128), nullable=True),
    sa.Column('token_symbol', sa.String(length=64), nullable=True),
    sa.Column('market_cap', sa.Numeric(precision=30, scale=8), nullable=True),
    sa.Column('pair_address', sa.String(length=128), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=True),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.Column('batch_order', sa.Integer(), nullable=True),
    sa.Column('priority', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.SmallInteger(), server_default='1', nullable=False),
    sa.Column('create_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('update_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'target_value', name='uq_task_target')
    )
    with op.batch_alter_table('monitor_task_target_v2', schema=None) as batch_op:
        batch_op.create_index('idx_target_task_status', ['task_id', 'status'], unique=False)

    op.create_table('monitor_task_v2',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('task_name', sa.String(length=128), nullable=False),
    sa.Column('task_type', sa.String(length=16), nullable=False),
    sa.Column('chain_type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.SmallInteger(), server_default='1', nullable=False),
    sa.Column('del_flag', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('current_epoch', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_heartbeat', sa.DateTime(), nullable=True),
    sa.Column('create_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('update_time', sa.DateTime(), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('monitor_task_v2')
    with op.batch_alter_table('monitor_task_target_v2', schema=None) as batch_op:
        batch_op.drop_index('idx_target_task_status')

    op.drop_table('monitor_task_target_v2')
    with op.batch_alter_table('monitor_task_config_v2', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_monitor_task_config_v2_task_id'))
        batch_op.drop_index(batch_op.f('ix_monitor_task_config_v2_config_id'))

    op.drop_table('monitor_task_config_v2')
    with op.batch_alter_table('monitor_config_v2', schema=None) as batch_op:
        batch_op.drop_index('idx_config_update_time')

    op.drop_table('monitor_config_v2')
    with op.batch_alter_table('monitor_batch_v2', schema=None) as batch_op:
        batch_op.drop_index('idx_batch_task_epoch')

    op.drop_table('monitor_batch_v2')
    with op.batch_alter_table('monitor_batch_item_v2', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_monitor_batch_item_v2_target_id'))

    op.drop_table('monitor_batch_item_v2')
    with op.batch_alter_table('monitor_alert_log_v2', schema=None) as batch_op:
        batch_op.drop_index('idx_alert_task_time')
        batch_op.drop_index('idx_alert_ca_time')

    op.drop_table('monitor_alert_log_v2')
