"""The operators' web console (docs/console.md): one page on the gateway, under the gateway's mutual TLS.

    web.py       the routes (/console, its assets, /v1/console/session|trail|record), hardening headers
    trail.py     one message's trail from its audit records
    auditlog.py  the audit log by record index (binary search over the stream)
    health.py    what /readyz adds: processes, NATS, streams, consumers, backlogs, native systems
    static/      the page: plain HTML, CSS and JavaScript, no build step, no third-party code
"""

from broker.console.health import Health
from broker.console.web import Console

__all__ = ["Console", "Health"]
