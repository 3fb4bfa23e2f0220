"""`SubtreeCache`: inclusion proofs from cached subtree roots equal the RFC 9162 proofs computed from
every leaf, for every size and index tried, and read only a few leaves once the cache is warm."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import overload

import pytest

from broker.audit.merkle import CompactRange, SubtreeCache, inclusion_proof, leaf_hash, verify_inclusion
from broker.audit.note import Checkpoint
from broker.audit.proofs import checked_proof
from broker.errors import AuditFilesError


def leaves(n: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(hashlib.sha256(f"{seed}-{i}".encode()).digest()) for i in range(n)]


class Counting(Sequence[bytes]):
    """Leaves that count how many are read."""

    def __init__(self, items: list[bytes]) -> None:
        self.items, self.reads = items, 0

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        got = self.items[i]
        self.reads += len(got) if isinstance(i, slice) else 1
        return got


@pytest.mark.parametrize("base", [1, 2, 3, 5, 8])
def test_cached_proofs_equal_full_proofs_at_every_size(base: int) -> None:
    rng = random.Random(base)
    all_leaves = leaves(700, seed=base)
    cache = SubtreeCache(base)
    sizes = sorted({1, 2, 3, 31, 32, 33, 255, 256, 257, 512, 699, 700, *rng.sample(range(1, 701), 25)})
    for size in sizes:  # one cache, growing with the tree, as the writer's does
        for index in {0, size - 1, size // 2, *rng.sample(range(size), min(size, 8))}:
            assert inclusion_proof(all_leaves, index, size, cache) == inclusion_proof(all_leaves, index, size)
        assert cache.covered == (size >> base) << base


def test_cached_proofs_verify_against_the_root() -> None:
    all_leaves = leaves(5000, seed=7)
    root = CompactRange.from_leaf_hashes(all_leaves).root()
    cache = SubtreeCache(4)
    for index in (0, 1, 2047, 2048, 4095, 4096, 4999):
        verify_inclusion(
            all_leaves[index], index, 5000, inclusion_proof(all_leaves, index, 5000, cache), root
        )


def test_a_warm_cache_reads_only_a_few_leaves_per_proof() -> None:
    size = (1 << 16) + 123
    counted = Counting(leaves(size, seed=3))
    cache = SubtreeCache(6)
    inclusion_proof(counted, 5, size, cache)  # warms the cache: reads every complete chunk once
    assert counted.reads >= size - 64
    for index in (0, 777, 40_000, size - 1):
        counted.reads = 0
        inclusion_proof(counted, index, size, cache)
        # at most two partial chunks of 64 leaves per level of the proof, never the whole tree
        assert counted.reads <= 2 * 64 * 17, counted.reads
    counted.reads = 0
    inclusion_proof(counted, 40_000, size)  # without the cache: the whole tree
    assert counted.reads == size - 1  # every leaf but the proven one


def test_get_answers_only_complete_aligned_cached_subtrees() -> None:
    cache = SubtreeCache(2)
    cache.extend(leaves(20), 20)
    assert cache.covered == 20
    assert cache.get(0, 4) is not None and cache.get(16, 20) is not None and cache.get(0, 16) is not None
    assert cache.get(2, 6) is None  # not aligned
    assert cache.get(0, 12) is None  # not a power of two
    assert cache.get(0, 2) is None  # below the base
    assert cache.get(0, 32) is None  # beyond what is covered
    cache.reset()
    assert cache.covered == 0 and cache.get(0, 4) is None
    with pytest.raises(ValueError, match="base"):
        SubtreeCache(0)


def test_a_cache_of_other_leaves_is_refused_and_emptied() -> None:
    """Roots cached from other leaves (a swapped file) never yield a wrong proof: the proof fails to
    verify against the signed root, is refused, and the cache starts again."""
    mine, other = leaves(600, seed=1), leaves(600, seed=2)
    cp = Checkpoint("coord-broker/test", 600, CompactRange.from_leaf_hashes(mine).root())
    cache = SubtreeCache(3)
    cache.extend(other, 600)
    with pytest.raises(AuditFilesError):
        checked_proof(mine, 500, cp, cache)
    assert cache.covered == 0
    path = checked_proof(mine, 500, cp, cache)  # rebuilt from the right leaves
    assert path == inclusion_proof(mine, 500, 600)
