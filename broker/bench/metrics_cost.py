"""What a request's metrics cost: `broker.metrics.registry` against prometheus_client (issue 11).

    python -m broker.bench.metrics_cost [--number N] [--repeat R]

Times, with `timeit` in one run, the three metric calls the gateway makes per request
(`coord_http_requests_total.inc(path, status)`, `coord_messages_accepted_total.inc()`,
`coord_http_request_seconds.observe(s)`) with

* `ours`: the registry the broker uses;
* `prometheus_client`: its metrics in a `CollectorRegistry`, behind the facade the call sites would
  keep (`.inc(*label_values, by=)` -> `.labels(...).inc(by)`);
* `prometheus_client multiprocess`: the same in multiprocess mode (every value in an mmap'ed file
  of `PROMETHEUS_MULTIPROC_DIR`), in a child process: the library chooses the mode from the
  environment when it is imported, so the child is started with the variable set, here and only here.

Best of `--repeat` runs of `--number` calls each; µs per call. Not a figure of `broker bench`, and
prometheus_client is only a test dependency (docs/performance.md, "Metrics registry").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # the registry's
OPS = ("inc(path, status)", "inc()", "observe(s)")
Ops = dict[str, Callable[[], None]]


def ours() -> Ops:
    from broker.metrics.registry import Registry

    r = Registry()
    requests = r.counter("coord_http_requests_total", "HTTP requests by path and status", ("path", "status"))
    accepted = r.counter("coord_messages_accepted_total", "messages stored")
    latency = r.histogram("coord_http_request_seconds", "request latency")
    return {
        OPS[0]: lambda: requests.inc("/v1/messages", "202"),
        OPS[1]: lambda: accepted.inc(),
        OPS[2]: lambda: latency.observe(0.004),
    }


def prometheus() -> Ops:
    import prometheus_client as pc

    reg = pc.CollectorRegistry()
    requests = pc.Counter(
        "coord_http_requests_total", "HTTP requests by path and status", ("path", "status"), registry=reg
    )
    accepted = pc.Counter("coord_messages_accepted_total", "messages stored", registry=reg)
    latency = pc.Histogram("coord_http_request_seconds", "request latency", buckets=BUCKETS, registry=reg)

    def inc(m: pc.Counter, *label_values: str, by: float = 1.0) -> None:  # the facade's Counter.inc
        (m.labels(*label_values) if label_values else m).inc(by)

    return {
        OPS[0]: lambda: inc(requests, "/v1/messages", "202"),
        OPS[1]: lambda: inc(accepted),
        OPS[2]: lambda: latency.observe(0.004),
    }


def measure(ops: Ops, number: int, repeat: int) -> dict[str, float]:
    """µs per call, best of `repeat`."""
    best = {name: min(timeit.repeat(f, number=number, repeat=repeat)) for name, f in ops.items()}
    return {name: t / number * 1e6 for name, t in best.items()}


def multiprocess(number: int, repeat: int) -> dict[str, float]:
    """`prometheus()` measured in a child process in multiprocess mode."""
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as folder:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
        out = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "broker.bench.metrics_cost", "--child", str(number), str(repeat)],
            env=env,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        if not any(Path(folder).glob("counter_*.db")):
            raise RuntimeError("prometheus_client did not run in multiprocess mode")
    result: dict[str, float] = json.loads(out)
    return result


def table(results: dict[str, dict[str, float]]) -> str:
    base = sum(results["ours"].values())
    rows: list[tuple[str, ...]] = [("", *OPS, "per request", "vs ours")]
    for variant, r in results.items():
        total = sum(r.values())
        rows.append((variant, *(f"{r[o]:.2f}" for o in OPS), f"{total:.2f}", f"+{total - base:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:], "(µs per call)"])


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(measure(prometheus(), int(argv[1]), int(argv[2]))))
        return 0
    p = argparse.ArgumentParser(prog="python -m broker.bench.metrics_cost")
    p.add_argument("--number", type=int, default=200_000, help="calls per timing (default 200000)")
    p.add_argument("--repeat", type=int, default=5, help="timings, the best is kept (default 5)")
    a = p.parse_args(argv)
    from importlib.metadata import version

    results: dict[str, Any] = {
        "ours": measure(ours(), a.number, a.repeat),
        "prometheus_client": measure(prometheus(), a.number, a.repeat),
        "prometheus_client multiprocess": multiprocess(a.number, a.repeat),
    }
    print(table(results))
    print(f"prometheus_client {version('prometheus-client')}, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
