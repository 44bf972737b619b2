"""The typed write API: Protocols, real classes and the TUI fakes have the same method signatures.

If ``Actions``/``WorkerControl`` gain or change a parameter, the Protocol in
``collectors/writes/api.py`` and the fakes in ``tui_fakes.py`` must follow, or the TUI tests would
exercise an API that does not exist.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from tui_fakes import FakeActions, FakeCollector, FakeControl

from collectors.collector import Collector
from collectors.writes.actions import Actions
from collectors.writes.api import ActionsAPI, WorkerControlAPI
from collectors.writes.control import WorkerControl
from tui.app import CollectorAPI


def _public_methods(cls: type) -> dict[str, Any]:
    return {name: member for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def _shape(func: Any) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults (annotations are strings under ``from __future__``: compared too)."""
    sig = inspect.signature(func)
    return [(p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()] + [
        ("->", None, None, sig.return_annotation)]


def _same(proto: type, impl: type, *, annotations: bool = True) -> list[str]:
    problems: list[str] = []
    methods = _public_methods(proto)
    assert methods, f"{proto.__name__} declares no method"
    for name, func in methods.items():
        other = getattr(impl, name, None)
        if other is None or not callable(other):
            problems.append(f"{impl.__name__} lacks {name}")
            continue
        want, got = _shape(func), _shape(other)
        if not annotations:
            want, got = [w[:3] for w in want], [g[:3] for g in got]
        if want != got:
            problems.append(f"{impl.__name__}.{name}{inspect.signature(other)} != "
                            f"{proto.__name__}.{name}{inspect.signature(func)}")
    return problems


@pytest.mark.parametrize(("proto", "real"), [(ActionsAPI, Actions), (WorkerControlAPI, WorkerControl)])
def test_protocol_mirrors_the_real_class(proto: type, real: type) -> None:
    assert not _same(proto, real)
    extra = set(_public_methods(real)) - set(_public_methods(proto))
    assert not extra, f"{real.__name__} has public methods the Protocol does not declare: {sorted(extra)}"


@pytest.mark.parametrize(("proto", "fake"), [(ActionsAPI, FakeActions), (WorkerControlAPI, FakeControl)])
def test_tui_fake_has_the_real_signatures(proto: type, fake: type) -> None:
    assert not _same(proto, fake)
    assert isinstance(fake(), proto)


def test_collector_protocol_matches_the_collector_and_its_fake() -> None:
    # Annotations differ only in spelling (tui.history.History is another class): names, kinds, defaults.
    assert not _same(CollectorAPI, Collector, annotations=False)
    assert not _same(CollectorAPI, FakeCollector, annotations=False)
