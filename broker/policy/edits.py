"""The building blocks of every edit of policy.toml: one lock for every process on the state folder,
checking a policy before it is written, and small helpers for the immutable model."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TypeVar

from broker.clock import utcnow
from broker.errors import PolicyError
from broker.identity.state import StatePaths
from broker.policy.loader import parse_policy
from broker.policy.model import Policy, SigningKey
from broker.policy.render import render_policy, write_policy
from schemas.kinds import KINDS

__all__ = [
    "check",
    "check_kinds",
    "policy_error",
    "policy_lock",
    "registration",
    "replace_map",
    "save",
    "today",
    "unknown_org",
]

_K = TypeVar("_K")
_V = TypeVar("_V")


def today() -> datetime:
    """Now, to the second: the start of a key's validity."""
    return utcnow().replace(microsecond=0)


@contextlib.contextmanager
def policy_lock(paths: StatePaths) -> Iterator[None]:
    """Serialise read-modify-write of policy.toml between processes sharing the state folder."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.root / ".policy.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def registration(public: bytes, now: datetime, days: int, keyid: str) -> SigningKey:
    return SigningKey(keyid, public, now, now + timedelta(days=days))



def replace_map(m: Mapping[_K, _V], key: _K, value: _V) -> Mapping[_K, _V]:
    d = dict(m)
    d[key] = value
    return MappingProxyType(d)


def check(paths: StatePaths, policy: Policy) -> None:
    parse_policy(render_policy(policy), str(paths.policy))


def policy_error(paths: StatePaths, message: str) -> PolicyError:
    return PolicyError(message, path=str(paths.policy))


def unknown_org(paths: StatePaths, policy: Policy, org: str) -> PolicyError:
    known = ", ".join(sorted(policy.organisations))
    return policy_error(paths, f"unknown organisation {org!r} (known: {known})")


def check_kinds(paths: StatePaths, kinds: Iterable[str]) -> frozenset[str]:
    listed = list(kinds)
    for k in listed:
        if k not in KINDS:
            raise policy_error(paths, f"unknown kind {k!r} (registered: {', '.join(KINDS)})")
    if len(set(listed)) != len(listed):
        raise policy_error(paths, "a kind is listed twice")
    return frozenset(listed)


def save(paths: StatePaths, policy: Policy, before: Policy | None, created: list[str]) -> Policy:
    if before is not None and policy == before and paths.policy.exists():
        return before
    existed = paths.policy.exists()
    written = write_policy(paths.policy, policy)
    if not existed:
        created.append(paths.relative(paths.policy))
    return written
