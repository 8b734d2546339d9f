"""webhook destinations as JSON: pending webhook notifications written as "SECRET_ENV url" become
{"url", "secret_env"}, and the destination column grows to 1024 (the JSON is longer)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

outbox = sa.table(
    'monitor_alert_outbox_v2',
    sa.column('id', sa.BigInteger),
    sa.column('channel', sa.String),
    sa.column('destination', sa.String),
)


def upgrade() -> None:
    with op.batch_alter_table('monitor_alert_outbox_v2') as batch:
        batch.alter_column(
            'destination', existing_type=sa.String(length=255), type_=sa.String(length=1024)
        )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(outbox.c.id, outbox.c.destination).where(outbox.c.channel == 'webhook')
    ).all()
    for row_id, destination in rows:
        if not destination or destination.startswith('{'):
            continue
        secret_env, _, url = destination.partition(' ')
        connection.execute(
            outbox.update()
            .where(outbox.c.id == row_id)
            .values(destination=json.dumps({'url': url, 'secret_env': secret_env}, separators=(',', ':')))
        )


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(outbox.c.id, outbox.c.destination).where(outbox.c.channel == 'webhook')
    ).all()
    for row_id, destination in rows:
        if destination and destination.startswith('{'):
            parsed = json.loads(destination)
            connection.execute(
                outbox.update()
                .where(outbox.c.id == row_id)
                .values(destination=f"{parsed['secret_env']} {parsed['url']}")
            )
    with op.batch_alter_table('monitor_alert_outbox_v2') as batch:
        batch.alter_column(
            'destination', existing_type=sa.String(length=1024), type_=sa.String(length=255)
        )
