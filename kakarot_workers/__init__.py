"""Kakarot Workers: a Celery fleet that watches DEX trading and alerts within a second.

`celery -A kakarot_workers worker -Q streams|alerts` finds the app here.
"""

from kakarot_workers.celery_app import app

__all__ = ["app"]
