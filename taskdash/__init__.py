"""taskdash: a terminal dashboard for Celery on Redis."""

__version__ = "0.1.0"
