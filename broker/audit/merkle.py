"""RFC 9162 (RFC 6962) Merkle tree hashing for the audit log.

This module owns the tree maths of ICD section 7 and nothing else: leaf and node hashing, the incremental
tree state a writer keeps (:class:`CompactRange`: the tree size and the right-edge frontier of perfect
subtree hashes, O(log n) memory), inclusion and consistency proof generation from the list of leaf hashes
(RFC 9162 §2.1.3.1 and §2.1.4.1) and their verification (RFC 9162 §2.1.3.2 and §2.1.4.2).

Verification conventions (they match the shared test vectors):

* every hash in an inclusion proof or a consistency proof, and the leaf hash, must be 32 bytes;
* an inclusion proof needs ``0 <= index < size``;
* a consistency proof needs ``0 < size1 <= size2``: consistency from the empty tree carries no information
  and is refused; for ``size1 == size2`` the proof must be empty and the two roots equal.

Proof generation costs O(size) hashing because only leaf hashes are kept; callers that serve many proofs
should cache. Leaf hashes are read in slices of up to 65536, so any ``Sequence[bytes]`` with cheap slices
(a list, or a file read with one ``pread`` per slice) serves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence

from broker.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "SubtreeCache",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256



def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


class CompactRange:
    """Incremental Merkle tree state: the size and the roots of the perfect subtrees on the right edge.

    ``hashes`` holds one hash per set bit of ``size``, largest (leftmost) subtree first, so appending a
    leaf costs O(1) amortised hashing and computing the root O(log n).
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        frontier = list(hashes)
        if size < 0:
            raise ValueError(f"tree size must not be negative, got {size}")
        if len(frontier) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} needs {size.bit_count()} frontier hashes, got {len(frontier)}"
            )
        if any(len(h) != HASH_SIZE for h in frontier):
            raise ValueError(f"frontier hashes must be {HASH_SIZE} bytes")
        self._size = size
        self._hashes = frontier

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> CompactRange:
        """Build the state of the tree holding ``leaf_hashes`` in order."""
        tree = cls()
        tree.extend(leaf_hashes)
        return tree

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> CompactRange:
        """Restore a state produced by :meth:`to_state`; raise ``ValueError`` if it is not well formed."""
        size = state.get("size")
        hashes = state.get("hashes")
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError("compact range state: 'size' must be an integer")
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            raise ValueError("compact range state: 'hashes' must be a list of base64 strings")
        try:
            decoded = [base64.b64decode(h, validate=True) for h in hashes]
        except binascii.Error as exc:
            raise ValueError(f"compact range state: bad base64 hash: {exc}") from exc
        return cls(size, decoded)

    def to_state(self) -> dict[str, object]:
        """Return a JSON-serialisable snapshot (``size`` and base64 ``hashes``) for :meth:`from_state`."""
        return {"size": self._size, "hashes": [base64.b64encode(h).decode("ascii") for h in self._hashes]}

    @property
    def size(self) -> int:
        """Number of leaves in the tree."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Frontier hashes, largest subtree first."""
        return tuple(self._hashes)

    def copy(self) -> CompactRange:
        """Return an independent copy of this state."""
        return CompactRange(self._size, self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf, given by its leaf hash."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        hashes = self._hashes
        h = leaf_hash
        n = self._size
        while n & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            n >>= 1
        hashes.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaves in order."""
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """Return the tree root hash (``EMPTY_ROOT`` for the empty tree)."""
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            root = node_hash(h, root)
        return root


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


#: leaves taken per slice of the leaf hashes when computing a subtree root; over a file (a
#: `LeafFile`) each slice is one read rather than one read per leaf
_RANGE_CHUNK = 65_536


def _hash_range(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    tree = CompactRange()
    for start in range(lo, hi, _RANGE_CHUNK):
        tree.extend(leaf_hashes[start : min(start + _RANGE_CHUNK, hi)])
    return tree.root()


class SubtreeCache:
    """Roots of the complete, aligned subtrees of `2**base` leaves and larger, of one append-only
    list of leaves, computed once and kept (32 bytes per `2**base` leaves, times two for the levels
    above: 1.75 MB for 7M leaves at base 8).

    With it, the root of any range that RFC 9162's recursion asks for costs at most a few
    `2**base`-leaf reads and one hash per level, instead of hashing the whole range, so an inclusion
    proof over millions of records costs milliseconds, not seconds. `extend(leaves, size)` catches
    up with the leaves (only the new ones are read); a cache is for one list of leaves: build a new
    one if the leaves could have changed (`reset`)."""

    def __init__(self, base: int = 8) -> None:
        if base < 1:
            raise ValueError("base must be at least 1")
        self.base = base
        self.levels: list[list[bytes]] = [[]]

    @property
    def covered(self) -> int:
        """How many leaves the cache holds roots for (a multiple of `2**base`)."""
        return len(self.levels[0]) << self.base

    def reset(self) -> None:
        self.levels = [[]]

    def extend(self, leaf_hashes: Sequence[bytes], size: int) -> None:
        chunk = 1 << self.base
        while self.covered + chunk <= size:
            lo = self.covered
            self._push(0, _hash_range(leaf_hashes, lo, lo + chunk))

    def _push(self, level: int, h: bytes) -> None:
        while True:
            if len(self.levels) == level:
                self.levels.append([])
            nodes = self.levels[level]
            nodes.append(h)
            if len(nodes) % 2:
                return
            h, level = node_hash(nodes[-2], nodes[-1]), level + 1

    def get(self, lo: int, hi: int) -> bytes | None:
        """The root of [lo, hi) if it is a complete aligned subtree the cache holds, else None."""
        n = hi - lo
        if n < (1 << self.base) or n & (n - 1) or lo % n:
            return None
        level, k = n.bit_length() - 1 - self.base, lo // n
        if level < len(self.levels) and k < len(self.levels[level]):
            return self.levels[level][k]
        return None


def _subtree_root(leaf_hashes: Sequence[bytes], lo: int, hi: int, cache: SubtreeCache | None = None) -> bytes:
    if cache is None or hi - lo <= (1 << cache.base):
        return _hash_range(leaf_hashes, lo, hi)
    cached = cache.get(lo, hi)
    if cached is not None:
        return cached
    # MTH(D[lo:hi]) = HASH(0x01 || MTH(D[lo:lo+k]) || MTH(D[lo+k:hi])), k the largest power of two
    # below hi - lo (RFC 9162 §2.1.1); the left part is complete and aligned, so usually cached
    k = _split(hi - lo)
    return node_hash(
        _subtree_root(leaf_hashes, lo, lo + k, cache), _subtree_root(leaf_hashes, lo + k, hi, cache)
    )


def _check_size(leaf_hashes: Sequence[bytes], size: int) -> None:
    if size > len(leaf_hashes):
        raise ValueError(f"tree size {size} exceeds the {len(leaf_hashes)} leaf hashes given")


def inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, size: int, cache: SubtreeCache | None = None
) -> list[bytes]:
    """Return the inclusion proof of leaf ``index`` in the tree of size ``size`` (RFC 9162 §2.1.3.1).
    With a `cache` (of these leaves), it is brought up to `size` first and used for the subtrees."""
    _check_size(leaf_hashes, size)
    if cache is not None:
        cache.extend(leaf_hashes, size)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(_subtree_root(leaf_hashes, lo + k, hi, cache))
            hi = lo + k
        else:
            proof.append(_subtree_root(leaf_hashes, lo, lo + k, cache))
            lo += k
    proof.reverse()
    return proof


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int, size2: int) -> list[bytes]:
    """Return the consistency proof between tree sizes ``size1`` and ``size2`` (RFC 9162 §2.1.4.1)."""
    _check_size(leaf_hashes, size2)
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency proof needs 0 < size1 <= size2, got {size1} and {size2}")
    proof: list[bytes] = []
    m, lo, hi, complete = size1, 0, size2, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(_subtree_root(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_subtree_root(leaf_hashes, lo, lo + k))
            m -= k
            lo += k
            complete = False
    if not complete:
        proof.append(_subtree_root(leaf_hashes, lo, hi))
    proof.reverse()
    return proof


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise ProofError(f"proof hash {i} is {len(h)} bytes, expected {HASH_SIZE}")


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root`` (RFC 9162 §2.1.3.2).

    Raise :class:`ProofError` on any failure.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
    _check_proof_hashes(proof)
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof is too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short ({len(proof)} hashes)")
    if r != root:
        raise ProofError(
            f"inclusion proof for leaf {index} does not lead to the root of the tree of size {size}"
        )


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of the tree of ``size2`` with ``root2``.

    RFC 9162 §2.1.4.2; raise :class:`ProofError` on any failure.
    """
    if size1 < 0 or size2 < size1:
        raise ProofError(f"consistency needs 0 <= size1 <= size2, got {size1} and {size2}")
    if size1 == 0:
        raise ProofError("consistency from the empty tree is not provable")
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal but the consistency proof is not empty")
        if root1 != root2:
            raise ProofError(f"roots differ for the same tree size {size1}")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_proof_hashes(proof)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof is too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof is too short ({len(proof)} hashes)")
    if fr != root1:
        raise ProofError(f"consistency proof does not reproduce the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not reproduce the root of size {size2}")
