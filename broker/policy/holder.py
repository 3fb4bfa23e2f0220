"""The policy in force, watched: a file change that loads cleanly is swapped in whole, at once; a bad
edit is logged with its line and the policy in force is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from broker.errors import PolicyError
from broker.policy.loader import parse_bytes
from broker.policy.model import Policy

__all__ = ["PolicyHolder"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _FileState:
    mtime_ns: int
    size: int
    inode: int
    digest: bytes


class PolicyHolder:
    """The policy in force (`current`), swapped whole when the file changes and the new one is sound.

    `current` is one attribute assigned at once: readers take `holder.current` once per decision and
    use that object throughout. `on_change` callbacks run, in order, after each successful swap; an
    exception in one is logged and does not undo the swap.
    """

    def __init__(self, path: Path, policy: Policy | None = None) -> None:
        self.path = path
        self.on_change: list[Callable[[Policy], None]] = []
        self._seen: _FileState | None = None
        self._polls = 0
        self._good = True  # whether the content last read was accepted
        if policy is None:
            data, state = self._read()
            policy = parse_bytes(data, str(path))
            self._seen = state
        self.current: Policy = policy

    def _read(self) -> tuple[bytes, _FileState]:
        try:
            with self.path.open("rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError as exc:
            raise PolicyError(f"cannot read: {exc.strerror or exc}", path=str(self.path)) from None
        return data, _FileState(st.st_mtime_ns, st.st_size, st.st_ino, hashlib.sha256(data).digest())

    def _stat_changed(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return self._seen is not None
        seen = self._seen
        if seen is None:
            return True
        return (st.st_mtime_ns, st.st_size, st.st_ino) != (seen.mtime_ns, seen.size, seen.inode)

    def reload_now(self) -> bool:
        """Read the file now. True when the policy in force is the file's content (swapped in, or
        unchanged); False when the file is unreadable or refused (the old policy stays in force)."""
        try:
            data, state = self._read()
        except PolicyError as exc:
            if self._seen is not None:  # log a vanished file once, not on every poll
                _log.warning("policy.reload_failed", path=str(self.path), error=exc.reason, line=exc.line)
            self._seen = None
            return False
        previous = self._seen
        self._seen = state
        if previous is not None and previous.digest == state.digest:
            return self._good
        try:
            policy = parse_bytes(data, str(self.path))
        except PolicyError as exc:
            self._good = False
            _log.warning("policy.reload_failed", path=str(self.path), error=exc.reason, line=exc.line)
            return False
        self._good = True
        if policy == self.current:
            return True
        self.current = policy
        _log.info(
            "policy.reloaded",
            path=str(self.path),
            organisations=len(policy.organisations),
            senders=len(policy.senders),
            operators=len(policy.operators),
        )
        for callback in list(self.on_change):
            try:
                callback(policy)
            except Exception as exc:
                _log.error("policy.on_change_failed", callback=repr(callback), error=repr(exc))
        return True

    def poll(self) -> bool:
        """One watcher step: reload if the file's (mtime, size, inode) changed, and re-hash it every
        tenth poll regardless (for file systems with coarse timestamps). True if it reloaded."""
        self._polls += 1
        if self._stat_changed() or self._polls % 10 == 0:
            before = self.current
            self.reload_now()
            return self.current is not before
        return False

    async def watch(self, interval: float = 0.5) -> None:
        """Poll the file every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.poll()
