"""Inclusion proofs as the broker serves them: computed from the leaf hashes, and verified against the
signed checkpoint's root before anyone sees them (the writer's and the snapshot's one rule)."""

from __future__ import annotations

from collections.abc import Sequence

from broker.audit.merkle import SubtreeCache, inclusion_proof, verify_inclusion
from broker.audit.note import Checkpoint
from broker.errors import AuditFilesError, ProofError

__all__ = ["checked_proof"]


def checked_proof(
    leaves: Sequence[bytes], index: int, cp: Checkpoint, cache: SubtreeCache | None = None
) -> list[bytes]:
    """Inclusion proof of leaf `index` under `cp`, verified against `cp.root` before it is returned.
    `index` must be below `cp.size` (IndexError otherwise). A `cache` of these leaves' subtree roots
    makes it O(log n) reads instead of O(n); one that does not match the leaves (a proof that does not
    verify) is emptied, and the proof is refused."""
    if not 0 <= index < cp.size:
        raise IndexError(index)
    if len(leaves) < cp.size:
        raise AuditFilesError(
            f"the audit leaves hold {len(leaves)} records, fewer than the checkpoint's {cp.size}"
        )
    path = inclusion_proof(leaves, index, cp.size, cache)
    try:
        verify_inclusion(leaves[index], index, cp.size, path, cp.root)
    except ProofError as exc:
        if cache is not None:
            cache.reset()
        raise AuditFilesError(
            f"the audit leaves do not match the signed checkpoint of size {cp.size}"
        ) from exc
    return path
