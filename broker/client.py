"""What a liaison system does, as a library: build a message, seal it in DSSE, post it over mTLS.

Used by `broker send`, by the adapters' inbound side (they publish as their own senders) and by the
tests. It signs bytes it encoded itself; the broker verifies those exact bytes.
"""

from __future__ import annotations

import os
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.aio import AsyncResource
from broker.clock import rfc3339, utcnow
from broker.dsse import b64encode, sign
from schemas.message import PAYLOAD_TYPE

_ENC = msgspec.json.Encoder()


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

    def __init__(self, base_url: str, ssl_ctx: ssl.SSLContext, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_ctx
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

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
