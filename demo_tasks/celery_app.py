"""The demo Celery app. Broker/backend and transport options come from the environment.

Environment:
  CELERY_BROKER_URL        broker (default redis://localhost:6379/0)
  CELERY_RESULT_BACKEND    result backend (default: the broker URL)
  DEMO_GLOBAL_KEYPREFIX    broker transport option ``global_keyprefix``
  DEMO_VISIBILITY_TIMEOUT  broker transport option ``visibility_timeout`` (seconds)
  DEMO_PRIORITY_STEPS      comma-separated ``priority_steps`` (e.g. "0,5,9")
  DEMO_RESULT_KEYPREFIX    result backend ``global_keyprefix``

Celery settings (used by ``taskdash lint``'s tests to configure live workers; unset = demo default):
  DEMO_ACKS_LATE           ``task_acks_late`` (1/0)
  DEMO_PREFETCH            ``worker_prefetch_multiplier`` (int)
  DEMO_EVENTS              ``worker_send_task_events`` (1/0)
  DEMO_RESULT_EXTENDED     ``result_extended`` (1/0; the demo default is 1)
  DEMO_RESULT_EXPIRES      ``result_expires`` in seconds ("none" = never expire)
  DEMO_RETRY_ON_WORKER_LOST  ``task_retry_on_worker_lost`` (1/0)
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Queue

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0")
BACKEND_URL = os.environ.get("CELERY_RESULT_BACKEND", BROKER_URL)


def _transport_options() -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if os.environ.get("DEMO_GLOBAL_KEYPREFIX"):
        opts["global_keyprefix"] = os.environ["DEMO_GLOBAL_KEYPREFIX"]
    if os.environ.get("DEMO_VISIBILITY_TIMEOUT"):
        opts["visibility_timeout"] = float(os.environ["DEMO_VISIBILITY_TIMEOUT"])
    if os.environ.get("DEMO_PRIORITY_STEPS"):
        opts["priority_steps"] = [int(s) for s in os.environ["DEMO_PRIORITY_STEPS"].split(",")]
    return opts


def _env_flag(name: str) -> bool:
    return os.environ[name].strip().lower() in ("1", "true", "yes", "on")


def _env_conf() -> dict[str, Any]:
    """Celery settings from the DEMO_* knobs above (only the ones that are set)."""
    conf: dict[str, Any] = {}
    for env, key in (("DEMO_ACKS_LATE", "task_acks_late"), ("DEMO_EVENTS", "worker_send_task_events"),
                     ("DEMO_RESULT_EXTENDED", "result_extended"),
                     ("DEMO_RETRY_ON_WORKER_LOST", "task_retry_on_worker_lost")):
        if os.environ.get(env):
            conf[key] = _env_flag(env)
    if os.environ.get("DEMO_PREFETCH"):
        conf["worker_prefetch_multiplier"] = int(os.environ["DEMO_PREFETCH"])
    if os.environ.get("DEMO_RESULT_EXPIRES"):
        raw = os.environ["DEMO_RESULT_EXPIRES"].strip().lower()
        conf["result_expires"] = None if raw in ("none", "never") else float(raw)
    return conf


def make_app(broker_url: str | None = None, backend_url: str | None = None,
             transport_options: dict[str, Any] | None = None, **conf: Any) -> Celery:
    """The demo app's configuration on any broker; tests use it as a client (``send_task`` by name)."""
    broker = broker_url or BROKER_URL
    backend = backend_url or (BACKEND_URL if broker_url is None else broker)
    app = Celery("demo_tasks", broker=broker, backend=backend, include=["demo_tasks.tasks"], set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options if transport_options is not None else _transport_options(),
        result_backend_transport_options=(
            {"global_keyprefix": os.environ["DEMO_RESULT_KEYPREFIX"]}
            if os.environ.get("DEMO_RESULT_KEYPREFIX") else {}
        ),
        result_extended=True,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue="celery",
        task_queues=[
            Queue("celery"),
            Queue("slow"),
            Queue("priority", queue_arguments={"x-max-priority": 9}),
            Queue("risky"),
            Queue("emails"),
        ],
        task_routes={
            "demo_tasks.tasks.slow": {"queue": "slow"},
            "demo_tasks.tasks.prioritized": {"queue": "priority"},
            "demo_tasks.tasks.poison": {"queue": "risky"},
            "demo_tasks.tasks.send_email": {"queue": "emails"},
        },
        task_default_priority=0,
    )
    app.conf.update(_env_conf())
    app.conf.update(conf)
    return app


app = make_app()
app.set_current()
