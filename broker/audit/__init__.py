"""Tamper-evident audit log: RFC 9162 Merkle tree, signed checkpoints and the offline export verifier."""

__all__: list[str] = []
