"""RFC 9162 Merkle tree: shared vectors, generated proofs and compact range state."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest

from broker.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from broker.errors import ProofError

VECTORS = Path(__file__).parent / "data" / "merkle"
INCLUSION = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").rglob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(data: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in data["proof"] or []]


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def test_vectors_present() -> None:
    assert len(INCLUSION) > 50
    assert len(CONSISTENCY) > 50
    assert any(not _load(p)["wantErr"] for p in INCLUSION)
    assert any(not _load(p)["wantErr"] for p in CONSISTENCY)


@pytest.mark.parametrize("path", INCLUSION, ids=_id)
def test_inclusion_vector(path: Path) -> None:
    v = _load(path)
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v), _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_id)
def test_consistency_vector(path: Path) -> None:
    v = _load(path)
    args = (v["size1"], v["size2"], _proof(v), _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def _reference_root(leaves: list[bytes]) -> bytes:
    """MTH from RFC 9162 §2.1.1, written recursively as in the RFC."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def test_hash_primitives() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # RFC 6962 test tree: the leaf hash of the empty string.
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert node_hash(b"a" * 32, b"b" * 32) != node_hash(b"b" * 32, b"a" * 32)


def test_generated_proofs_verify() -> None:
    rng = random.Random(9162)
    leaves = [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(70)]
    roots = [EMPTY_ROOT]
    tree = CompactRange()
    for h in leaves:
        tree.append(h)
        roots.append(tree.root())
    for size in range(1, 71):
        assert roots[size] == _reference_root(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(leaves, index, size)
            verify_inclusion(leaves[index], index, size, proof, roots[size])
            if size > 1:
                with pytest.raises(ProofError):
                    verify_inclusion(leaves[(index + 1) % size], index, size, proof, roots[size])
        for size1 in range(1, size + 1):
            proof = consistency_proof(leaves, size1, size)
            verify_consistency(size1, size, proof, roots[size1], roots[size])
            if size1 < size:
                with pytest.raises(ProofError):
                    verify_consistency(size1, size, proof, roots[size1 - 1], roots[size])


def test_compact_range_state_round_trip() -> None:
    rng = random.Random(6962)
    leaves = [leaf_hash(rng.randbytes(16)) for _ in range(70)]
    for size in range(71):
        tree = CompactRange.from_leaf_hashes(leaves[:size])
        assert tree.size == size
        assert len(tree.hashes) == size.bit_count()
        state = json.loads(json.dumps(tree.to_state()))
        restored = CompactRange.from_state(state)
        assert restored.size == size
        assert restored.root() == tree.root()
        restored.extend(leaves[size:])
        assert restored.root() == CompactRange.from_leaf_hashes(leaves).root()
    copy = tree.copy()
    copy.append(leaves[0])
    assert copy.size == tree.size + 1


@pytest.mark.parametrize(
    "state",
    [
        {"size": 3, "hashes": []},
        {"size": -1, "hashes": []},
        {"size": True, "hashes": []},
        {"size": 1, "hashes": ["not base64!"]},
        {"size": 1, "hashes": [base64.b64encode(b"short").decode()]},
        {"size": 1},
    ],
)
def test_compact_range_rejects_bad_state(state: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"compact range state|frontier|size"):
        CompactRange.from_state(state)


def test_compact_range_rejects_bad_leaf() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange().append(b"\x00" * 31)


def test_proof_generation_rejects_bad_arguments() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(4)]
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(leaves, 4, 4)
    with pytest.raises(ValueError, match="exceeds"):
        inclusion_proof(leaves, 0, 5)
    with pytest.raises(ValueError, match="0 < size1"):
        consistency_proof(leaves, 0, 4)
    with pytest.raises(ValueError, match="0 < size1"):
        consistency_proof(leaves, 3, 2)
    assert consistency_proof(leaves, 4, 4) == []
