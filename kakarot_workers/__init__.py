"""Kakarot Workers: a Celery fleet that watches DEX trading and alerts within a second.

Importing the package starts nothing. The Celery app is `kakarot_workers.celery` (so
`celery -A kakarot_workers worker -Q streams` finds it); the pipeline is one folder per stage:
`control/` (beat's jobs) → `streams/` (one consumer per batch) → `sources/` (feed, EVM) →
`alerts/` (rules, windows, cooldowns, the alert log) → `notify/` (outbox and channels).
"""
