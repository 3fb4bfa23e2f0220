"""A stub native system (NSATU, EUMAM or UDCG liaison system) for tests and `broker up`.

One small aiohttp server per organisation, plain HTTP on 127.0.0.1 (loopback only), port chosen by the OS::

    async with StubNativeSystem("nsatu", "application/vnd.nsatu.liaison+json") as stub:
        stub.url  # http://127.0.0.1:PORT

HTTP API:

* `POST /inbox` - a native document for the system. `202 {"seq": n}` when recorded (in order, with
  its content type); `503` while down or inside a failure window (retry later); `415` if the content
  type's media type is not the stub's; `422 {"error": ...}` for a document refused permanently: it
  contains the text `POISON`, matches a `reject_documents` predicate, or - when the stub's name is a
  known codec (`nsatu`, `eumam`, `udcg`) and `validate` is on - does not decode with that codec or one of
  its messages' `ref` matches a `reject_refs` predicate. With `idempotent=True` a repeated
  `Idempotency-Key` is answered `200 {"seq", "duplicate": true}` and not recorded again.
* `GET /received` - the recorded documents: `[{"seq", "content_type", "body", "body_b64"}]` (`body` is
  the UTF-8 text, or null if the bytes are not UTF-8; `body_b64` the exact bytes).
* `GET /outbox?after=N&limit=M` - documents the native system publishes, for the adapter to pull:
  `{"items": [{"seq", "content_type", "body", "body_b64"}], "last": <highest seq>}`, items with
  `seq > N` (default 0), at most M (default 100, at most 1000). Sequence numbers start at 1.
  `503` while down or failing, like the inbox (the whole system is unavailable).
* `POST /control/fail?seconds=N` - fail (503) for N seconds; `POST /control/down?down=true|false`;
  `POST /control/emit` - the request body is a native document to put in the outbox, `201 {"seq": n}`.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.formats import CODECS, MAX_NATIVE_BYTES
from broker.aio import AsyncResource
from broker.errors import MarkingError, NativeFormatError

__all__ = ["Document", "StubNativeSystem"]


@dataclass(frozen=True)
class Document:
    """A native document as received (inbox) or published (outbox)."""

    seq: int
    body: bytes
    content_type: str

    def to_json(self) -> dict[str, Any]:
        try:
            text: str | None = self.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return {
            "seq": self.seq,
            "content_type": self.content_type,
            "body": text,
            "body_b64": base64.b64encode(self.body).decode("ascii"),
        }


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class StubNativeSystem(AsyncResource):
    """A native liaison system on loopback: an inbox it records, an outbox an adapter polls."""

    def __init__(
        self, name: str, media_type: str, *, validate: bool = True, idempotent: bool = False
    ) -> None:
        self.name = name
        self.media_type = media_type
        self.received: list[Document] = []
        self.outbox: list[Document] = []
        self.attempts = 0
        self.delay_s = 0.0  # a slow native system: each accepted POST /inbox is answered this much later
        # An idempotent native system records a document once per `Idempotency-Key` and answers a repeat
        # with 200 (what exactly-once needs when an adapter dies between the native accept and its ack).
        self.idempotent = idempotent
        self._keys: dict[str, int] = {}
        self.repeats = 0
        self._codec = CODECS.get(name.lower()) if validate else None
        self._down = False
        self._fail_until = 0.0
        self._reject_refs: list[Callable[[str], bool]] = []
        self._reject_docs: list[Callable[[bytes], bool]] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("stub is not running; use `async with StubNativeSystem(...)`")
        return f"http://127.0.0.1:{self._port}"

    @property
    def available(self) -> bool:
        return not self._down and time.monotonic() >= self._fail_until

    def fail_for(self, seconds: float) -> None:
        """Answer 503 for the next `seconds` seconds."""
        self._fail_until = time.monotonic() + seconds

    def set_down(self, down: bool) -> None:
        """Answer 503 until told otherwise."""
        self._down = down

    def reject_refs(self, predicate: Callable[[str], bool]) -> None:
        """Refuse permanently (422) documents with a message whose `ref` satisfies `predicate`."""
        self._reject_refs.append(predicate)

    def reject_documents(self, predicate: Callable[[bytes], bool]) -> None:
        """Refuse permanently (422) documents whose bytes satisfy `predicate`."""
        self._reject_docs.append(predicate)

    def emit(self, doc: bytes, content_type: str | None = None) -> int:
        """Publish a native document to the outbox; returns its sequence number."""
        seq = len(self.outbox) + 1
        self.outbox.append(Document(seq, bytes(doc), content_type or self.media_type))
        return seq

    async def _open(self) -> None:
        app = web.Application(client_max_size=2 * MAX_NATIVE_BYTES)
        app.router.add_post("/inbox", self._inbox)
        app.router.add_get("/received", self._received)
        app.router.add_get("/outbox", self._outbox)
        app.router.add_post("/control/fail", self._control_fail)
        app.router.add_post("/control/down", self._control_down)
        app.router.add_post("/control/emit", self._control_emit)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _inbox(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if not self.available:
            return web.json_response({"error": "native system unavailable; retry later"}, status=503)
        if _media(request.content_type) != _media(self.media_type):
            return web.json_response({"error": f"expected content type {self.media_type}"}, status=415)
        body = await request.read()
        reason = self._refusal(body)
        if reason is not None:
            return web.json_response({"error": reason}, status=422)
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        key = request.headers.get("Idempotency-Key")
        if self.idempotent and key is not None and key in self._keys:
            self.repeats += 1
            return web.json_response({"seq": self._keys[key], "duplicate": True}, status=200)
        doc = Document(len(self.received) + 1, body, request.headers.get("Content-Type", ""))
        self.received.append(doc)
        if key is not None:
            self._keys[key] = doc.seq
        return web.json_response({"seq": doc.seq}, status=202)

    def _refusal(self, body: bytes) -> str | None:
        if b"POISON" in body:
            return "document refused permanently (poison)"
        if any(p(body) for p in self._reject_docs):
            return "document refused permanently"
        if self._codec is not None:
            try:
                messages = self._codec.decode(body)
            except (NativeFormatError, MarkingError) as e:
                return f"document refused: {e}"
            if any(m.ref is not None and p(m.ref) for m in messages for p in self._reject_refs):
                return "document refused permanently (ref)"
        return None

    async def _received(self, request: web.Request) -> web.Response:
        return web.json_response([d.to_json() for d in self.received])

    async def _outbox(self, request: web.Request) -> web.Response:
        if not self.available:
            return web.json_response({"error": "native system unavailable; retry later"}, status=503)
        try:
            after = int(request.query.get("after", "0"))
            limit = min(int(request.query.get("limit", "100")), 1000)
        except ValueError:
            return web.json_response({"error": "after and limit must be integers"}, status=400)
        items = [d.to_json() for d in self.outbox if d.seq > after][: max(limit, 0)]
        return web.json_response({"items": items, "last": len(self.outbox)})

    async def _control_fail(self, request: web.Request) -> web.Response:
        try:
            seconds = float(request.query["seconds"])
        except (KeyError, ValueError):
            return web.json_response({"error": "seconds=N is required"}, status=400)
        self.fail_for(seconds)
        return web.json_response({"failing_for": seconds})

    async def _control_down(self, request: web.Request) -> web.Response:
        down = request.query.get("down", "true").lower()
        if down not in ("true", "false"):
            return web.json_response({"error": "down must be true or false"}, status=400)
        self.set_down(down == "true")
        return web.json_response({"down": self._down})

    async def _control_emit(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"seq": self.emit(body)}, status=201)
