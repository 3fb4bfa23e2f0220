"""The one module that talks to NATS JetStream: connection, streams, publish, read back.

nats-py's exceptions stop here: callers see `BusUnavailable` (retry later, same id) and nothing
else. Settings follow ../shared/NATS-NOTES.md: unlimited reconnects, a 10 s ping, no publish
buffering while disconnected (a publish that cannot reach the server fails at once instead of
being flushed after the client was told 503), JetStream publish with `Nats-Msg-Id` only.

Security (docs/nats-security.md): with `tls` set the connection is TLS from the first byte
(`tls_handshake_first`, never a plaintext fallback) and the client certificate is the identity;
`inbox_prefix` gives each identity its own reply subjects (`_INBOX.<service>.>`), so no service
can subscribe to another's replies. Only the bootstrap identity creates or updates streams
(`ensure_streams`); the others only check that the streams they use exist (`require_streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from broker.aio import AsyncResource, Backoff
from broker.errors import BusUnavailable
from broker.nats.names import (
    ACCEPTED_STREAM,
    MSG_ID,
)
from broker.nats.streams import stream_configs

log = structlog.get_logger(__name__)


class _SslEofNoise(logging.Filter):
    """nats-py upgrades its plain stream to TLS (`start_tls`), so asyncio's stream protocol does not know
    it is over TLS and, when the server closes, logs this harmless warning once per connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_SslEofNoise())




@dataclass(frozen=True, slots=True)
class BusSettings:
    servers: tuple[str, ...]
    name: str = "coord-broker"
    tls: ssl.SSLContext | None = None
    user: str | None = None
    password: str | None = None
    tls_handshake_first: bool = False
    inbox_prefix: str = "_INBOX"
    ensure_streams: bool = True  # create/update the streams (the bootstrap identity only)
    require_streams: tuple[str, ...] = ()  # without ensure: ready once these exist (stream info)
    replicas: int = 1
    duplicate_window_s: float = 900.0
    publish_timeout_s: float = 5.0
    # while connected, a publish that meets "no responders" or a timeout (a stream leader election,
    # a restarting server) is retried with the same Nats-Msg-Id for this long before giving up
    publish_retry_s: float = 8.0
    connect_retry_s: float = 0.5


@dataclass(frozen=True, slots=True)
class PubResult:
    seq: int
    duplicate: bool
    retried: bool = False  # an earlier attempt failed: a duplicate may be that attempt's own copy


@dataclass(frozen=True, slots=True)
class Stored:
    subject: str
    seq: int
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


#: publish failures that mean "no stream leader right now": retried with the same message id
_RETRIABLE = (
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.TimeoutError,
    TimeoutError,
)


@contextlib.contextmanager
def translate_errors(what: str) -> Any:
    """Map nats-py's failures to BusUnavailable, once, at this boundary."""
    try:
        yield
    except BusUnavailable:
        raise
    except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as exc:
        raise BusUnavailable(
            f"{what}: {type(exc).__name__}: {exc}", operation=what, leaderless=isinstance(exc, _RETRIABLE)
        ) from exc


