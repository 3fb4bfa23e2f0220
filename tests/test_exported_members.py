"""Each package's public `__all__` is sorted and every name in it exists (httpx's habit)."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "broker",
    "schemas",
    "adapters",
    "adapters.formats",
    "broker.audit",
    "broker.audit.merkle",
    "broker.audit.verify",
    "broker.identity.state",
    "adapters.stub",
    "broker.client",
    "broker.rules.stanag4774",
    "broker.contract.vectors",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    mod = importlib.import_module(name)
    exported = list(getattr(mod, "__all__", []))
    # ruff RUF022's isort-style order: CONSTANTS, then Classes, then functions, each alphabetical
    style = sorted(exported, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert exported == style, f"{name}.__all__ is not sorted"
    for attr in exported:
        assert hasattr(mod, attr), f"{name}.__all__ names {attr!r}, which does not exist"
