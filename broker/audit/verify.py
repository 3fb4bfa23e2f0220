"""Offline verifier of an audit export (ICD section 7, ``broker audit verify``).

This module owns the reading of an export and the naming of its first break. An export is JSON lines:

* a record line is the record exactly as hashed; only its ``"type": "record"`` and integer ``"index"``
  are read, and its leaf hash is ``SHA-256(0x00 || line)`` (the line without its ``\\n``);
* a checkpoint line is ``{"type": "checkpoint", "note": "<signed note>"}``, written after the records it
  covers; a checkpoint of size N is checked against the root of the first N records.

The verifier recomputes the tree incrementally, checks every checkpoint's signature and root, and raises a
:class:`VerifyError` subclass at the first break; each has a distinct ``exit_code`` and ``name`` and a
message naming the line and record index. The rules:

* index higher than expected (``e``): if record ``e`` appears later in the file the records are out of
  order (:class:`RecordReordered`, e.g. two records swapped), otherwise records are missing
  (:class:`RecordRemoved`);
* index lower than expected: a verbatim repeat of the earlier record with that index is
  :class:`RecordInserted` (a record inserted twice); any other line reusing a consumed index is
  :class:`RecordReordered`. A forged record given a fresh index shifts every later index, so it surfaces
  as a root mismatch (:class:`RecordEdited`) or, if indices are left alone, as one of the cases above;
* a checkpoint root that differs from the recomputed root is :class:`RecordEdited`, naming the range of
  records after the last matching checkpoint, unless a later signed checkpoint of at least that size does
  match the records: then the log itself signed two inconsistent trees (:class:`Equivocation`), as it is
  for two signed checkpoints of the same size with different roots. To tell the two apart a mismatch is
  held until the next checkpoint covering it or the end of the file; any other break found meanwhile is
  reported as the earlier :class:`RecordEdited`;
* a checkpoint (in the file, or ``trusted_checkpoint``) larger than the number of records present is
  :class:`LogTruncated`;
* a checkpoint with a failing trusted signature is :class:`BadCheckpointSignature`, one with no signature
  by a trusted key :class:`UnknownCheckpointKey`; a line that is not a record or checkpoint, or a
  checkpoint for another origin, is :class:`MalformedExport`.

Throughput is one SHA-256 per record plus the amortised tree update and a minimal msgspec decode. Memory is
32 bytes per record (the leaf hashes, to recognise repeated records and to compute the root at a size
already passed when a checkpoint line comes late) plus a tree snapshot every 1024 records.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.merkle import HASH_SIZE, CompactRange
from broker.audit.note import Checkpoint, verify_checkpoint
from broker.errors import (
    BadCheckpointSignature,
    BadNoteSignature,
    Equivocation,
    LogTruncated,
    MalformedExport,
    MalformedNote,
    RecordEdited,
    RecordInserted,
    RecordRemoved,
    RecordReordered,
    UnknownCheckpointKey,
    UnknownNoteKey,
    VerifyError,
    WrongOrigin,
)

__all__ = [
    "VerifyReport",
    "verify_export",
]

_SNAPSHOT_EVERY = 1024  # power of two
_PROGRESS_EVERY = 1 << 16  # power of two












@dataclass(frozen=True)
class VerifyReport:
    """Outcome of a successful verification.

    ``records`` is the tree size recomputed from the export and ``root`` its root; ``verified_size`` is the
    largest size vouched for by a verified checkpoint (records beyond it are not yet signed).
    """

    records: int
    checkpoints: int
    root: bytes
    verified_size: int
    seconds: float

    @property
    def records_per_second(self) -> float:
        """Verification throughput."""
        return self.records / self.seconds if self.seconds > 0 else float(self.records)


class _Head(msgspec.Struct):
    """The only fields read from a line; everything else in a record is opaque bytes."""

    type: str
    index: int | None = None


class _CheckpointLine(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    note: str


_HEAD_DECODER = msgspec.json.Decoder(_Head)
_CHECKPOINT_DECODER = msgspec.json.Decoder(_CheckpointLine)


@dataclass(frozen=True)
class _Claim:
    """A verified signed checkpoint awaiting, or undergoing, comparison with the records."""

    size: int
    root: bytes
    line: int | None  # None for the trusted checkpoint

    @property
    def where(self) -> str:
        return _where(self.line)


def _where(line: int | None) -> str:
    return "the trusted checkpoint" if line is None else f"the checkpoint at line {line}"


class _Verifier:
    def __init__(
        self,
        trusted: Mapping[str, Ed25519PublicKey],
        origin: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        self._trusted = trusted
        self._origin = origin
        self._progress = progress
        self._tree = CompactRange()
        self._leaves = bytearray()
        self._snapshots = [CompactRange()]
        self._signed: dict[int, _Claim] = {}
        self._pending: dict[int, list[_Claim]] = {}
        self._next_check = -1
        self._mismatch: _Claim | None = None
        self._verified_size = 0
        self._checkpoints = 0

    def run(self, lines: Iterable[bytes], trusted_checkpoint: str | None) -> VerifyReport:
        start = time.perf_counter()
        try:
            if trusted_checkpoint is not None:
                self._claim(self._open_note(trusted_checkpoint, None), None)
            self._consume(enumerate(lines, 1))
            self._finish()
        except VerifyError as err:
            if self._mismatch is not None and not isinstance(err, Equivocation):
                raise self._edited(self._mismatch) from err
            raise
        if self._progress is not None:
            self._progress(self._tree.size)
        return VerifyReport(
            records=self._tree.size,
            checkpoints=self._checkpoints,
            root=self._tree.root(),
            verified_size=self._verified_size,
            seconds=time.perf_counter() - start,
        )

    def _consume(self, numbered: Iterator[tuple[int, bytes]]) -> None:
        decode = _HEAD_DECODER.decode
        sha256 = hashlib.sha256
        append = self._tree.append
        leaves = self._leaves
        count = 0
        for lineno, raw in numbered:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            try:
                head = decode(line)
            except msgspec.MsgspecError as exc:
                raise MalformedExport(
                    f"line {lineno} is not a record or checkpoint: {exc}", line=lineno
                ) from exc
            if head.type == "record":
                if head.index != count:
                    self._out_of_sequence(head.index, line, lineno, numbered)
                leaf = sha256(b"\x00" + line).digest()
                leaves += leaf
                append(leaf)
                count += 1
                if count == self._next_check:
                    self._reach(count)
                if not count & (_SNAPSHOT_EVERY - 1):
                    self._snapshots.append(self._tree.copy())
                    if self._progress is not None and not count & (_PROGRESS_EVERY - 1):
                        self._progress(count)
            elif head.type == "checkpoint":
                self._checkpoint_line(line, lineno)
            else:
                raise MalformedExport(f"line {lineno} has unknown type {head.type!r}", line=lineno)

    def _checkpoint_line(self, line: bytes, lineno: int) -> None:
        try:
            note = _CHECKPOINT_DECODER.decode(line).note
        except msgspec.MsgspecError as exc:
            raise MalformedExport(f"line {lineno} is not a checkpoint line: {exc}", line=lineno) from exc
        self._claim(self._open_note(note, lineno), lineno)
        self._checkpoints += 1

    def _open_note(self, note: str, lineno: int | None) -> Checkpoint:
        where = _where(lineno)
        try:
            return verify_checkpoint(note, self._trusted, self._origin)
        except BadNoteSignature as exc:
            raise BadCheckpointSignature(f"{where} has a bad signature: {exc}", line=lineno) from exc
        except UnknownNoteKey as exc:
            raise UnknownCheckpointKey(f"{where} is not signed by a trusted key: {exc}", line=lineno) from exc
        except (MalformedNote, WrongOrigin) as exc:
            raise MalformedExport(f"{where} is not a checkpoint of this log: {exc}", line=lineno) from exc

    def _claim(self, cp: Checkpoint, lineno: int | None) -> None:
        claim = _Claim(cp.size, cp.root, lineno)
        earlier = self._signed.get(cp.size)
        if earlier is not None:
            if earlier.root != cp.root:
                raise Equivocation(
                    f"{claim.where} and {earlier.where} sign different roots for tree size {cp.size}",
                    line=lineno,
                )
            return
        self._signed[cp.size] = claim
        size = self._tree.size
        if cp.size <= size:
            self._compare(claim, self._tree.root() if cp.size == size else self._root_at(cp.size))
        else:
            self._pending.setdefault(cp.size, []).append(claim)
            self._next_check = min(self._pending)

    def _reach(self, size: int) -> None:
        root = self._tree.root()
        for claim in self._pending.pop(size):
            self._compare(claim, root)
        self._next_check = min(self._pending, default=-1)

    def _root_at(self, size: int) -> bytes:
        tree = self._snapshots[size // _SNAPSHOT_EVERY].copy()
        leaves = self._leaves
        for i in range(tree.size, size):
            tree.append(bytes(leaves[i * HASH_SIZE : (i + 1) * HASH_SIZE]))
        return tree.root()

    def _compare(self, claim: _Claim, root: bytes) -> None:
        mismatch = self._mismatch
        if claim.root == root:
            if mismatch is not None and claim.size >= mismatch.size:
                raise Equivocation(
                    f"{claim.where} (size {claim.size}) matches the records but {mismatch.where} "
                    f"(size {mismatch.size}) is inconsistent with it",
                    line=claim.line,
                )
            self._verified_size = max(self._verified_size, claim.size)
        elif mismatch is None:
            self._mismatch = claim
        elif claim.size >= mismatch.size:
            raise self._edited(mismatch)

    def _edited(self, claim: _Claim) -> RecordEdited:
        first = self._verified_size
        return RecordEdited(
            f"records edited: the root of records 0..{claim.size - 1} does not match {claim.where}; "
            f"the change is in records {first}..{claim.size - 1}",
            line=claim.line,
            index=first,
        )

    def _out_of_sequence(
        self, index: int | None, line: bytes, lineno: int, rest: Iterator[tuple[int, bytes]]
    ) -> None:
        expected = self._tree.size
        if index is None or index < 0:
            raise MalformedExport(f"record at line {lineno} has no valid index", line=lineno)
        if index > expected:
            later = _find_record(rest, expected)
            if later is None:
                raise RecordRemoved(
                    f"records removed: line {lineno} holds record {index} but records "
                    f"{expected}..{index - 1} are missing",
                    line=lineno,
                    index=expected,
                )
            raise RecordReordered(
                f"records reordered: line {lineno} holds record {index} where record {expected} was "
                f"expected; record {expected} comes later, at line {later}",
                line=lineno,
                index=index,
            )
        leaf = hashlib.sha256(b"\x00" + line).digest()
        if self._leaves[index * HASH_SIZE : (index + 1) * HASH_SIZE] == leaf:
            raise RecordInserted(
                f"record inserted: line {lineno} repeats record {index} where record {expected} was expected",
                line=lineno,
                index=index,
            )
        raise RecordReordered(
            f"records reordered: line {lineno} holds a record with index {index}, already used, where "
            f"record {expected} was expected",
            line=lineno,
            index=index,
        )

    def _finish(self) -> None:
        if self._pending:
            claim = self._pending[min(self._pending)][0]
            size = self._tree.size
            raise LogTruncated(
                f"log truncated: {claim.where} covers {claim.size} records but the export holds {size}; "
                f"records {size}..{claim.size - 1} are missing",
                line=claim.line,
                index=size,
            )
        if self._mismatch is not None:
            raise self._edited(self._mismatch)


def _find_record(rest: Iterator[tuple[int, bytes]], index: int) -> int | None:
    """Return the line number of the first later record with ``index``, ignoring unreadable lines."""
    for lineno, raw in rest:
        try:
            head = _HEAD_DECODER.decode(raw.rstrip(b"\n"))
        except msgspec.MsgspecError:
            continue
        if head.type == "record" and head.index == index:
            return lineno
    return None


def verify_export(
    lines: Iterable[bytes],
    trusted: Mapping[str, Ed25519PublicKey],
    origin: str,
    *,
    trusted_checkpoint: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify an audit export read as byte lines (``\\n`` optional) and return what was verified.

    ``trusted`` maps checkpoint key names to Ed25519 public keys and ``origin`` names the log. A
    ``trusted_checkpoint`` note obtained out of band (an earlier checkpoint, a witness copy) is checked
    like an extra checkpoint line, so an export cut below it or contradicting it fails. ``progress`` is
    called with the number of records verified every 65536 records and at the end. Raise a
    :class:`VerifyError` subclass at the first break.
    """
    return _Verifier(trusted, origin, progress).run(lines, trusted_checkpoint)
