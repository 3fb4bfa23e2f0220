"""TLS contexts for the gateway (server, client certificate required) and for clients."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Mutual TLS: TLS 1.2+, a client certificate signed by `ca` is required at the handshake."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx
