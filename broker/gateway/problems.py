"""Rendering of every error as `application/problem+json` (RFC 9457), in one middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import structlog
from aiohttp import web

from broker.errors import Problem

log = structlog.get_logger(__name__)
PROBLEM_JSON = "application/problem+json"
_ENC = msgspec.json.Encoder()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(p: Problem, headers: dict[str, str] | None = None) -> web.Response:
    if p.retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(p.retry_after)}
    return web.Response(
        status=p.status, body=_ENC.encode(p.to_dict()), content_type=PROBLEM_JSON, headers=headers
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as p:
        return problem_response(p)
    except web.HTTPNotFound:
        return problem_response(Problem("not-found", "no such path; see ICD §6 for the API"))
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        # RFC 9110 §15.5.6: a 405 lists the methods the resource has (schemathesis found it missing)
        return problem_response(Problem("method-not-allowed", f"allowed: {allowed}"), {"Allow": allowed})
    except web.HTTPRequestEntityTooLarge:
        return problem_response(Problem("too-large", "the request body is over the limit"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("gateway.internal_error", path=request.path)
        return problem_response(Problem("internal", "the broker failed; nothing was stored"))
