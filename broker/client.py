"""The client library for liaison systems (public API, docs/integration.md): build a message, seal it
in DSSE, post it over mutual TLS, and retry what is safe to retry.

    from broker.client import GatewayClient, Retry, build_message, seal_message
    from broker.identity.tls import client_context

    msg = build_message(kind="status.update", sender="nsatu-liaison", originator="NSATU",
                        label={...}, body={...})
    envelope = seal_message(msg, keyid, signing_key)          # the bytes to send, and to resend
    async with GatewayClient(url, client_context(ca, crt, key)) as gw:
        reply = await gw.send(envelope)                       # 202 stored, or 200 duplicate

`send` and `send_batch` resend the same bytes (so the same id: a copy that did land answers 200
`duplicate`, never a second message) after a 503, a 429, a timeout or a lost connection, waiting
`Retry-After` when the broker gives one and an exponential back-off otherwise (`Retry`). Anything
else (4xx) is final: the reply says what to fix. `post` and `post_batch` send once.

Used by `broker send`, by the adapters' inbound side (they publish as their own senders) and by the
tests. It signs bytes it encoded itself; the broker verifies those exact bytes.
"""

from __future__ import annotations

import asyncio
import math
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.aio import AsyncResource
from broker.clock import rfc3339, utcnow
from broker.dsse import b64encode, sign
from broker.errors import BrokerError
from schemas.message import PAYLOAD_TYPE

__all__ = [
    "RETRIED_STATUSES",
    "GatewayClient",
    "GatewayUnreachable",
    "Reply",
    "Retry",
    "build_message",
    "seal",
    "seal_message",
    "uuid7",
]

_ENC = msgspec.json.Encoder()
#: answers after which the same bytes are sent again: nothing was stored (503) or nothing was taken (429)
RETRIED_STATUSES = frozenset({429, 503})


class GatewayUnreachable(BrokerError, ConnectionError):
    """Every attempt timed out or lost its connection; `attempts` were made, all with the same bytes."""

    def __init__(self, attempts: int, cause: BaseException) -> None:
        super().__init__(f"gateway unreachable after {attempts} attempts: {type(cause).__name__}: {cause}")
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class Retry:
    """How `send` retries: at most `attempts` tries; waits `base_s * 2**n` (capped at `max_s`) after the
    n-th failure, or the broker's `Retry-After` when it gives one (capped at `max_retry_after_s`)."""

    attempts: int = 6
    base_s: float = 0.25
    max_s: float = 8.0
    max_retry_after_s: float = 120.0

    def delay(self, failure: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                seconds = float(retry_after)
            except ValueError:
                seconds = math.nan
            if math.isfinite(seconds) and seconds >= 0:
                return min(seconds, self.max_retry_after_s)
        return min(self.base_s * 2.0**failure, self.max_s)


def uuid7() -> str:
    """RFC 9562 version 7: 48-bit Unix milliseconds, version, variant, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | (rand >> 68 & 0xFFF) << 64
        | 0b10 << 62
        | rand & ((1 << 62) - 1)
    )
    return str(uuid.UUID(int=value))


def build_message(
    *,
    kind: str,
    sender: str,
    originator: str,
    label: Mapping[str, Any],
    body: Mapping[str, Any],
    msg_id: str | None = None,
    created: str | None = None,
    in_reply_to: str | None = None,
) -> dict[str, Any]:
    """A message as plain data, filling in id (UUIDv7), version and created (now)."""
    msg: dict[str, Any] = {
        "id": msg_id or uuid7(),
        "kind": kind,
        "version": 1,
        "originator": originator,
        "sender": sender,
        "created": created or rfc3339(utcnow()).replace(".000000Z", "Z"),
        "label": dict(label),
        "body": dict(body),
    }
    if in_reply_to is not None:
        msg["in_reply_to"] = in_reply_to
    return msg


def seal(payload: bytes, keyid: str, key: Ed25519PrivateKey, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The DSSE envelope (compact JSON) of `payload` with one signature."""
    env = {
        "payloadType": payload_type,
        "payload": b64encode(payload),
        "signatures": [{"keyid": keyid, "sig": b64encode(sign(key, payload_type, payload))}],
    }
    return _ENC.encode(env)


def seal_message(msg: Mapping[str, Any], keyid: str, key: Ed25519PrivateKey) -> bytes:
    return seal(_ENC.encode(msg), keyid, key)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


class GatewayClient(AsyncResource):
    """A keep-alive HTTPS session to the gateway with a client certificate."""

    def __init__(
        self,
        base_url: str,
        ssl_ctx: ssl.SSLContext,
        *,
        timeout_s: float = 30.0,
        retry: Retry = Retry(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_ctx
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.retry = retry
        self._sleep = sleep

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=64), timeout=self._timeout
        )

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, *, data: bytes | None = None, content_type: str | None = None
    ) -> Reply:
        if self._session is None:
            raise RuntimeError("GatewayClient is not open: use it as an async context manager")
        headers = {"Content-Type": content_type} if content_type else {}
        async with self._session.request(method, self.base_url + path, data=data, headers=headers) as resp:
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            body: Any = msgspec.json.decode(raw) if "json" in ctype and raw else raw
            return Reply(resp.status, body, dict(resp.headers))

    async def post(self, envelope: bytes) -> Reply:
        return await self.request("POST", "/v1/messages", data=envelope, content_type="application/json")

    async def post_batch(self, envelopes: list[bytes]) -> Reply:
        data = b"\n".join(envelopes) + b"\n"
        return await self.request(
            "POST", "/v1/messages/batch", data=data, content_type="application/x-ndjson"
        )

    async def send(self, envelope: bytes) -> Reply:
        """Post one envelope, retrying the same bytes as `Retry` says (see the module docstring)."""
        return await self._retrying(lambda: self.post(envelope))

    async def send_batch(self, envelopes: list[bytes]) -> Reply:
        """Post a batch, retrying the whole batch (the same lines) after 503, 429, a timeout or a lost
        connection; lines stored by an earlier attempt then answer `duplicate`."""
        return await self._retrying(lambda: self.post_batch(envelopes))

    async def _retrying(self, attempt: Callable[[], Awaitable[Reply]]) -> Reply:
        for n in range(self.retry.attempts):
            last = n == self.retry.attempts - 1
            try:
                reply = await attempt()
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if last:
                    raise GatewayUnreachable(n + 1, exc) from exc
                await self._sleep(self.retry.delay(n, None))
                continue
            if reply.status not in RETRIED_STATUSES or last:
                return reply
            await self._sleep(self.retry.delay(n, reply.headers.get("Retry-After")))
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover
