"""taskdash collectors: read Celery-on-Redis state into immutable Snapshots (no Textual here)."""