class Bus(AsyncResource):
    """One NATS connection with JetStream. Use as `async with Bus(settings) as bus:`.

    The first connection is retried in the background until it succeeds, so a service can start
    while NATS is down and report not-ready; afterwards nats-py reconnects by itself.
    """

    def __init__(self, settings: BusSettings, *, ensure_streams: bool | None = None) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams_ok = False
        self._ensure = settings.ensure_streams if ensure_streams is None else ensure_streams
        # what must exist before the bus is ready: created (ensure) or only checked (require)
        self._check = not self._ensure and bool(settings.require_streams)
        self._closed = False
        self._connected_event = asyncio.Event()
        self._ready_event = asyncio.Event()  # connected and the streams exist
        # bumped on every (re)connection: a consumer loop that sees it change recreates its pull
        # subscription, which can otherwise go silent after a server restart (nats.py #504)
        self.generation = 0

    async def _open(self) -> None:
        self._spawn(self._connect_loop(), "bus-connect")

    async def aclose(self) -> None:
        self._closed = True
        await super().aclose()

    async def _close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _connect_loop(self) -> None:
        while not self._closed:
            try:
                nc = await nats.connect(
                    servers=list(self.settings.servers),
                    name=self.settings.name,
                    tls=self.settings.tls,
                    tls_handshake_first=self.settings.tls_handshake_first,
                    inbox_prefix=self.settings.inbox_prefix,
                    user=self.settings.user,
                    password=self.settings.password,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    ping_interval=10,
                    max_outstanding_pings=3,
                    pending_size=0,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                )
            except Exception as exc:
                log.warning("bus.connect_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.settings.connect_retry_s)
                continue
            self._nc = nc
            self._js = nc.jetstream(timeout=self.settings.publish_timeout_s)
            self.generation += 1
            log.info("bus.connected", servers=list(self.settings.servers))
            self._connected_event.set()
            if not self._ensure and not self._check:
                self._ready_event.set()
            while not self._closed:
                if (self._ensure or self._check) and not self._streams_ok:
                    try:
                        await (self.ensure_streams() if self._ensure else self.check_streams())
                    except BusUnavailable as exc:
                        log.warning("bus.streams_pending", error=str(exc))
                        await asyncio.sleep(self.settings.connect_retry_s)
                        continue
                await asyncio.sleep(1.0)

    async def _on_disconnected(self) -> None:
        self._ready_event.clear()
        if self._closed:
            log.debug("bus.disconnected", name=self.settings.name)
        else:
            log.warning("bus.disconnected", name=self.settings.name)

    async def _on_reconnected(self) -> None:
        self.generation += 1
        log.info("bus.reconnected")
        if self._streams_ok or not (self._ensure or self._check):
            self._ready_event.set()

    async def _on_error(self, exc: Exception) -> None:
        log.warning("bus.error", error=f"{type(exc).__name__}: {exc}")

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected_event.wait(), timeout)

    async def wait_ready(self) -> None:
        """Until connected with the streams in place (bound it with `asyncio.timeout`)."""
        await self._ready_event.wait()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def ready(self) -> bool:
        return self.connected and (self._streams_ok or not (self._ensure or self._check))

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BusUnavailable("not connected to NATS yet")
        return self._js

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise BusUnavailable("not connected to NATS yet")
        return self._nc

    async def ensure_streams(self) -> None:
        """Create the streams, or update them to the expected settings; idempotent."""
        js = self.js
        with translate_errors("ensure streams"):
            for cfg in stream_configs(self.settings):
                try:
                    info = await js.stream_info(cfg.name or "")
                except nats.js.errors.NotFoundError:
                    await js.add_stream(cfg)
                    log.info("bus.stream_created", stream=cfg.name)
                    continue
                have = info.config
                if (have.duplicate_window or 0.0) > (cfg.duplicate_window or 0.0):
                    # widened since for a longer freshness window (`widen_duplicate_window`): kept
                    cfg = dataclasses.replace(cfg, duplicate_window=have.duplicate_window)
                if (
                    have.subjects,
                    have.duplicate_window,
                    have.deny_delete,
                    have.deny_purge,
                    have.num_replicas,
                ) != (cfg.subjects, cfg.duplicate_window, cfg.deny_delete, cfg.deny_purge, cfg.num_replicas):
                    await js.update_stream(cfg)
                    log.info("bus.stream_updated", stream=cfg.name)
        self._streams_ok = True
        if self.connected:
            self._ready_event.set()

    async def widen_duplicate_window(self, seconds: float) -> bool:
        """Make COORD_ACCEPTED's duplicate window at least `seconds` (never narrower); True if changed.
        A policy reload that lengthens `max_age_s` or `max_skew_s` needs it: a resend the freshness
        check still admits must still be found a duplicate (or a 409)."""
        with translate_errors("duplicate window"):
            info = await self.js.stream_info(ACCEPTED_STREAM)
            if (info.config.duplicate_window or 0.0) >= seconds:
                return False
            info.config.duplicate_window = seconds
            await self.js.update_stream(info.config)
        log.info("bus.duplicate_window_widened", stream=ACCEPTED_STREAM, seconds=seconds)
        return True

    async def check_streams(self) -> None:
        """Only check (stream info) that the streams of `require_streams` exist; never create one."""
        js = self.js
        with translate_errors("check streams"):
            for name in self.settings.require_streams:
                try:
                    await js.stream_info(name)
                except nats.js.errors.NotFoundError:
                    raise BusUnavailable(f"stream {name} does not exist (yet)") from None
        self._streams_ok = True
        if self.connected:
            self._ready_event.set()

    async def publish(
        self, subject: str, data: bytes, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> PubResult:
        """JetStream publish with `Nats-Msg-Id`; returns only after the server's ack."""
        if not self.connected:
            raise BusUnavailable("not connected to NATS")
        hdrs = {MSG_ID: msg_id, **(headers or {})}
        deadline = asyncio.get_running_loop().time() + self.settings.publish_retry_s
        backoff = Backoff(0.05, 1.0)
        retried = False
        while True:
            try:
                with translate_errors("publish"):
                    ack = await self.js.publish(subject, data, headers=dict(hdrs))
                return PubResult(seq=ack.seq, duplicate=bool(ack.duplicate), retried=retried)
            except BusUnavailable as exc:
                delay = backoff.next()
                late = asyncio.get_running_loop().time() + delay > deadline
                if not exc.leaderless or not self.connected or late:
                    raise
                log.info("bus.publish_retry", subject_prefix=subject.split(".", 2)[1], error=str(exc))
                await asyncio.sleep(delay)
                retried = True

    async def get(self, stream: str, seq: int) -> Stored:
        """Read one stored message back by stream sequence."""
        with translate_errors("get message"):
            raw = await self.js.get_msg(stream, seq)
        return Stored(raw.subject or "", raw.seq or seq, raw.data or b"", dict(raw.headers or {}))

    async def get_last(self, stream: str, subject: str) -> Stored | None:
        """The last message stored on `subject` (None when there is none)."""
        with translate_errors("get last message"):
            try:
                raw = await self.js.get_msg(stream, subject=subject)
            except nats.js.errors.NotFoundError:
                return None
        return Stored(raw.subject or subject, raw.seq or 0, raw.data or b"", dict(raw.headers or {}))

    async def get_next(self, stream: str, subject: str, seq: int) -> Stored | None:
        """The first message on `subject` at stream sequence `seq` or later (None when there is none)."""
        with translate_errors("get next message"):
            try:
                raw = await self.js.get_msg(stream, seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return None
        return Stored(raw.subject or subject, raw.seq or seq, raw.data or b"", dict(raw.headers or {}))

    async def last_seq_of(self, stream: str, subject: str) -> int:
        """Stream sequence of the last message on `subject` (0 if none)."""
        last = await self.get_last(stream, subject)
        return last.seq if last is not None else 0

    async def publish_pipelined(
        self, items: Sequence[tuple[str, bytes, str, Mapping[str, str]]], *, timeout: float
    ) -> list[PubResult]:
        """Publish `(subject, data, msg_id, headers)` items in order on one connection without waiting for
        each ack, then wait for every ack (bounded: an ack lost with a dying server never resolves).
        Raises BusUnavailable (a retry with the same ids dedupes what did land)."""
        if not self.connected:
            raise BusUnavailable("not connected to NATS", operation="publish")
        acks: list[Awaitable[Any]] = []
        for subject, data, msg_id, headers in items:
            with translate_errors("publish"):
                acks.append(await self.js.publish_async(subject, data, headers={MSG_ID: msg_id, **headers}))
        try:
            async with asyncio.timeout(timeout):
                with translate_errors("publish acks"):
                    done = await asyncio.gather(*acks)
        except TimeoutError:
            raise BusUnavailable(f"publish acks: none within {timeout:g} s", operation="publish") from None
        return [PubResult(seq=a.seq, duplicate=bool(a.duplicate)) for a in done]

    async def last_seq(self, stream: str) -> int:
        with translate_errors("stream info"):
            info = await self.js.stream_info(stream)
        return int(info.state.last_seq)
