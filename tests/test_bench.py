"""`broker bench --quick` keeps working: it runs end to end and writes its figures as JSON.

Nothing about speed is asserted (the machine is shared and noisy): only that every figure is there,
named, finite where a value was measured, and that the table and the JSON agree.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from broker.bench.cli import add_bench_parser
from broker.bench.report import Figure, fig, percentile, render


def test_figure_ratio_and_table() -> None:
    f = fig("x", 50.0, "msg/s", 100.0)
    assert f.ratio == 0.5
    assert fig("y", 1.0, "ms").ratio is None
    assert set(f.to_json()) >= {"name", "value", "unit", "baseline", "ratio"}
    table = render([f, Figure("y", 2.0, "ms")])
    assert "x" in table and "0.50" in table


def test_percentile() -> None:
    values = [float(i) for i in range(101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert math.isnan(percentile([], 50))


def test_parser_registers_bench() -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_bench_parser(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["bench", "--quick", "--json", "out.json"])
    assert args.quick and args.json_file == "out.json"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_bench_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "broker.bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    names = [f["name"] for f in figures]
    for key in (
        "ed25519 verify",
        "raw JetStream publish, awaited",
        "raw JetStream publish_async",
        "bare aiohttp mTLS handler",
        "ingest POST /v1/messages (",
        "ingest POST /v1/messages/batch",
        "POST->202 p99 @ 500",
        "POST->delivery p99 @ 500",
        "fan-out: release decisions",
        "broker RSS after",
        "audit verify",
    ):
        assert any(n.startswith(key) for n in names), f"missing figure {key!r} in {names}"
    for f in figures:
        assert set(f) >= {"name", "value", "unit", "baseline", "ratio"}
        assert isinstance(f["value"], int | float)
        assert f["name"] in proc.stdout


def test_metrics_cost_measures_all_three_registries(capsys: pytest.CaptureFixture[str]) -> None:
    from broker.bench.metrics_cost import main

    assert main(["--number", "200", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for variant in ("ours", "prometheus_client ", "prometheus_client multiprocess"):
        assert any(line.startswith(variant) for line in out.splitlines()), out
