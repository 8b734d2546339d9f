"""task health and heartbeat indexes: check_timeouts finds silent tasks and batches by index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('monitor_task_v2') as batch:
        batch.add_column(sa.Column('health', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('health_reason', sa.String(length=500), nullable=True))
        batch.add_column(sa.Column('health_time', sa.DateTime(), nullable=True))
    op.create_index('idx_task_heartbeat', 'monitor_task_v2', ['last_heartbeat'])
    op.create_index(
        'idx_batch_status_heartbeat', 'monitor_batch_v2', ['status', 'last_heartbeat']
    )


def downgrade() -> None:
    op.drop_index('idx_batch_status_heartbeat', table_name='monitor_batch_v2')
    op.drop_index('idx_task_heartbeat', table_name='monitor_task_v2')
    with op.batch_alter_table('monitor_task_v2') as batch:
        batch.drop_column('health_time')
        batch.drop_column('health_reason')
        batch.drop_column('health')
