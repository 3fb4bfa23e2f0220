"""The integrators' contract in machine-readable form: OpenAPI for the gateway, AsyncAPI for the
NATS side, STANAG 4774 XML labels and golden vectors (docs/integration.md)."""
