"""One `/metrics` for a broker spread over processes (`broker up --gateway-workers N`).

With the gateway in N processes a scrape reaches whichever process the kernel picks, and the core
process (audit writer, dispatcher, adapters) serves no HTTP at all. So every process writes its
rendered metrics to `<state>/run/metrics/<process>.prom` once a second (a temporary file, then
`os.replace`), and `/metrics` of any gateway process answers with all of them merged: each family's
HELP and TYPE once, every sample labelled `process="core"`, `process="gateway-0"`, … Its own
samples are live; the others' are at most about a second old; a file not rewritten for
`STALE_AFTER_S` (a process that died and was not restarted) is left out. Sum over `process` for
the broker's totals. A process's counters start again from zero when it restarts, which Prometheus
treats as a counter reset.

Why not prometheus_client's multiprocess mode (measured for issue 11; see `registry.py` for the
figures): it aggregates the processes' mmap'ed files into one exposition, summing counters, so the
`process` label is gone; a callback gauge (`coord_audit_queue_depth`, `coord_audit_tree_size`) is
never written to a file and scrapes as 0; a dead process's values stay until someone wipes the
folder, where here a file not rewritten for `STALE_AFTER_S` is left out; and the mode is taken from
`PROMETHEUS_MULTIPROC_DIR` when the library is imported, a process-wide switch that would hold
for every `System` in the process (tests run the core in-process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path

import structlog

from broker.aio import AsyncResource
from broker.metrics.registry import Registry

log = structlog.get_logger(__name__)

PUBLISH_EVERY_S = 1.0
STALE_AFTER_S = 10.0
LABEL = "process"


def with_label(sample: str, name: str, value: str) -> str:
    """`metric{a="b"} 1` -> `metric{name="value",a="b"} 1` (value: [a-z0-9-] only, no escaping)."""
    head, sep, rest = sample.partition("{")
    if sep:
        return f'{head}{{{name}="{value}",{rest}'
    metric, _, number = sample.partition(" ")
    return f'{metric}{{{name}="{value}"}} {number}'


def merge(texts: Mapping[str, str]) -> str:
    """Prometheus text of several processes as one exposition: families in order of first sight,
    HELP/TYPE once each, every sample labelled with its process."""
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for process, text in texts.items():
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    head = heads.setdefault(family, [])
                    if not any(h.startswith(f"# {parts[1]} ") for h in head):
                        head.append(line)
                    samples.setdefault(family, [])
                continue
            if line and family:
                samples[family].append(with_label(line, LABEL, process))
    out: list[str] = []
    for family, head in heads.items():
        out += head
        out += samples[family]
    return "\n".join(out) + "\n"


class MetricsShare(AsyncResource):
    """`async with MetricsShare(registry, folder, process)`: publishes this process's metrics, and
    `render_all()` merges every fresh process's. The file is removed on exit."""

    def __init__(self, registry: Registry, folder: Path, process: str) -> None:
        self.registry = registry
        self.folder = folder
        self.process = process

    @property
    def path(self) -> Path:
        return self.folder / f"{self.process}.prom"

    async def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.publish()
        self._spawn(self._run(), f"metrics-share-{self.process}")

    async def _close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def publish(self) -> None:
        tmp = self.folder / f".{self.process}.prom.tmp"
        try:
            tmp.write_text(self.registry.render(), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("metrics.publish_failed", process=self.process, error=str(exc))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            self.publish()

    def render_all(self) -> str:
        texts = {self.process: self.registry.render()}  # this process: live
        now = time.time()
        for f in sorted(self.folder.glob("*.prom")):
            other = f.name[: -len(".prom")]
            if other == self.process:
                continue
            try:
                if now - f.stat().st_mtime > STALE_AFTER_S:
                    continue
                texts[other] = f.read_text(encoding="utf-8")
            except OSError:
                continue  # replaced or removed while reading: left out of this scrape
        return merge(texts)
