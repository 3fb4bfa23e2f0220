"""Memory and CPU of processes, and of the machine, read from Linux /proc (zeros where unreadable)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def rss_kb(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB from /proc; (0, 0) where it is not readable."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process from /proc (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> list[int]:
    """The machine's CPU time counters (/proc/stat: user nice system idle iowait irq softirq steal)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return [0] * 8


def busy(before: list[int], after: list[int]) -> tuple[float, float]:
    """(% busy, % iowait) of all cores between two `machine()` readings."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    return 100.0 * (total - d[3] - d[4]) / total, 100.0 * d[4] / total


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += tree(int(c))
    return out
