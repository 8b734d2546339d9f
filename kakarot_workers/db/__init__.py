"""Persistence: the monitor_*_v2 tables, engines and sessions, migrations."""

from kakarot_workers.db.session import get_engine, session_scope, upgrade_schema

__all__ = ["get_engine", "session_scope", "upgrade_schema"]
