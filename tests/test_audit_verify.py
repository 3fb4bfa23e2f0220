"""Offline audit export verifier: a valid export passes and every kind of tampering is named."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.merkle import CompactRange, leaf_hash
from broker.audit.note import Checkpoint, sign_checkpoint
from broker.audit.verify import verify_export
from broker.errors import (
    BadCheckpointSignature,
    Equivocation,
    LogTruncated,
    MalformedExport,
    RecordEdited,
    RecordInserted,
    RecordRemoved,
    RecordReordered,
    UnknownCheckpointKey,
    VerifyError,
)

ORIGIN = "broker.example/audit"
KEY_NAME = "broker.example/audit"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)
TRUSTED = {KEY_NAME: KEY.public_key()}
ENCODER = msgspec.json.Encoder()


def _record(i: int) -> bytes:
    return ENCODER.encode(
        {
            "type": "record",
            "index": i,
            "time": f"2025-01-01T00:00:{i % 60:02d}.000000Z",
            "broker": "broker-1",
            "event": "accepted",
            "message_id": f"msg-{i}",
            "actor": "org-a",
            "envelope_sha256": "00" * 32,
        }
    )


def _checkpoint_line(size: int, root: bytes, key: Ed25519PrivateKey = KEY, name: str = KEY_NAME) -> bytes:
    note = sign_checkpoint(Checkpoint(ORIGIN, size, root), name, key)
    return ENCODER.encode({"type": "checkpoint", "note": note})


def _export(n: int, every: int = 100) -> list[bytes]:
    """Records 0..n-1 with a signed checkpoint line after every ``every`` records and at the end."""
    lines: list[bytes] = []
    tree = CompactRange()
    for i in range(n):
        rec = _record(i)
        lines.append(rec + b"\n")
        tree.append(leaf_hash(rec))
        if tree.size % every == 0 or i == n - 1:
            lines.append(_checkpoint_line(tree.size, tree.root()) + b"\n")
    return lines


def _root(n: int) -> bytes:
    return CompactRange.from_leaf_hashes(leaf_hash(_record(i)) for i in range(n)).root()


def _line_of(lines: list[bytes], index: int) -> int:
    return lines.index(_record(index) + b"\n")


def _is_checkpoint(line: bytes) -> bool:
    return b'"type":"checkpoint"' in line


def _expect(exc: type[VerifyError], lines: list[bytes], trusted_checkpoint: str | None = None) -> VerifyError:
    with pytest.raises(exc) as info:
        verify_export(lines, TRUSTED, ORIGIN, trusted_checkpoint=trusted_checkpoint)
    return info.value


def test_valid_export_passes() -> None:
    lines = _export(1050)
    seen: list[int] = []
    report = verify_export(lines, TRUSTED, ORIGIN, progress=seen.append)
    assert report.records == 1050
    assert report.checkpoints == 11
    assert report.root == _root(1050)
    assert report.verified_size == 1050
    assert report.records_per_second > 0
    assert seen[-1] == 1050
    # Lines without trailing newlines are accepted too.
    assert verify_export([line.rstrip(b"\n") for line in lines], TRUSTED, ORIGIN).records == 1050


def test_empty_and_unsigned_tail() -> None:
    assert verify_export([], TRUSTED, ORIGIN).records == 0
    lines = [*_export(250)[:-1], _record(250) + b"\n"]
    report = verify_export(lines, TRUSTED, ORIGIN)
    assert (report.records, report.verified_size) == (251, 200)


def test_trusted_checkpoint_passes() -> None:
    lines = _export(300)
    note = sign_checkpoint(Checkpoint(ORIGIN, 150, _root(150)), KEY_NAME, KEY)
    assert verify_export(lines, TRUSTED, ORIGIN, trusted_checkpoint=note).verified_size == 300


def test_late_checkpoint_line_is_checked_at_its_size() -> None:
    lines = _export(2100, every=3000)
    lines.insert(_line_of(lines, 2050), _checkpoint_line(1500, _root(1500)) + b"\n")
    assert verify_export(lines, TRUSTED, ORIGIN).checkpoints == 2
    # A wrong root at 1500 with nothing signed after it: the records do not match what was signed.
    lines = _export(2100, every=3000)[:-1]
    lines.insert(_line_of(lines, 2050), _checkpoint_line(1500, _root(1499)) + b"\n")
    err = _expect(RecordEdited, lines)
    assert (err.line, err.index) == (_line_of(lines, 2050), 0)
    # The same, followed by a checkpoint at 2100 that matches the records: the log forked.
    lines.append(_checkpoint_line(2100, _root(2100)) + b"\n")
    _expect(Equivocation, lines)


def test_edited_field() -> None:
    lines = _export(300)
    i = _line_of(lines, 150)
    lines[i] = lines[i].replace(b'"accepted"', b'"rejected"')
    err = _expect(RecordEdited, lines)
    assert err.exit_code == 10
    assert err.index == 100
    assert err.line == _line_of(lines, 199) + 2
    assert "records 100..199" in str(err)


def test_edited_record_with_gap_later_still_reports_edit_first() -> None:
    lines = _export(300)
    i = _line_of(lines, 150)
    lines[i] = lines[i].replace(b'"accepted"', b'"rejected"')
    del lines[_line_of(lines, 250)]
    _expect(RecordEdited, lines)


def test_removed_record() -> None:
    lines = _export(300)
    del lines[_line_of(lines, 150)]
    err = _expect(RecordRemoved, lines)
    assert (err.exit_code, err.index, err.line) == (11, 150, _line_of(lines, 151) + 1)
    assert "150..150" in str(err)


def test_removed_records_before_a_checkpoint() -> None:
    lines = _export(300)
    start, stop = _line_of(lines, 180), _line_of(lines, 199)
    del lines[start : stop + 1]
    err = _expect(RecordRemoved, lines)
    assert err.index == 180
    assert "180..199" in str(err)


def test_swapped_records() -> None:
    lines = _export(300)
    a, b = _line_of(lines, 150), _line_of(lines, 151)
    lines[a], lines[b] = lines[b], lines[a]
    err = _expect(RecordReordered, lines)
    assert (err.exit_code, err.index, err.line) == (12, 151, a + 1)


def test_record_moved_far() -> None:
    lines = _export(300)
    moved = lines.pop(_line_of(lines, 120))
    lines.insert(_line_of(lines, 180), moved)
    _expect(RecordReordered, lines)


def test_record_inserted_twice() -> None:
    lines = _export(300)
    i = _line_of(lines, 150)
    lines.insert(i + 1, lines[i])
    err = _expect(RecordInserted, lines)
    assert (err.exit_code, err.index, err.line) == (13, 150, i + 2)


def test_other_record_reusing_an_index() -> None:
    lines = _export(300)
    i = _line_of(lines, 150)
    lines.insert(i + 1, lines[i].replace(b'"accepted"', b'"released"'))
    _expect(RecordReordered, lines)


def test_log_cut_below_final_checkpoint() -> None:
    lines = _export(300)
    final = lines[-1]
    lines = [*lines[: _line_of(lines, 250)], final]
    err = _expect(LogTruncated, lines)
    assert (err.exit_code, err.index, err.line) == (14, 250, len(lines))


def test_log_cut_below_trusted_checkpoint() -> None:
    lines = _export(300)
    trusted_note = json.loads(lines[-1])["note"]
    cut = lines[: _line_of(lines, 250)]
    assert verify_export(cut, TRUSTED, ORIGIN).records == 250
    err = _expect(LogTruncated, cut, trusted_checkpoint=trusted_note)
    assert err.line is None
    assert "trusted checkpoint" in str(err)


def _resign(line: bytes, key: Ed25519PrivateKey, name: str) -> bytes:
    note: str = json.loads(line)["note"]
    _origin, size, root = note.split("\n")[:3]
    return _checkpoint_line(int(size), base64.b64decode(root), key, name) + b"\n"


def test_checkpoint_signature_altered() -> None:
    lines = _export(300)
    i = next(n for n, line in enumerate(lines) if _is_checkpoint(line))
    note: str = json.loads(lines[i])["note"]
    body, sig = note.split("\n\n")
    prefix, b64 = sig.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[20] ^= 0x80
    altered = f"{body}\n\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    lines[i] = ENCODER.encode({"type": "checkpoint", "note": altered}) + b"\n"
    err = _expect(BadCheckpointSignature, lines)
    assert (err.exit_code, err.line) == (15, i + 1)


def test_checkpoint_signed_by_unknown_key() -> None:
    lines = _export(300)
    i = len(lines) - 1
    lines[i] = _resign(lines[i], OTHER_KEY, "someone.else/log")
    err = _expect(UnknownCheckpointKey, lines)
    assert (err.exit_code, err.line) == (16, i + 1)
    # Same key name, different key: still not a trusted key.
    lines[i] = _resign(lines[i], OTHER_KEY, KEY_NAME)
    _expect(UnknownCheckpointKey, lines)


def test_equivocation_same_size() -> None:
    lines = _export(300)
    i = _line_of(lines, 199) + 1
    lines.insert(i + 1, _checkpoint_line(200, _root(199)) + b"\n")
    err = _expect(Equivocation, lines)
    assert (err.exit_code, err.line) == (17, i + 2)


def test_equivocation_with_trusted_checkpoint() -> None:
    lines = _export(300)
    forked = sign_checkpoint(Checkpoint(ORIGIN, 200, _root(199)), KEY_NAME, KEY)
    _expect(Equivocation, lines, trusted_checkpoint=forked)
    forked = sign_checkpoint(Checkpoint(ORIGIN, 150, _root(149)), KEY_NAME, KEY)
    _expect(Equivocation, lines, trusted_checkpoint=forked)


def test_earlier_checkpoint_inconsistent_with_later_one() -> None:
    lines = _export(300)
    i = _line_of(lines, 99) + 1
    assert _is_checkpoint(lines[i])
    lines[i] = _checkpoint_line(100, _root(99)) + b"\n"
    err = _expect(Equivocation, lines)
    assert err.line == _line_of(lines, 199) + 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json\n",
        b"\n",
        b"[1, 2]\n",
        b'{"type": "comment"}\n',
        b'{"index": 3}\n',
        b'{"type": "record"}\n',
        b'{"type": "record", "index": "150"}\n',
        b'{"type": "checkpoint"}\n',
        b'{"type": "checkpoint", "note": "x", "extra": 1}\n',
        b'{"type": "checkpoint", "note": "not a note\\n"}\n',
    ],
)
def test_garbage_line(garbage: bytes) -> None:
    lines = _export(300)
    lines.insert(_line_of(lines, 150), garbage)
    err = _expect(MalformedExport, lines)
    assert (err.exit_code, err.line) == (2, _line_of(lines, 150))


def test_checkpoint_for_other_origin() -> None:
    lines = _export(100)
    note = sign_checkpoint(Checkpoint("broker.example/other", 100, _root(100)), KEY_NAME, KEY)
    lines[-1] = ENCODER.encode({"type": "checkpoint", "note": note}) + b"\n"
    _expect(MalformedExport, lines)


def test_error_classes_are_distinct() -> None:
    classes = [
        MalformedExport,
        RecordEdited,
        RecordRemoved,
        RecordReordered,
        RecordInserted,
        LogTruncated,
        BadCheckpointSignature,
        UnknownCheckpointKey,
        Equivocation,
    ]
    assert len({c.exit_code for c in classes}) == len(classes)
    assert len({c.name for c in classes}) == len(classes)
    assert all(c.exit_code != 0 for c in classes)


def test_large_export() -> None:
    n = 100_000
    lines = _export(n, every=1000)
    report = verify_export(lines, TRUSTED, ORIGIN)
    assert report.records == n
    assert report.verified_size == n
    assert report.checkpoints == 100
    assert report.records_per_second > 0
