"""What NATS says about itself, as plain data: the server a connection is on, a stream's state and
cluster placement, a consumer's backlog, message counts per subject. Counts only, never a message
(the console's health panel; docs/console.md)."""

from __future__ import annotations

from typing import Any

from broker.nats.bus import Bus, translate_errors

__all__ = ["consumer_summary", "server_summary", "stream_summary", "subject_counts"]


def server_summary(bus: Bus) -> dict[str, Any]:
    """The server this connection is on, and the servers it knows of."""
    if not bus.connected:
        return {"connected": False}
    nc = bus.nc
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    url = nc.connected_url
    return {
        "connected": True,
        "connected_url": f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else None,
        "server_name": info.get("server_name"),
        "version": info.get("version"),
        "cluster": info.get("cluster"),
        "known_servers": sorted({f"{s.hostname}:{s.port}" for s in nc.servers}),
    }


async def stream_summary(bus: Bus, name: str) -> dict[str, Any]:
    """A stream's message counts, sequences, consumers, leader and replicas (BusUnavailable if none)."""
    with translate_errors(f"stream info {name}"):
        info = await bus.js.stream_info(name)
    st, cl = info.state, info.cluster
    return {
        "name": name,
        "messages": st.messages,
        "bytes": st.bytes,
        "first_seq": st.first_seq,
        "last_seq": st.last_seq,
        "consumers": st.consumer_count,
        "leader": cl.leader if cl is not None else None,
        "replicas": [
            {"name": p.name, "current": p.current, "offline": bool(p.offline), "lag": p.lag}
            for p in (cl.replicas or [] if cl is not None else [])
        ],
    }


async def consumer_summary(bus: Bus, stream: str, durable: str, *, timeout: float) -> dict[str, int]:
    """A durable's backlog: not yet handed out, handed out and not acknowledged, redelivered."""
    with translate_errors(f"consumer info {stream}/{durable}"):
        info = await bus.js.consumer_info(stream, durable, timeout=timeout)
    return {
        "num_pending": int(info.num_pending or 0),
        "num_ack_pending": int(info.num_ack_pending or 0),
        "num_redelivered": int(info.num_redelivered or 0),
    }


async def subject_counts(bus: Bus, stream: str, subjects_filter: str) -> dict[str, int]:
    """Messages per subject of `stream` under `subjects_filter`."""
    with translate_errors(f"subjects of {stream}"):
        info = await bus.js.stream_info(stream, subjects_filter=subjects_filter)
    return {k: int(v) for k, v in (info.state.subjects or {}).items()}
