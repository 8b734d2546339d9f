"""alert retracted: a chain re-org withdrew the trade an alert was about

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('monitor_alert_log_v2') as batch:
        batch.add_column(
            sa.Column('retracted', sa.SmallInteger(), nullable=False, server_default='0')
        )


def downgrade() -> None:
    with op.batch_alter_table('monitor_alert_log_v2') as batch:
        batch.drop_column('retracted')
