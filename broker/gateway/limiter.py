"""Per-sender token buckets (ICD §6 `rate-limited`). NATS has no publisher limit: it lives here.

What this module owns: the refill arithmetic of a sender's bucket (`_refill_take`, the one copy) and
two places to keep the buckets, both behind the `Limiter` protocol the gateway calls:

* `RateLimiter` keeps them in a dict. One process, one limit: right for a single gateway process.
* `SharedRateLimiter` keeps them in a fixed-size table in a file mapped with `mmap`, shared by every
  gateway worker process on the host. The ICD requires ONE limit per sender, and gateway workers that
  share the HTTPS port with SO_REUSEPORT would otherwise each grant the full rate.

Both answer `take(who, n, rate, burst)` identically: 0.0 if granted, else the seconds to wait before
retrying (`math.inf` if `n > burst`, or if `rate` is 0 and the bucket is short). A policy reload may
change `rate` and `burst` at any time; the stored tokens are clamped to the current `burst` at each take.

Assumptions and choices of the shared table:

* One host. Stamps are `time.monotonic()`, which on Linux is CLOCK_MONOTONIC: one system-wide clock
  (seconds since boot), so stamps written by one process are comparable in another on the same host.
  SO_REUSEPORT workers are by definition on one host. Gateways on several hosts would need the buckets
  in shared state elsewhere, e.g. a NATS KV bucket updated with compare-and-set; this table is not that.
  A stamp later than "now" (a table kept across a reboot) refills nothing and is reset to now.
* Mutual exclusion between processes is `fcntl.flock(LOCK_EX)` on the file around each read-modify-
  write. The kernel drops the lock when the holder dies, so a crashed or SIGKILLed worker cannot wedge
  the others (a robust pthread mutex in shared memory would need ctypes; a semaphore would leak). The
  clock is read under the lock, so the stamps are written in lock order. Threads of one process share
  the file's lock, so a `threading.Lock` guards each take too. A flock belongs to an open file, which
  a fork shares: a limiter opened before `os.fork()` therefore reopens its file in the child (on its
  next take) rather than silently sharing the parent's lock.
* Cost: a keyed BLAKE2b of the id, two flock system calls and two struct copies: a few µs per request.
* Layout (version 1, little-endian): a 32-byte header (magic, version, slots, a random 16-byte hash key
  made with the file), then `slots` slots of 32 bytes: key (16 bytes, BLAKE2b-128 of the UTF-8 sender
  id keyed with the file's hash key, so nobody can choose ids that collide), tokens (float64), stamp
  (float64). Open addressing with linear probing; an all-zero key is a free slot; slots are never
  freed (the senders are the policy's, a few hundred at most; the default 4096 is ample).
* A full table fails closed: a sender with no slot is refused (`math.inf`, which the gateway answers
  with a 429 and a long Retry-After), and the limiter logs `ratelimit.table_full` once. Senders that
  already have a slot are unaffected. Remedy: restart the gateway with a new file or more `slots`.
* The file is created 0600 (refused if group or others may write it: they could reset any limit). One
  that exists is reused only if its size and header (magic, version, slots) are right; anything else is
  refused with `RateTableError` rather than misread. Its state is not precious: deleting the file while
  no gateway runs resets every bucket to full. Do not delete it under running workers (each would keep
  the table it has open while new ones made another, i.e. two limits).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import secrets
import stat
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import structlog

from broker.errors import RateTableError

log = structlog.get_logger(__name__)

Clock = Callable[[], float]


@runtime_checkable
class Limiter(Protocol):
    """What the gateway needs of a rate limiter."""

    def take(self, who: str, n: int, rate: float, burst: int) -> float:
        """Take `n` tokens for `who`; 0.0 if granted, else the seconds to wait before retrying."""
        ...



def _refill_take(
    tokens: float, stamp: float, now: float, n: int, rate: float, burst: int
) -> tuple[float, float, float]:
    """One take from a bucket: (tokens, stamp, wait) after refilling it to `now` and taking `n`.

    The bucket holds at most `burst` (clamped here, so a lowered burst applies at once) and refills at
    `rate` per second. `wait` is 0.0 if granted, else the seconds until `n` tokens are there (`math.inf`
    if never: `n > burst`, or `rate` <= 0)."""
    cap = float(burst)
    tokens = min(cap, tokens + max(0.0, now - stamp) * rate)
    if n > burst:
        return tokens, now, math.inf
    if tokens >= n:
        return tokens - n, now, 0.0
    return tokens, now, (n - tokens) / rate if rate > 0 else math.inf


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets in this process only: one limit per process (see `SharedRateLimiter`)."""

    def __init__(self, now: Clock = time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._now = now

    def take(self, who: str, n: int, rate: float, burst: int) -> float:
        """Take `n` tokens for `who`; 0.0 if granted, else the seconds to wait before retrying."""
        now = self._now()
        b = self._buckets.get(who)
        if b is None:
            b = self._buckets[who] = _Bucket(float(burst), now)
        b.tokens, b.stamp, wait = _refill_take(b.tokens, b.stamp, now, n, rate, burst)
        return wait


# -- the shared table -----------------------------------------------------------------------------

_MAGIC = b"EUNRLIM\x00"
_VERSION = 1
_HEADER = struct.Struct("<8sII16s")  # magic, version, slots, hash key
_SLOT = struct.Struct("<16sdd")  # key, tokens, stamp
_KEY_LEN = 16
_EMPTY = bytes(_KEY_LEN)
MAX_SLOTS = 1 << 20


def table_size(slots: int) -> int:
    """The size in bytes of a shared table file of `slots` slots."""
    return _HEADER.size + slots * _SLOT.size


# Limiters open in this process; a fork's child reopens their files (module docstring).
_open_limiters: weakref.WeakSet[SharedRateLimiter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lim in list(_open_limiters):
        lim._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SharedRateLimiter:
    """Token buckets in a file mapped by every process that opens it: one limit per host.

    `path` is created (0600, sized for `slots`) if missing, else reused if it is a table of this
    version and `slots`; otherwise `RateTableError`. `now` is the clock (injectable for tests; across
    processes it must be the system-wide `time.monotonic`). Safe to use from several threads."""

    def __init__(self, path: Path, slots: int = 4096, *, now: Clock = time.monotonic) -> None:
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be between 1 and {MAX_SLOTS}, not {slots}")
        self.path = Path(path)
        self.slots = slots
        self._now = now
        self._tlock = threading.Lock()
        self._full_logged = False
        self._stale = False
        self._fd: int | None = None
        self._mm: mmap.mmap | None = None
        self._fd, self._mm, self._hash_key = _open_table(self.path, slots)
        _open_limiters.add(self)

    # -- the API ------------------------------------------------------------------------------

    def take(self, who: str, n: int, rate: float, burst: int) -> float:
        """Take `n` tokens for `who`; 0.0 if granted, else the seconds to wait before retrying.

        A sender with no slot left for it in a full table is refused (`math.inf`): fail closed."""
        with self._tlock:
            if self._stale:
                self._reopen()
            fd, mm = self._fd, self._mm
            if fd is None or mm is None:
                raise ValueError(f"the rate-limit table {self.path} is closed")
            key = self._key(who)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now = self._now()
                off = self._find(mm, key)
                if off is not None:
                    k, tokens, stamp = _SLOT.unpack_from(mm, off)
                    if k == _EMPTY:
                        tokens, stamp = float(burst), now
                    tokens, stamp, wait = _refill_take(tokens, stamp, now, n, rate, burst)
                    _SLOT.pack_into(mm, off, key, tokens, stamp)
                    return wait
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if not self._full_logged:
                self._full_logged = True
                log.error(
                    "ratelimit.table_full",
                    path=str(self.path),
                    slots=self.slots,
                    detail="senders without a slot are refused until the table is recreated larger",
                )
            return math.inf

    def close(self) -> None:
        """Unmap and close the file (idempotent). Other processes' limiters are unaffected."""
        with self._tlock:
            self._release()
            _open_limiters.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- inside ---------------------------------------------------------------------------------

    def _key(self, who: str) -> bytes:
        k = hashlib.blake2b(
            who.encode("utf-8", "surrogatepass"), digest_size=_KEY_LEN, key=self._hash_key
        ).digest()
        return k if k != _EMPTY else b"\x01" + k[1:]  # all-zero marks a free slot

    def _find(self, mm: mmap.mmap, key: bytes) -> int | None:
        """The offset of `key`'s slot, or of the free slot it would take; None if the table is full."""
        slots = self.slots
        first = int.from_bytes(key[:8], "little") % slots
        for i in range(slots):
            off = _HEADER.size + ((first + i) % slots) * _SLOT.size
            k = mm[off : off + _KEY_LEN]
            if k == key or k == _EMPTY:
                return off
        return None

    def _release(self) -> None:
        mm, fd = self._mm, self._fd
        self._mm = self._fd = None
        if mm is not None:
            mm.close()
        if fd is not None:
            os.close(fd)

    def _forked(self) -> None:
        # In a fork's child, single-threaded: the parent's threads (and any lock they held) are gone.
        self._tlock = threading.Lock()
        self._stale = self._fd is not None

    def _reopen(self) -> None:
        self._release()
        self._stale = False
        self._fd, self._mm, self._hash_key = _open_table(self.path, self.slots)


def _open_table(path: Path, slots: int) -> tuple[int, mmap.mmap, bytes]:
    """Open (creating if need be) and check the table at `path`; its fd, mapping and hash key."""
    size = table_size(slots)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise RateTableError(f"cannot open the rate-limit table {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RateTableError(f"{path} is not a regular file, so not a rate-limit table")
        if st.st_mode & 0o022:
            raise RateTableError(
                f"{path} may be written by group or others (mode {stat.S_IMODE(st.st_mode):o}), who could "
                "reset any sender's rate limit; make it 0600"
            )
        fcntl.flock(fd, fcntl.LOCK_EX)  # one process creates it; the others wait and then check it
        try:
            hash_key = _check_or_init(fd, path, slots, size)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd, mm, hash_key


def _check_or_init(fd: int, path: Path, slots: int, size: int) -> bytes:
    have = os.fstat(fd).st_size
    head = os.pread(fd, _HEADER.size, 0) if have >= _HEADER.size else b""
    if have == 0 or (have == size and head == bytes(_HEADER.size)):
        # new, or sized by a creator that died before writing the header (written last, below)
        hash_key = secrets.token_bytes(_KEY_LEN)
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)  # zero-filled: every slot free
        os.pwrite(fd, _HEADER.pack(_MAGIC, _VERSION, slots, hash_key), 0)
        return hash_key
    what = f"{path} is not a usable rate-limit table"
    if len(head) < _HEADER.size:
        raise RateTableError(f"{what}: {have} bytes, shorter than its header")
    magic, version, file_slots, hash_key = _HEADER.unpack(head)
    if magic != _MAGIC:
        raise RateTableError(f"{what}: wrong magic {magic!r} (another file?)")
    if version != _VERSION:
        raise RateTableError(f"{what}: layout version {version}, this broker reads {_VERSION}")
    if file_slots != slots:
        raise RateTableError(f"{what}: made with {file_slots} slots, opened with {slots}")
    if have != size:
        raise RateTableError(f"{what}: {have} bytes, expected {size} for {slots} slots")
    return bytes(hash_key)
