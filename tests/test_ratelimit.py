"""The per-sender token buckets: the in-process `RateLimiter` and the cross-process `SharedRateLimiter`.

Unit tests drive both with a fake clock; the differential test holds them to the same answers. The
multi-process tests run real worker processes (spawn) on one table file: the total they are granted
is one sender's limit, not one per process, and a worker killed (even holding the lock) wedges none."""

from __future__ import annotations

import fcntl
import hashlib
import math
import multiprocessing as mp
import os
import random
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker.errors import RateTableError
from broker.gateway.limiter import Limiter, RateLimiter, SharedRateLimiter, _refill_take, table_size

SPAWN = mp.get_context("spawn")
HANG_GUARD_S = 30.0  # only so that a broken limiter fails instead of hanging; never a speed limit


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return tmp_path / "rate.table"


def both(path: Path, clock: FakeClock) -> list[Limiter]:
    return [RateLimiter(now=clock), SharedRateLimiter(path, slots=64, now=clock)]


# -- the bucket arithmetic, on both classes --------------------------------------------------------


def test_both_satisfy_the_protocol(table: Path, clock: FakeClock) -> None:
    for lim in both(table, clock):
        assert isinstance(lim, Limiter)


def test_burst_then_refill(table: Path, clock: FakeClock) -> None:
    for lim in both(table, clock):
        assert [lim.take("alice", 1, 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert lim.take("alice", 1, 2.0, 3) == pytest.approx(0.5)  # 1 token at 2/s
        assert lim.take("bob", 3, 2.0, 3) == 0.0  # a bucket per sender
        clock.advance(0.25)
        assert lim.take("alice", 1, 2.0, 3) == pytest.approx(0.25)  # half a token there
        clock.advance(0.25)
        assert lim.take("alice", 1, 2.0, 3) == 0.0
        clock.advance(100.0)  # refills to burst, not beyond
        assert [lim.take("alice", 1, 2.0, 3) for _ in range(4)][-1] == pytest.approx(0.5)


def test_n_above_burst_is_never(table: Path, clock: FakeClock) -> None:
    for lim in both(table, clock):
        assert lim.take("alice", 4, 10.0, 3) == math.inf
        assert lim.take("alice", 3, 10.0, 3) == 0.0  # the refused take took nothing


def test_rate_zero_is_burst_only(table: Path, clock: FakeClock) -> None:
    for lim in both(table, clock):
        assert lim.take("alice", 2, 0.0, 2) == 0.0
        clock.advance(1e6)
        assert lim.take("alice", 1, 0.0, 2) == math.inf


def test_lowered_burst_clamps_stored_tokens(table: Path, clock: FakeClock) -> None:
    for lim in both(table, clock):
        assert lim.take("alice", 1, 1.0, 100) == 0.0  # 99 left
        assert lim.take("alice", 1, 1.0, 2) == 0.0  # a reload lowered burst to 2: clamped, 1 left
        assert lim.take("alice", 1, 1.0, 2) == 0.0
        assert lim.take("alice", 1, 1.0, 2) == pytest.approx(1.0)


def test_a_clock_going_back_refills_nothing() -> None:
    # a stamp written before a reboot is later than now: no negative refill, the stamp is reset
    assert _refill_take(1.0, 500.0, 10.0, 1, 5.0, 4) == (0.0, 10.0, 0.0)


@pytest.mark.parametrize("seed", range(6))
def test_differential_same_answers(table: Path, seed: int) -> None:
    rnd = random.Random(seed)
    clock = FakeClock()
    mem = RateLimiter(now=clock)
    # 8 slots for 5 senders: long probe chains and wrap-around get exercised too
    with SharedRateLimiter(table, slots=8, now=clock) as shared:
        who = [f"sender-{i}" for i in range(5)]
        for step in range(3000):
            clock.advance(rnd.choice([0.0, 0.0, 0.001, 0.01, 0.1, 0.5, 3.0]))
            args = (
                rnd.choice(who),
                rnd.choice([1, 1, 1, 2, 5, 30]),
                rnd.choice([0.0, 1.0, 7.5, 50.0]),
                rnd.choice([1, 5, 20]),
            )
            a, b = mem.take(*args), shared.take(*args)
            assert a == b, f"step {step}: {args} gave {a} in process, {b} shared"


def test_injected_clock_is_used_not_the_real_one(table: Path) -> None:
    clock = FakeClock()
    with SharedRateLimiter(table, now=clock) as lim:
        assert lim.take("alice", 5, 1.0, 5) == 0.0
        time.sleep(0.05)
        assert lim.take("alice", 1, 1.0, 5) == 1.0  # exactly: no real time was counted


# -- the shared table file --------------------------------------------------------------------------


def test_file_is_made_0600_and_sized(table: Path) -> None:
    with SharedRateLimiter(table, slots=100):
        pass
    assert table.stat().st_mode & 0o777 == 0o600
    assert table.stat().st_size == table_size(100) == 32 + 100 * 32


def test_reopening_keeps_state(table: Path, clock: FakeClock) -> None:
    with SharedRateLimiter(table, slots=16, now=clock) as lim:
        assert [lim.take("alice", 1, 1.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    with SharedRateLimiter(table, slots=16, now=clock) as lim:
        assert lim.take("alice", 1, 1.0, 3) == 1.0  # still empty
        assert lim.take("bob", 3, 1.0, 3) == 0.0
    # two limiters open at once on one file see the same buckets
    with SharedRateLimiter(table, slots=16, now=clock) as a, SharedRateLimiter(table, 16, now=clock) as b:
        assert a.take("carol", 2, 1.0, 3) == 0.0
        assert b.take("carol", 2, 1.0, 3) == 1.0


def test_empty_file_is_initialised(table: Path, clock: FakeClock) -> None:
    table.touch(mode=0o600)
    with SharedRateLimiter(table, slots=16, now=clock) as lim:
        assert lim.take("alice", 1, 1.0, 1) == 0.0
    assert table.stat().st_size == table_size(16)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def test_wrong_files_are_refused(table: Path) -> None:
    with SharedRateLimiter(table, slots=16):
        pass
    good = table.read_bytes()

    with pytest.raises(RateTableError, match="made with 16 slots, opened with 32"):
        SharedRateLimiter(table, slots=32)

    _write(table, b"x" * len(good))
    with pytest.raises(RateTableError, match="wrong magic"):
        SharedRateLimiter(table, slots=16)

    _write(table, good[:8] + (2).to_bytes(4, "little") + good[12:])
    with pytest.raises(RateTableError, match="layout version 2"):
        SharedRateLimiter(table, slots=16)

    _write(table, good + b"\0" * 32)
    with pytest.raises(RateTableError, match="bytes, expected"):
        SharedRateLimiter(table, slots=16)

    _write(table, good[:20])
    with pytest.raises(RateTableError, match="shorter than its header"):
        SharedRateLimiter(table, slots=16)

    _write(table, bytes(len(good) + 32))  # zeros but the wrong size: not a half-made table of ours
    with pytest.raises(RateTableError, match="wrong magic"):
        SharedRateLimiter(table, slots=16)

    _write(table, good)  # and the refusals left the file usable once it is right again
    SharedRateLimiter(table, slots=16).close()


def test_refused_when_others_may_write(table: Path) -> None:
    with SharedRateLimiter(table, slots=16):
        pass
    table.chmod(0o620)
    with pytest.raises(RateTableError, match="group or others"):
        SharedRateLimiter(table, slots=16)


def test_refused_through_a_symlink_or_a_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    with SharedRateLimiter(real, slots=4):
        pass
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(RateTableError):
        SharedRateLimiter(tmp_path / "link", slots=4)
    with pytest.raises(RateTableError):
        SharedRateLimiter(tmp_path, slots=4)


def test_bad_slot_counts(table: Path) -> None:
    for slots in (0, -1, (1 << 20) + 1):
        with pytest.raises(ValueError, match="slots"):
            SharedRateLimiter(table, slots=slots)
    assert not table.exists()


def test_full_table_fails_closed_and_logs_once(table: Path, clock: FakeClock) -> None:
    with SharedRateLimiter(table, slots=4, now=clock) as lim, capture_logs() as logs:
        assert [lim.take(f"s{i}", 1, 1.0, 5) for i in range(4)] == [0.0] * 4
        assert lim.take("latecomer", 1, 1.0, 5) == math.inf
        assert lim.take("latecomer", 1, 1.0, 5) == math.inf
        assert lim.take("another", 1, 1.0, 5) == math.inf
        # senders that have a slot carry on, with their own buckets intact
        assert lim.take("s0", 4, 1.0, 5) == 0.0
        assert lim.take("s0", 1, 1.0, 5) == 1.0
    full = [e for e in logs if e["event"] == "ratelimit.table_full"]
    assert len(full) == 1
    assert full[0]["log_level"] == "error" and full[0]["slots"] == 4


def test_layout_and_linear_probing_wrap_around(table: Path, clock: FakeClock) -> None:
    """The documented layout: slot keys are BLAKE2b-128 of the id keyed with the header's hash key;
    a key's home slot is its first 8 bytes (little-endian) mod slots; collisions probe on, wrapping."""
    slots = 8
    with SharedRateLimiter(table, slots=slots, now=clock) as lim:
        hash_key = table.read_bytes()[16:32]

        def key(who: str) -> bytes:
            return hashlib.blake2b(who.encode(), digest_size=16, key=hash_key).digest()

        last = [w for w in (f"id-{i}" for i in range(2000)) if int.from_bytes(key(w)[:8], "little") % 8 == 7]
        ids = last[:3]  # all at home in the last slot: they must take slots 7, 0 and 1
        assert [lim.take(w, 1, 1.0, 2) for w in ids] == [0.0, 0.0, 0.0]
        assert [lim.take(w, 1, 1.0, 2) for w in ids] == [0.0, 0.0, 0.0]
        assert [lim.take(w, 1, 1.0, 2) for w in ids] == [1.0, 1.0, 1.0]  # each its own bucket
    data = table.read_bytes()
    stored = {i: struct.unpack_from("<16sdd", data, 32 + 32 * i) for i in range(slots)}
    assert [stored[i][0] for i in (7, 0, 1)] == [key(w) for w in ids]
    assert [stored[i][1:] for i in (7, 0, 1)] == [(0.0, clock.t)] * 3
    assert all(stored[i] == (bytes(16), 0.0, 0.0) for i in range(2, 7))


def test_close_is_idempotent_and_final(table: Path) -> None:
    lim = SharedRateLimiter(table, slots=4)
    with lim:
        assert lim.take("alice", 1, 1.0, 1) == 0.0
    lim.close()
    with pytest.raises(ValueError, match="closed"):
        lim.take("alice", 1, 1.0, 1)


def test_threads_share_one_limit(table: Path, clock: FakeClock) -> None:
    # the clock stands still: exactly `burst` takes can be granted, however the threads interleave
    # (a tiny switch interval makes them interleave inside takes, were nothing to stop them)
    burst, granted = 20_000, []
    interval = sys.getswitchinterval()
    with SharedRateLimiter(table, slots=16, now=clock) as lim:

        def hammer() -> None:
            granted.append(sum(lim.take("alice", 1, 10.0, burst) == 0.0 for _ in range(burst // 2)))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        sys.setswitchinterval(1e-6)
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
    assert sum(granted) == burst


def test_fork_child_gets_its_own_lock(table: Path, clock: FakeClock) -> None:
    """A flock belongs to an open file, which a fork shares: the child must reopen the table, or the
    parent's lock would not exclude it (and the limit would silently be per process again)."""
    with SharedRateLimiter(table, slots=4, now=clock) as lim:
        assert lim.take("alice", 1, 1.0, 3) == 0.0
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: exit 0 if excluded by the parent's lock
            code = 3
            try:
                os.close(up_r)
                assert lim.take("alice", 1, 1.0, 3) == 0.0  # reopens the table first
                os.write(up_w, b"r")
                os.read(down_r, 1)  # now the parent holds the lock, through its own open file
                assert lim._fd is not None
                try:
                    fcntl.flock(lim._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    code = 1  # got it too: one shared open file, no exclusion
                except BlockingIOError:
                    code = 0
            finally:
                os._exit(code)
        os.close(up_w)  # so that a child that dies early gives EOF, not a hang
        try:
            assert os.read(up_r, 1) == b"r"
            assert lim._fd is not None
            fcntl.flock(lim._fd, fcntl.LOCK_EX)
            os.write(down_w, b"g")
            _, status = os.waitpid(pid, 0)
            fcntl.flock(lim._fd, fcntl.LOCK_UN)
        finally:
            for fd in (up_r, down_r, down_w):
                os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0
        # the child's take went into the same table: 1 (parent) + 1 (child) + 1 of a burst of 3
        assert lim.take("alice", 1, 1.0, 3) == 0.0
        assert lim.take("alice", 1, 1.0, 3) == 1.0


# -- real processes -----------------------------------------------------------------------------------


def _take_n(path: str, rate: float, burst: int, tries: int, go: Any, out: Any) -> None:
    with SharedRateLimiter(Path(path), slots=64) as lim:
        go.wait()
        out.put(sum(lim.take("alice", 1, rate, burst) == 0.0 for _ in range(tries)))


def _hammer_for(path: str, rate: float, burst: int, seconds: float, go: Any, out: Any) -> None:
    with SharedRateLimiter(Path(path), slots=64) as lim:
        go.wait()
        granted = tries = 0
        first = time.monotonic()
        end = first + seconds
        while True:
            before = time.monotonic()
            if before >= end:
                break
            tries += 1
            granted += lim.take("alice", 1, rate, burst) == 0.0
        out.put((granted, tries, first, time.monotonic()))


def _hammer_until(path: str, rate: float, burst: int, ready: Any, go: Any, stop: Any, count: Any) -> None:
    with SharedRateLimiter(Path(path), slots=64) as lim:  # opening takes the lock briefly
        ready.set()
        go.wait()
        while not stop.is_set():
            if lim.take("alice", 1, rate, burst) == 0.0:
                count.value += 1


def _hold_lock(path: str, locked: Any) -> None:
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    locked.set()
    time.sleep(600)


def _start(target: Any, *args: Any) -> Any:
    p = SPAWN.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def _join_all(procs: list[Any]) -> None:
    for p in procs:
        p.join(HANG_GUARD_S)
        if p.is_alive():
            p.kill()
            p.join()


def test_processes_share_one_exact_limit(table: Path) -> None:
    """No clock involved (rate 0): 4 processes racing 4 x 20000 takes for 20000 tokens get exactly
    20000 between them. Without the cross-process lock, lost updates would grant more."""
    burst = 20_000
    SharedRateLimiter(table, slots=64).close()
    go, out = SPAWN.Event(), SPAWN.Queue()
    procs = [_start(_take_n, str(table), 0.0, burst, burst, go, out) for _ in range(4)]
    go.set()
    counts = [out.get(timeout=HANG_GUARD_S) for _ in procs]
    _join_all(procs)
    assert sum(counts) == burst
    assert all(p.exitcode == 0 for p in procs)


def test_processes_share_one_rate(table: Path) -> None:
    rate, burst, seconds, workers = 50.0, 20, 1.0, 4
    SharedRateLimiter(table, slots=64).close()
    go, out = SPAWN.Event(), SPAWN.Queue()
    procs = [_start(_hammer_for, str(table), rate, burst, seconds, go, out) for _ in range(workers)]
    go.set()
    results = [out.get(timeout=HANG_GUARD_S) for _ in procs]
    _join_all(procs)
    assert all(p.exitcode == 0 for p in procs)

    granted = sum(r[0] for r in results)
    # every take's clock reading lies between the earliest start and the latest end (one host, one
    # CLOCK_MONOTONIC): one bucket can grant at most burst + rate x that span
    span = max(r[3] for r in results) - min(r[2] for r in results)
    ceiling = burst + rate * span
    # one limit, not one per process: per-process buckets would each grant burst + rate x their own
    # span, about 4x this ceiling, whatever the machine's load made the span
    assert granted <= ceiling + 1e-6, f"{granted} granted, one limit allows {ceiling:.1f}"
    # and the workers, which never stopped asking, did get the limit: the bucket kept being drained
    assert granted >= burst + 0.5 * rate * seconds, f"only {granted} granted in {span:.2f} s"
    assert all(r[1] > 0 for r in results)


def test_killed_workers_wedge_nobody(table: Path) -> None:
    """A process that dies holding the table's lock (SIGKILL: no clean-up runs) releases it, and a
    worker killed mid-run stops nobody else."""
    rate, burst = 200.0, 5
    SharedRateLimiter(table, slots=64).close()
    go, stop, locked = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    readies = [SPAWN.Event() for _ in range(3)]
    counts: list[Any] = [SPAWN.Value("q", 0, lock=False) for _ in range(3)]
    workers = [
        _start(_hammer_until, str(table), rate, burst, r, go, stop, c)
        for r, c in zip(readies, counts, strict=True)
    ]
    holder = None
    try:
        assert all(r.wait(HANG_GUARD_S) for r in readies)
        holder = _start(_hold_lock, str(table), locked)
        assert locked.wait(HANG_GUARD_S)
        go.set()
        time.sleep(0.3)
        assert [c.value for c in counts] == [0, 0, 0]  # nobody gets past the held lock

        os.kill(holder.pid, signal.SIGKILL)  # dies holding it
        holder.join(HANG_GUARD_S)
        assert holder.exitcode == -signal.SIGKILL
        _wait_for(lambda: sum(c.value for c in counts) > 0)

        os.kill(workers[0].pid, signal.SIGKILL)  # killed mid-run, perhaps inside a take
        workers[0].join(HANG_GUARD_S)
        assert workers[0].exitcode == -signal.SIGKILL
        was = [c.value for c in counts[1:]]
        _wait_for(lambda: all(c.value > w for c, w in zip(counts[1:], was, strict=True)))
    finally:
        if holder is not None and holder.is_alive():
            holder.kill()
        go.set()
        stop.set()
        _join_all(workers)
    assert [w.exitcode for w in workers[1:]] == [0, 0]


def _wait_for(cond: Any) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not cond():
        assert time.monotonic() < deadline, "gave up waiting (a wedged lock?)"
        time.sleep(0.01)
