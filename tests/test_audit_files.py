"""The audit writer's files: the leaf file (append, read, atomic rebuild), proofs over it equal to
proofs over memory, the read-only snapshot other processes serve from, hostile files (never a wrong
proof), and that a writer with `files` does not keep the leaves in memory."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import random
import stat
import sys
import types
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import broker.audit.leaves as leaves_mod
import broker.audit.merkle as merkle_mod
from broker.audit.leaves import LEAVES_NAME, NOTE_NAME, LeafFile, LeafHashes, write_note
from broker.audit.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_inclusion,
)
from broker.audit.note import Checkpoint, sign_checkpoint
from broker.audit.reader import read_log, split_lines
from broker.audit.records import AuditEvent
from broker.audit.snapshot import AuditSnapshot, RemoteAuditView
from broker.audit.writer import AuditWriter
from broker.errors import AuditFilesError, Problem
from broker.gateway.operators import AuditApi
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths
from broker.metrics.registry import Registry
from broker.nats.bus import Bus, BusSettings
from broker.nats.server import NatsServer
from broker.policy.defaults import ensure_defaults
from broker.policy.loader import load_policy
from broker.policy.model import Policy

VECTORS = Path(__file__).parent / "data" / "merkle"
#: the RFC 6962 test tree's leaf inputs (the tree the shared vectors' happy paths are over)
RFC6962_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ORIGIN = "coord-broker/files-test"
KEY_NAME = "broker:files-test"


def _hashes(n: int, seed: int = 32) -> list[bytes]:
    rng = random.Random(seed)
    return [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(n)]


def _file(path: Path, hashes: list[bytes]) -> LeafFile:
    f = LeafFile.create(path)
    f.extend(hashes)
    f.commit()
    return f


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tmp"))


class _CountingPread:
    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._real = os.pread
        mp.setattr(os, "pread", self)

    def __call__(self, fd: int, n: int, offset: int) -> bytes:
        self.calls += 1
        return self._real(fd, n, offset)


# -- the leaf file ---------------------------------------------------------------------------------


def test_leaf_file_append_read_slice_iter_len(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hs = _hashes(300)
    path = tmp_path / "audit" / LEAVES_NAME
    with LeafFile.create(path) as f:
        assert len(f) == 0 and list(f) == []
        f.append(hs[0])
        f.extend(hs[1:250])
        assert not path.exists()  # a rebuild is invisible until committed
        assert len(_temps(path.parent)) == 1
        f.commit()
        assert path.exists() and _temps(path.parent) == []
        f.extend(hs[250:])  # the same descriptor, after the replace
        assert len(f) == 300 and path.stat().st_size == 300 * 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f[0] == hs[0] and f[299] == hs[299] and f[-1] == hs[-1] and f[-300] == hs[0]
        for bad in (300, -301):
            with pytest.raises(IndexError):
                f[bad]
        for sl in (slice(0, 300), slice(10, 20), slice(5, 5), slice(290, 400), slice(-7, None),
                   slice(3, 90, 7), slice(200, 10, -3), slice(None, None, -1)):  # fmt: skip
            assert list(f[sl]) == hs[sl], sl
        preads = _CountingPread(monkeypatch)
        assert list(f[17:4000]) == hs[17:]
        assert preads.calls == 1  # a range is one read
        monkeypatch.setattr(leaves_mod, "CHUNK_LEAVES", 64)
        preads.calls = 0
        assert list(f) == hs
        assert preads.calls == 5  # 300 leaves in chunks of 64
        with pytest.raises(ValueError, match="32 bytes"):
            f.append(b"short")
        assert len(f) == 300
    assert f.closed
    with pytest.raises(AuditFilesError, match="closed"):
        f[0]


def test_leaf_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with _file(tmp_path / LEAVES_NAME, _hashes(3)):
            assert stat.S_IMODE((tmp_path / LEAVES_NAME).stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_in_memory_leaves_behave_the_same(tmp_path: Path) -> None:
    hs = _hashes(100)
    mem = LeafHashes()
    mem.extend(hs[:60])
    for h in hs[60:]:
        mem.append(h)
    with _file(tmp_path / LEAVES_NAME, hs) as f:
        assert len(mem) == len(f) == 100
        assert list(mem) == list(f) == hs
        for sl in (slice(0, 100), slice(3, 90, 7), slice(80, 10, -3), slice(50, 50)):
            assert list(mem[sl]) == list(f[sl]) == hs[sl]
        assert mem[-1] == f[-1] == hs[-1]


def test_read_only_reopen_sees_what_was_written(tmp_path: Path) -> None:
    hs = _hashes(50)
    path = tmp_path / LEAVES_NAME
    with _file(path, hs[:20]) as w:
        with LeafFile.open_readonly(path) as r:
            assert len(r) == 20 and list(r) == hs[:20]
            w.extend(hs[20:50])
            assert len(r) == 20  # a reader's length is fixed when it opens
            with pytest.raises(AuditFilesError, match="read-only"):
                r.append(hs[0])
        with LeafFile.open_readonly(path) as r:
            assert len(r) == 50 and list(r) == hs and r[49] == hs[49]
    with open(path, "ab") as raw:  # a partial trailing leaf is not a leaf
        raw.write(b"\x01" * 31)
    with LeafFile.open_readonly(path) as r:
        assert len(r) == 50
    with pytest.raises(AuditFilesError, match="cannot open"):
        LeafFile.open_readonly(tmp_path / "missing")


def test_rebuild_replaces_the_file_atomically(tmp_path: Path) -> None:
    old_hs, new_hs = _hashes(40, seed=1), _hashes(25, seed=2)
    path = tmp_path / LEAVES_NAME
    with _file(path, old_hs):
        pass
    before = LeafFile.open_readonly(path)
    rebuild = LeafFile.create(path)
    rebuild.extend(new_hs[:10])
    during = LeafFile.open_readonly(path)  # mid-rebuild: the old file, whole
    assert len(during) == 40 and list(during) == old_hs
    rebuild.commit()
    rebuild.extend(new_hs[10:])
    after = LeafFile.open_readonly(path)
    assert list(before) == list(during) == old_hs  # views opened earlier keep the old file
    assert list(after) == new_hs
    assert os.stat(path).st_ino != os.fstat(before._fd).st_ino
    for f in (before, during, after, rebuild):
        f.close()
    # an abandoned rebuild (recovery failed) leaves the file as it was, and no temporary behind
    abandoned = LeafFile.create(path)
    abandoned.extend(old_hs)
    abandoned.close()
    assert _temps(tmp_path) == []
    with LeafFile.open_readonly(path) as r:
        assert list(r) == new_hs
    # a crashed writer's temporary is removed by the next rebuild
    (tmp_path / f".{LEAVES_NAME}.0123456789ab.tmp").write_bytes(b"x" * 64)
    with LeafFile.create(path):
        assert len(_temps(tmp_path)) == 1


# -- proofs over the file --------------------------------------------------------------------------


def _happy(kind: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((VECTORS / kind).glob("*/happy-path.json"))]


def test_proofs_over_a_file_match_the_shared_vectors(tmp_path: Path) -> None:
    hs = [leaf_hash(x) for x in RFC6962_INPUTS]
    inclusion, consistency = _happy("inclusion"), _happy("consistency")
    assert len(inclusion) >= 5 and len(consistency) >= 5
    with _file(tmp_path / LEAVES_NAME, hs) as f:
        for v in inclusion:
            assert base64.b64decode(v["leafHash"]) == f[v["leafIdx"]]
            want = [base64.b64decode(p) for p in v["proof"] or []]
            assert inclusion_proof(f, v["leafIdx"], v["treeSize"]) == want, v
        for v in consistency:
            want = [base64.b64decode(p) for p in v["proof"] or []]
            assert consistency_proof(f, v["size1"], v["size2"]) == want, v


@pytest.mark.parametrize("chunk", [65_536, 7])
def test_proofs_over_a_file_equal_proofs_over_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(merkle_mod, "_RANGE_CHUNK", chunk)
    rng = random.Random(6962)
    hs = _hashes(1100, seed=chunk)
    with _file(tmp_path / LEAVES_NAME, hs) as f:
        sizes = [*range(1, 70), 127, 128, 129, 1000, 1100]
        for size in sizes:
            root = CompactRange.from_leaf_hashes(hs[:size]).root()
            indices = set(range(size)) if size < 70 else {0, size - 1, *rng.sample(range(size), 20)}
            for index in indices:
                proof = inclusion_proof(f, index, size)
                assert proof == inclusion_proof(hs, index, size)
                verify_inclusion(hs[index], index, size, proof, root)
            for size1 in {1, size, *rng.sample(range(1, size + 1), min(size, 5))}:
                assert consistency_proof(f, size1, size) == consistency_proof(hs, size1, size)


def test_a_proof_over_a_file_reads_ranges_not_leaves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hs = _hashes(5000)
    with _file(tmp_path / LEAVES_NAME, hs) as f:
        preads = _CountingPread(monkeypatch)
        proof = inclusion_proof(f, 1234, 5000)
        assert proof == inclusion_proof(hs, 1234, 5000)
        assert preads.calls <= 2 * len(proof)  # a read per subtree, not one per leaf (5000)


# -- the snapshot other processes read ------------------------------------------------------------


def _signed_folder(folder: Path, hs: list[bytes], size: int, key: Ed25519PrivateKey) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    with _file(folder / LEAVES_NAME, hs):
        pass
    note = sign_checkpoint(
        Checkpoint(ORIGIN, size, CompactRange.from_leaf_hashes(hs[:size]).root()), KEY_NAME, key
    )
    write_note(folder, note)
    return note


def test_snapshot_serves_what_the_files_hold(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    hs = _hashes(90)
    folder = tmp_path / "audit"
    snap = AuditSnapshot(folder, trusted={KEY_NAME: key.public_key()}, origin=ORIGIN)
    assert snap.checkpoint is None and snap.checkpoint_note is None  # nothing written yet
    with pytest.raises(IndexError):
        snap.proof(0)
    note = _signed_folder(folder, hs, 77, key)  # records past the checkpoint are in the file too
    assert stat.S_IMODE((folder / NOTE_NAME).stat().st_mode) & 0o022 == 0 and _temps(folder) == []
    assert snap.checkpoint_note == note
    cp = snap.checkpoint
    assert cp is not None and cp.size == 77
    for index in (0, 1, 40, 76):
        got_cp, got_note, proof = snap.proof(index)
        assert (got_cp, got_note) == (cp, note)
        assert proof == inclusion_proof(hs, index, 77)
        assert snap.leaf(index) == hs[index]
    for bad in (77, 89, -1):
        with pytest.raises(IndexError):
            snap.proof(bad)
    assert snap.leaf(89) == hs[89]
    with pytest.raises(IndexError):
        snap.leaf(90)
    # a new checkpoint is seen at once (the note is read again when the file changes)
    note2 = sign_checkpoint(Checkpoint(ORIGIN, 90, CompactRange.from_leaf_hashes(hs).root()), KEY_NAME, key)
    write_note(folder, note2)
    assert snap.checkpoint_note == note2
    assert snap.proof(89)[2] == inclusion_proof(hs, 89, 90)
    # without trusted keys the note is parsed (strictly) but its signature is not checked
    assert AuditSnapshot(folder).proof(5)[2] == inclusion_proof(hs, 5, 90)


async def test_remote_view_delegates_and_records_through_its_sink(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    hs = _hashes(10)
    note = _signed_folder(tmp_path, hs, 10, key)
    seen: list[AuditEvent] = []

    class Sink:
        async def record(self, ev: AuditEvent) -> asyncio.Future[int]:
            seen.append(ev)
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            fut.set_result(7)
            return fut

    view = RemoteAuditView(AuditSnapshot(tmp_path), Sink(), "coord.audit.x.log")
    assert view.subject == "coord.audit.x.log"
    assert view.checkpoint_note == note and view.checkpoint is not None and view.checkpoint.size == 10
    assert view.proof(3)[2] == inclusion_proof(hs, 3, 10) and view.leaf(3) == hs[3]
    ev = AuditEvent(event="tail-opened", time="2026-11-26T00:00:00.000000Z", actor="duty-officer")
    assert await (await view.record(ev)) == 7 and seen == [ev]


def _damage_flip(folder: Path) -> None:
    data = bytearray((folder / LEAVES_NAME).read_bytes())
    data[5 * 32 + 3] ^= 0x01
    (folder / LEAVES_NAME).write_bytes(bytes(data))


def _damage_truncate(folder: Path) -> None:
    os.truncate(folder / LEAVES_NAME, 60 * 32)


def _damage_remove(folder: Path) -> None:
    (folder / LEAVES_NAME).unlink()


def _damage_other_leaves(folder: Path) -> None:
    (folder / LEAVES_NAME).write_bytes(b"".join(_hashes(64, seed=99)))


@pytest.mark.parametrize(
    "damage", [_damage_flip, _damage_truncate, _damage_remove, _damage_other_leaves], ids=lambda f: f.__name__
)
def test_damaged_leaves_give_an_error_never_a_wrong_proof(tmp_path: Path, damage: Any) -> None:
    key = Ed25519PrivateKey.generate()
    hs = _hashes(64)
    _signed_folder(tmp_path, hs, 64, key)
    snap = AuditSnapshot(tmp_path, trusted={KEY_NAME: key.public_key()}, origin=ORIGIN)
    assert snap.proof(10)[2] == inclusion_proof(hs, 10, 64)
    damage(tmp_path)
    for index in (0, 5, 10, 63):
        with pytest.raises(AuditFilesError):
            snap.proof(index)


def test_a_file_cut_under_an_open_reader_is_an_error(tmp_path: Path) -> None:
    hs = _hashes(64)
    with _file(tmp_path / LEAVES_NAME, hs), LeafFile.open_readonly(tmp_path / LEAVES_NAME) as r:
        os.truncate(tmp_path / LEAVES_NAME, 30 * 32 + 5)
        assert r[29] == hs[29]
        with pytest.raises(AuditFilesError, match="ends before leaf 30"):
            r[30]
        with pytest.raises(AuditFilesError):
            inclusion_proof(r, 3, 64)


def _note_garbage(note: str, other: str) -> str:
    return "not a checkpoint\n"


def _note_cut(note: str, other: str) -> str:
    return note[: len(note) // 2]


def _note_resized(note: str, other: str) -> str:
    lines = note.split("\n")
    lines[1] = "63"  # the signature no longer covers the body
    return "\n".join(lines)


def _note_other_key(note: str, other: str) -> str:
    return other


def _note_binary(note: str, other: str) -> str:
    return "\udcff"  # written as invalid UTF-8 below


@pytest.mark.parametrize(
    "corrupt",
    [_note_garbage, _note_cut, _note_resized, _note_other_key, _note_binary],
    ids=lambda f: f.__name__,
)
def test_a_corrupt_note_is_an_error(tmp_path: Path, corrupt: Any) -> None:
    key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    hs = _hashes(64)
    note = _signed_folder(tmp_path, hs, 64, key)
    other = sign_checkpoint(
        Checkpoint(ORIGIN, 64, CompactRange.from_leaf_hashes(hs).root()), KEY_NAME, stranger
    )
    snap = AuditSnapshot(tmp_path, trusted={KEY_NAME: key.public_key()}, origin=ORIGIN)
    assert snap.checkpoint_note == note
    bad = corrupt(note, other)
    (tmp_path / NOTE_NAME).write_bytes(bad.encode("utf-8", "surrogateescape"))
    with pytest.raises(AuditFilesError, match="checkpoint"):
        snap.current()
    with pytest.raises(AuditFilesError):
        snap.proof(3)


def test_a_note_for_another_log_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    _signed_folder(tmp_path, _hashes(8), 8, key)
    for snap in (
        AuditSnapshot(tmp_path, trusted={KEY_NAME: key.public_key()}, origin="coord-broker/other"),
        AuditSnapshot(tmp_path, origin="coord-broker/other"),
    ):
        with pytest.raises(AuditFilesError, match="origin"):
            snap.current()


# -- against a live writer -------------------------------------------------------------------------


def _ev(i: int) -> AuditEvent:
    return AuditEvent(event="tail-opened", time="2026-11-26T00:00:00.000000Z", actor=f"op-{i}")


async def _record(w: AuditWriter, n: int) -> list[int]:
    futs = [await w.record(_ev(i)) for i in range(n)]
    return list(await asyncio.gather(*futs))


async def _checkpointed(w: AuditWriter) -> None:
    async with asyncio.timeout(20):
        while w.checkpoint is None or w.checkpoint.size != w.tree.size:
            await asyncio.sleep(0.02)


class _Peer:
    """A TLS transport as `client_identity` sees it: a verified certificate with one CN."""

    def __init__(self, cn: str) -> None:
        self.cn = cn

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peercert":
            return {"subject": ((("commonName", self.cn),),)}
        return default


class _Fixed:
    def __init__(self, policy: Policy) -> None:
        self.current = policy


async def _api_get(api: AuditApi, handler: Any, path: str, ident: str = "duty-officer") -> dict[str, Any]:
    resp = await handler(make_mocked_request("GET", path, transport=_Peer(ident)))
    body: dict[str, Any] = json.loads(resp.body)
    return body


async def test_snapshot_serves_the_writers_checkpoint_and_proofs(tmp_path: Path) -> None:
    state = StatePaths(tmp_path / "state")
    ensure_defaults(state)
    keyid, key = load_signing_key(state, "broker")
    folder = state.audit_dir
    folder.mkdir(parents=True)
    (folder / NOTE_NAME).write_text("stale note from a log that is gone\n")

    async with NatsServer(tmp_path / "nats") as srv, Bus(BusSettings(servers=(srv.url,), name="f")) as bus:
        await bus.wait_connected(10)
        writer = AuditWriter(
            bus,
            instance="files",
            key_name=keyid,
            signing_key=key,
            metrics=Registry(),
            checkpoint_interval_s=0.1,
            files=folder,
        )
        snap = AuditSnapshot(folder, trusted={keyid: key.public_key()}, origin=writer.origin)
        async with writer as w:
            await w.wait_ready(30)
            assert isinstance(w.leaves, LeafFile)
            assert not (folder / NOTE_NAME).exists()  # an empty log has no checkpoint
            assert snap.checkpoint is None
            assert sorted(await _record(w, 130)) == list(range(130))
            await _checkpointed(w)
            cp = w.checkpoint
            assert cp is not None and cp.size == 130
            assert snap.checkpoint_note == w.checkpoint_note and snap.checkpoint == cp
            for index in range(cp.size):
                assert snap.proof(index) == w.proof(index)
                assert snap.leaf(index) == w.leaf(index)
            with pytest.raises(IndexError):
                snap.proof(130)
            with pytest.raises(IndexError):
                w.proof(130)
            # the operators' API over the files, as a gateway process without the writer serves it
            sent: list[AuditEvent] = []

            class Sink:
                async def record(self, ev: AuditEvent) -> asyncio.Future[int]:
                    sent.append(ev)
                    return await w.record(ev)

            view = RemoteAuditView(snap, Sink(), w.subject)
            policy = load_policy(state.policy)
            api = AuditApi(policy=_Fixed(policy), audit=view, bus=bus, instance="files")
            local = AuditApi(policy=_Fixed(policy), audit=w, bus=bus, instance="files")
            remote_cp = await _api_get(api, api.checkpoint, "/v1/audit/checkpoint")
            assert remote_cp == await _api_get(local, local.checkpoint, "/v1/audit/checkpoint")
            assert remote_cp["note"] == w.checkpoint_note and remote_cp["size"] == 130
            for index in (0, 64, 129):
                path = f"/v1/audit/proof?index={index}"
                assert await _api_get(api, api.proof, path) == await _api_get(local, local.proof, path)
            with pytest.raises(Problem) as refused:
                await _api_get(api, api.proof, "/v1/audit/proof?index=130")
            assert refused.value.name == "not-found"
            with pytest.raises(Problem) as refused:
                await _api_get(api, api.proof, "/v1/audit/proof?index=1", ident="nsatu-liaison")
            assert refused.value.name == "forbidden"
            saved = {index: w.proof(index) for index in (0, 64, 120, 129)}
            os.truncate(folder / LEAVES_NAME, 100 * 32)  # damaged under the writer: 503, not a wrong proof
            with pytest.raises(Problem) as refused:
                await _api_get(api, api.proof, "/v1/audit/proof?index=3")
            assert refused.value.name == "unavailable"
            with pytest.raises(AuditFilesError):
                w.proof(120)
            before = LeafFile.open_readonly(folder / LEAVES_NAME)
        assert w.leaves.closed

        # a restarted writer rebuilds the leaf file from the log and replaces it whole
        stored = [ln for _, d in await read_log(bus, instance="files") for ln in split_lines(d)]
        records = [ln for ln in stored if ln.startswith(b'{"type":"record"')]
        async with AuditWriter(
            bus,
            instance="files",
            key_name=keyid,
            signing_key=key,
            metrics=Registry(),
            checkpoint_interval_s=0.1,
            files=folder,
        ) as w2:
            await w2.wait_ready(30)
            assert len(before) == 100  # a reader opened before the rebuild keeps its view
            with LeafFile.open_readonly(folder / LEAVES_NAME) as after:
                assert list(after) == [leaf_hash(r) for r in records]
            assert snap.checkpoint_note == w2.checkpoint_note == w.checkpoint_note
            for index, proof in saved.items():
                assert snap.proof(index) == w2.proof(index) == proof
            await _record(w2, 5)
            await _checkpointed(w2)
            assert snap.checkpoint is not None and snap.checkpoint.size == 135
            assert snap.proof(134) == w2.proof(134)
        before.close()
    assert _temps(folder) == []


def _reachable_leaf_storage(root: object, n: int) -> list[str]:
    """Objects reachable from `root` (not through the bus, the event loop, modules or code) that could
    hold n leaf hashes: a buffer of 16*n bytes or more, or a container of n/2 or more 32-byte hashes."""
    stop = (
        types.ModuleType,
        type,
        types.FunctionType,
        types.BuiltinFunctionType,
        asyncio.AbstractEventLoop,
        Bus,
    )
    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
    seen: set[int] = set()
    todo: deque[object] = deque([root])
    found: list[str] = []
    while todo:
        obj = todo.popleft()
        if id(obj) in seen or isinstance(obj, stop) or id(obj) in module_dicts:
            continue
        seen.add(id(obj))
        if isinstance(obj, bytes | bytearray | memoryview):
            if len(obj) >= 16 * n:
                found.append(f"{type(obj).__name__} of {len(obj)} bytes")
            continue
        if isinstance(obj, list | tuple | set | frozenset | deque | dict):
            items = obj.values() if isinstance(obj, dict) else obj
            hashes = sum(1 for x in items if isinstance(x, bytes) and len(x) == 32)
            if hashes >= n // 2:
                found.append(f"{type(obj).__name__} of {hashes} hashes")
        todo.extend(gc.get_referents(obj))
    return found


async def test_a_writer_with_files_keeps_no_leaves_in_memory(tmp_path: Path) -> None:
    state = StatePaths(tmp_path / "state")
    ensure_defaults(state)
    keyid, key = load_signing_key(state, "broker")
    n = 3000
    async with NatsServer(tmp_path / "nats") as srv, Bus(BusSettings(servers=(srv.url,), name="m")) as bus:
        await bus.wait_connected(10)
        found: dict[str, list[str]] = {}
        for name, files in (("ram", None), ("disk", state.audit_dir)):
            async with AuditWriter(
                bus, instance=name, key_name=keyid, signing_key=key, metrics=Registry(), files=files
            ) as w:
                await w.wait_ready(30)
                await _record(w, n)
                assert len(w.leaves) == n
                found[name] = _reachable_leaf_storage(w, n)
                if files is not None:
                    assert isinstance(w.leaves, LeafFile)
                    assert (files / LEAVES_NAME).stat().st_size == 32 * n
    # the walk does find the leaves where they are in memory, so finding none is meaningful
    assert found["ram"] == [f"bytearray of {32 * n} bytes"]
    assert found["disk"] == []
