"""Merging several processes' metrics into one Prometheus exposition (broker/metrics_share.py)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from broker.metrics.registry import Registry
from broker.metrics.share import STALE_AFTER_S, MetricsShare, merge, with_label


def _registry(accepted: int, latency: float) -> Registry:
    r = Registry()
    r.counter("coord_messages_accepted_total", "messages stored").inc(by=accepted)
    c = r.counter("coord_http_requests_total", "HTTP requests", ("path", "status"))
    c.inc("/v1/messages", "202", by=accepted)
    r.histogram("coord_http_request_seconds", "request latency").observe(latency)
    r.gauge("coord_audit_queue_depth", "depth", lambda: 3)
    return r


def test_with_label_adds_the_label_first() -> None:
    assert with_label("m 1", "process", "core") == 'm{process="core"} 1'
    assert with_label('m{a="b"} 2', "process", "gateway-1") == 'm{process="gateway-1",a="b"} 2'


def test_merge_keeps_one_help_and_type_per_family_and_labels_every_sample() -> None:
    text = merge({"gateway-0": _registry(5, 0.003).render(), "gateway-1": _registry(7, 0.2).render()})
    lines = text.splitlines()
    types = [line for line in lines if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)) == 4
    samples = [line for line in lines if not line.startswith("#")]
    assert all('{process="gateway-' in line for line in samples), samples
    assert 'coord_messages_accepted_total{process="gateway-0"} 5' in lines
    assert 'coord_messages_accepted_total{process="gateway-1"} 7' in lines
    assert 'coord_http_requests_total{process="gateway-1",path="/v1/messages",status="202"} 7' in lines
    # a family's samples follow its TYPE line, whatever process they came from
    i = lines.index("# TYPE coord_http_request_seconds histogram")
    block = lines[i + 1 : i + 1 + 2 * 14]
    assert all(line.startswith("coord_http_request_seconds") for line in block), block
    assert 'coord_http_request_seconds_count{process="gateway-1"} 1' in block


async def test_share_publishes_merges_fresh_processes_and_cleans_up(tmp_path: Path) -> None:
    core, gw = _registry(0, 0.001), _registry(2, 0.001)
    async with MetricsShare(core, tmp_path, "core"), MetricsShare(gw, tmp_path, "gateway-0") as share:
        stale = tmp_path / "gateway-9.prom"
        stale.write_text(_registry(99, 0.001).render())
        old = time.time() - STALE_AFTER_S - 5
        os.utime(stale, (old, old))
        gw.counter("coord_late_total", "registered after start").inc()
        text = share.render_all()
        assert 'coord_audit_queue_depth{process="core"} 3' in text
        assert 'coord_messages_accepted_total{process="gateway-0"} 2' in text
        assert "coord_late_total" in text  # its own samples are live
        assert 'process="gateway-9"' not in text  # not rewritten for too long: a dead process
        assert text.count('coord_messages_accepted_total{process="gateway-0"}') == 1  # own file not twice
        core.counter("coord_core_late_total", "seen after the next publish").inc()
        await asyncio.sleep(1.3)
        assert 'coord_core_late_total{process="core"} 1' in share.render_all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway-9.prom"]
