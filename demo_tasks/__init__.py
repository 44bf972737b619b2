"""A realistic Celery app used by the taskdash demo and tests (``celery -A demo_tasks worker``)."""

from demo_tasks.celery_app import app

__all__ = ["app"]
