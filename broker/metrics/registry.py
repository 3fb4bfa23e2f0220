"""A small Prometheus text-format registry: counters with labels, gauges read when scraped, and
one latency histogram.

Kept in-house (about 80 lines) so the hot path is a dict increment; rendering happens only when
`/metrics` is scraped. prometheus_client was measured in its place (issue 11;
`python -m broker.bench.metrics_cost`, docs/performance.md "Metrics registry"): the gateway's
three calls per request cost 0.7 µs here, 3.6 µs with prometheus_client, about 7 µs in its
multiprocess mode, against about 535 µs of gateway CPU per request. Speed did not decide; what
it would change did. Multiprocess mode sums counters over processes (no `process` label), reads
callback gauges as 0 and is chosen by an environment variable at import (see `share.py`). In one
process, its exposition is not this one: `5.0` for `5`, `le="1.0"` for `le="1"` (another series to
a Prometheus before 3.0), extra `*_created` families, so the merge and the scrapes would change
while `share.py` stayed. Not taken; no dependency.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field


def _fmt_labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + inner + "}"


@dataclass
class Counter:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: defaultdict[tuple[str, ...], float] = field(default_factory=lambda: defaultdict(float))

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        self.values[label_values] += by

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        out += [f"{self.name}{_fmt_labels(self.labels, k)} {v:g}" for k, v in sorted(self.values.items())]
        return out


@dataclass
class Gauge:
    name: str
    help: str
    read: Callable[[], float]

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {self.read():g}",
        ]


@dataclass
class LabelledGauge:
    """A gauge per label values, set by its owner (e.g. each native system's reachability)."""

    name: str
    help: str
    labels: tuple[str, ...]
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def set(self, *label_values: str, value: float) -> None:
        self.values[label_values] = value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        out += [f"{self.name}{_fmt_labels(self.labels, k)} {v:g}" for k, v in sorted(self.values.items())]
        return out


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, seconds: float) -> None:
        self.n += 1
        self.total += seconds
        for i, b in enumerate(self.buckets):
            if seconds <= b:
                self.counts[i] += 1
                break

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for b, c in zip(self.buckets, self.counts, strict=True):
            acc += c
            out.append(f'{self.name}_bucket{{le="{b:g}"}} {acc}')
        out += [
            f'{self.name}_bucket{{le="+Inf"}} {self.n}',
            f"{self.name}_sum {self.total:g}",
            f"{self.name}_count {self.n}",
        ]
        return out


class Registry:
    def __init__(self) -> None:
        self._items: list[Counter | Gauge | LabelledGauge | Histogram] = []

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        c = Counter(name, help, labels)
        self._items.append(c)
        return c

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> Gauge:
        g = Gauge(name, help, read)
        self._items.append(g)
        return g

    def labelled_gauge(self, name: str, help: str, labels: tuple[str, ...]) -> LabelledGauge:
        """The gauge `name`, made on first use: several owners (one adapter per organisation in one
        process) share one family, rendered once."""
        for item in self._items:
            if isinstance(item, LabelledGauge) and item.name == name:
                return item
        g = LabelledGauge(name, help, labels)
        self._items.append(g)
        return g

    def histogram(self, name: str, help: str) -> Histogram:
        h = Histogram(name, help)
        self._items.append(h)
        return h

    def render(self) -> str:
        lines: list[str] = []
        for item in self._items:
            lines += item.render()
        return "\n".join(lines) + "\n"
