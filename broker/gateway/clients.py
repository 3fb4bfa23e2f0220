"""Who is asking, and what may they send: the identity in the verified client certificate, the
operators' gate, the body's media type and size limit. Shared by every handler of the gateway."""

from __future__ import annotations

from aiohttp import web

from broker.errors import Problem
from broker.policy.model import Operator, Policy

__all__ = ["client_identity", "read_limited", "record_index", "require_media_type", "require_operator"]


def client_identity(request: web.Request) -> str:
    """The subject CN of the verified client certificate (the TLS layer already required one)."""
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    cns = [v for rdn in (cert or {}).get("subject", ()) for (k, v) in rdn if k == "commonName"]
    if len(cns) != 1:
        raise Problem("forbidden", "a client certificate with exactly one subject CN is required")
    return str(cns[0])


async def read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise Problem("too-large", f"the body is limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise Problem("too-large", f"the body is limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def require_media_type(request: web.Request, expected: str) -> None:
    charset = request.charset
    if request.content_type != expected or (charset is not None and charset.lower() != "utf-8"):
        raise Problem("unsupported-media-type", f"Content-Type must be {expected}")


def require_operator(request: web.Request, policy: Policy) -> Operator:
    ident = client_identity(request)
    op = policy.operators.get(ident)
    if op is None:
        raise Problem("forbidden", "only operators listed in the policy may use this endpoint")
    return op


def record_index(text: str) -> int:
    """A record index in a query: ASCII digits only (`int` would also take "٣", "+3", " 3", "1_0")."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)
