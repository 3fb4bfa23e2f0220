"""Checkpoints and inclusion proofs for a process without the audit writer: read from its files.

A gateway worker on the writer's host (same state folder) serves `GET /v1/audit/checkpoint` and
`GET /v1/audit/proof` from `<state>/audit/` (layout in `broker.audit.leaves`): `AuditSnapshot` reads
`checkpoint.note` (parsed strictly, and its signature verified when trusted keys are given; cached
by the file's identity) and opens `leaves` afresh for every proof, since a writer restart replaces
it. Every proof, here and in the writer, is checked against the signed root before it is returned
(`checked_proof`, O(log n)): short, damaged or mismatched files give `AuditFilesError`, never a
wrong proof. `RemoteAuditView` pairs a snapshot with an `AuditSink` (events go to the writer through
`COORD_AUDIT_IN`) to give the operators' API everything it needs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.leaves import LEAVES_NAME, NOTE_NAME, LeafFile
from broker.audit.merkle import SubtreeCache
from broker.audit.note import Checkpoint, parse_checkpoint, verify_checkpoint
from broker.audit.proofs import checked_proof
from broker.audit.records import AuditEvent, AuditSink
from broker.errors import AuditFilesError, NoteError

__all__ = ["AuditSnapshot", "RemoteAuditView"]

#: a checkpoint note is a few hundred bytes; anything much larger is not one
NOTE_MAX_BYTES = 64 * 1024


class AuditSnapshot:
    """Read-only view of the audit files in `folder` (`StatePaths.audit_dir`).

    With `trusted` (key name -> public key, e.g. the policy's broker keys) the note's signature must
    verify by one of them, and with `origin` it must be that log's (`coord-broker/<instance>`);
    without them it is only parsed, strictly."""

    def __init__(
        self,
        folder: Path,
        *,
        trusted: Mapping[str, Ed25519PublicKey] | None = None,
        origin: str | None = None,
    ) -> None:
        self.folder = folder
        self._trusted = dict(trusted) if trusted is not None else None
        self._origin = origin
        self._cached: tuple[tuple[int, int, int, int], Checkpoint, str] | None = None
        self._cache = SubtreeCache()  # subtree roots of the leaf file, for fast proofs
        self._cache_of: tuple[int, int] | None = None  # (device, inode) of the file they are of

    @property
    def note_path(self) -> Path:
        return self.folder / NOTE_NAME

    @property
    def leaves_path(self) -> Path:
        return self.folder / LEAVES_NAME

    def current(self) -> tuple[Checkpoint, str] | None:
        """The latest checkpoint and its note text as the files hold them now (None: none yet)."""
        try:
            with open(self.note_path, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
                if self._cached is not None and self._cached[0] == key:
                    return self._cached[1], self._cached[2]
                raw = f.read(NOTE_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditFilesError(f"cannot read {self.note_path}: {exc.strerror}") from exc
        cp, note = self._parse(raw)
        self._cached = (key, cp, note)
        return cp, note

    def _parse(self, raw: bytes) -> tuple[Checkpoint, str]:
        if len(raw) > NOTE_MAX_BYTES:
            raise AuditFilesError(f"{self.note_path} is larger than a checkpoint note")
        try:
            note = raw.decode("utf-8")
            if self._trusted is not None:
                cp = verify_checkpoint(note, self._trusted, self._origin)
            else:
                cp = parse_checkpoint(note)[0]
                if self._origin is not None and cp.origin != self._origin:
                    raise NoteError(f"checkpoint is for origin {cp.origin!r}, expected {self._origin!r}")
        except (UnicodeDecodeError, NoteError) as exc:
            raise AuditFilesError(f"{self.note_path} is not a valid checkpoint: {exc}") from exc
        return cp, note

    @property
    def checkpoint(self) -> Checkpoint | None:
        got = self.current()
        return got[0] if got is not None else None

    @property
    def checkpoint_note(self) -> str | None:
        got = self.current()
        return got[1] if got is not None else None

    def proof(self, index: int) -> tuple[Checkpoint, str, list[bytes]]:
        """Like `AuditWriter.proof`: IndexError unless `0 <= index < size` of the latest checkpoint;
        `AuditFilesError` when the files cannot give a proof that verifies."""
        got = self.current()
        if got is None or not 0 <= index < got[0].size:
            raise IndexError(index)
        cp, note = got
        with LeafFile.open_readonly(self.leaves_path) as leaves:
            ident = self._file_identity()
            if ident != self._cache_of:  # the writer rebuilt the file: roots of the old one are dropped
                self._cache.reset()
                self._cache_of = ident
            return cp, note, checked_proof(leaves, index, cp, self._cache)

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = self.leaves_path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def leaf(self, index: int) -> bytes:
        """The leaf hash of record `index` (IndexError if the file holds no such record)."""
        if index < 0:
            raise IndexError(index)
        with LeafFile.open_readonly(self.leaves_path) as leaves:
            return leaves[index]


class RemoteAuditView:
    """The operators' API's audit for a process without the writer: checkpoints and proofs from an
    `AuditSnapshot`, its own events (`tail-opened`, `tail-closed`) to any `AuditSink`."""

    def __init__(self, snapshot: AuditSnapshot, sink: AuditSink, subject: str) -> None:
        self.snapshot = snapshot
        self.sink = sink
        self.subject = subject

    @property
    def checkpoint(self) -> Checkpoint | None:
        return self.snapshot.checkpoint

    @property
    def checkpoint_note(self) -> str | None:
        return self.snapshot.checkpoint_note

    def proof(self, index: int) -> tuple[Checkpoint, str, list[bytes]]:
        return self.snapshot.proof(index)

    def leaf(self, index: int) -> bytes:
        return self.snapshot.leaf(index)

    async def record(self, ev: AuditEvent) -> asyncio.Future[int]:
        return await self.sink.record(ev)
