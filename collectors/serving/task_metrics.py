"""Prometheus families of the per-task-name analytics (issue 15), appended by ``render_metrics``.

===============================================  ====================================================
``task_events_total{task,outcome}`` (counter)     task events per name and outcome since taskdash
                                                  started (sent, received, started, succeeded, failed,
                                                  retried, rejected, revoked)
``task_runtime_seconds{task}`` (histogram)        the ``runtime`` of task-succeeded events
``task_wait_seconds{task}`` (histogram)           queue wait: started − sent (task-sent on), else
                                                  started − received
``task_failure_ratio{task}``                      failed / (succeeded + failed) over the rolling window
``task_events_state{state}``                      1 for the current state: ok / off / idle
===============================================  ====================================================

Bounded label cardinality: ``task`` takes at most the aggregator's ``max_names`` values (200) plus
``(other)`` and ``(unknown)``; a name, once placed, keeps its series (counters stay monotonic).
"""

from __future__ import annotations

import math

from collectors.core.taskstats import OUTCOMES, TaskStatsView


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _le(v: float) -> str:
    return "+Inf" if math.isinf(v) else repr(float(v))


def task_stats_lines(view: TaskStatsView | None, prefix: str = "taskdash_") -> list[str]:
    """Exposition lines for ``view`` (empty when there is no view)."""
    if view is None:
        return []
    out: list[str] = []
    name = prefix + "task_events_state"
    out += [f"# HELP {name} State of the task event feed (1 for the current one): ok, off (workers run without -E), "
            "idle (no task event yet).", f"# TYPE {name} gauge"]
    out += [f'{name}{{state="{st}"}} {1 if view.state == st else 0}' for st in ("ok", "off", "idle")]
    name = prefix + "task_events"
    out += [f"# HELP {name} Task events per task name and outcome since taskdash started.",
            f"# TYPE {name} counter"]
    for t in view.tasks:
        task = _esc(t.name)
        for outcome, n in zip(OUTCOMES, t.totals, strict=False):
            out.append(f'{name}_total{{task="{task}",outcome="{outcome}"}} {n}')
    for fam, help_, get in (
            ("task_runtime_seconds", "Runtime of succeeded tasks (task-succeeded runtime) per task name.",
             lambda t: (t.runtime_hist, t.runtime_sum)),
            ("task_wait_seconds", "Queue wait per task name: started - sent (task-sent), else started - received.",
             lambda t: (t.wait_hist, t.wait_sum))):
        name = prefix + fam
        out += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        for t in view.tasks:
            hist, total = get(t)
            if not hist:
                continue
            task = _esc(t.name)
            out += [f'{name}_bucket{{task="{task}",le="{_le(le)}"}} {n}' for le, n in hist]
            out.append(f'{name}_sum{{task="{task}"}} {float(total)!r}')
            out.append(f'{name}_count{{task="{task}"}} {hist[-1][1]}')
    name = prefix + "task_failure_ratio"
    out += [f"# HELP {name} failed / (succeeded + failed) per task name over the rolling window "
            f"({view.window_s:g} s).", f"# TYPE {name} gauge"]
    out += [f'{name}{{task="{_esc(t.name)}"}} {t.failure_rate!r}' for t in view.tasks if t.failure_rate is not None]
    return out
