"""Persistence: the monitor_*_v2 tables (`models`), engines and sessions (`session`), the
queries the stages share (`batches`, `heartbeats`), and the Alembic migrations."""
