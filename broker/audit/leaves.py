"""Where the audit writer keeps its leaf hashes, and the files it shares with other processes.

This module owns the audit folder's layout (`StatePaths.audit_dir`, `<state>/audit/`)::

    audit/
     ├── leaves            every record's RFC 9162 leaf hash, 32 bytes each, in index order (0600)
     └── checkpoint.note   the latest signed checkpoint, C2SP signed-note text (0644)

and the two leaf stores the writer can use, both a `Sequence[bytes]` of 32-byte hashes:

* `LeafHashes`: in memory, packed in one bytearray (no `files` folder: tests, tools);
* `LeafFile`: the append-only `leaves` file. It is a cache, rebuilt from the audit stream at every
  writer start: the rebuild is written under a temporary name and moved over `leaves` by `commit()`
  (`os.replace`), so a reader sees the old file or the complete new one, never half of it; the writer
  then keeps appending to the same descriptor. Appends are plain `os.write` (no fsync). Readers
  (`LeafFile.open_readonly`) take the length from the file size at open and read with `os.pread`: a
  range is one read, iteration reads large chunks.

The writer appends the leaves a checkpoint covers before it replaces `checkpoint.note` (`write_note`),
so a reader holding a checkpoint of size n finds at least n leaves, unless the files are damaged
(`AuditFilesError`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, overload

from broker.errors import AuditFilesError

__all__ = [
    "LEAF_SIZE",
    "LEAVES_NAME",
    "NOTE_NAME",
    "LeafFile",
    "LeafHashes",
    "LeafStore",
    "remove_note",
    "write_note",
]

LEAF_SIZE = 32
LEAVES_NAME = "leaves"
NOTE_NAME = "checkpoint.note"
#: leaves read per `os.pread` when iterating (2 MiB)
CHUNK_LEAVES = 65_536



class LeafStore(Sequence[bytes]):
    """Leaf hashes in index order; the writer appends, `commit` publishes, `close` releases."""

    @abstractmethod
    def extend(self, hashes: Iterable[bytes]) -> None: ...

    @abstractmethod
    def _read(self, first: int, count: int) -> bytes:
        """Leaves `first .. first+count-1`, packed, in one read."""

    @abstractmethod
    def __len__(self) -> int: ...

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        n = len(self)
        if isinstance(i, slice):
            r = range(*i.indices(n))
            if not r:
                return []
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            return _split(self._read(lo, hi - lo), r, lo)
        return self._read(_index(i, n), 1)

    def __iter__(self) -> Iterator[bytes]:
        end = len(self)
        for first in range(0, end, CHUNK_LEAVES):
            n = min(CHUNK_LEAVES, end - first)
            yield from _split(self._read(first, n), range(first, first + n), first)

    def append(self, h: bytes) -> None:
        self.extend((h,))

    def commit(self) -> None:
        """Make what was written so far visible to readers (a no-op where there are none)."""

    def close(self) -> None:
        """Release what the store holds (a no-op in memory)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _packed(hashes: Iterable[bytes]) -> bytes:
    data = b"".join(hashes)
    if len(data) % LEAF_SIZE:
        raise ValueError(f"leaf hashes must be {LEAF_SIZE} bytes each")
    return data


def _split(buf: bytes, positions: range, first: int) -> list[bytes]:
    return [buf[(j - first) * LEAF_SIZE : (j - first + 1) * LEAF_SIZE] for j in positions]


def _index(i: int, n: int) -> int:
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(i)
    return i


class LeafHashes(LeafStore):
    """Leaf hashes packed in one bytearray (32 bytes each): 1M records cost 32 MB, not ~100 MB."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def extend(self, hashes: Iterable[bytes]) -> None:
        self._buf += _packed(hashes)

    def __len__(self) -> int:
        return len(self._buf) // LEAF_SIZE

    def _read(self, first: int, count: int) -> bytes:
        return bytes(self._buf[first * LEAF_SIZE : (first + count) * LEAF_SIZE])


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _remove_stale_temps(path: Path) -> None:
    """Temporary files a crashed writer left behind (one writer per folder: none is in use)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


class LeafFile(LeafStore):
    """The `leaves` file: `create` for the writer (a rebuild), `open_readonly` for everyone else."""

    def __init__(self, fd: int, path: Path, count: int, *, writable: bool, temp: Path | None = None) -> None:
        self._fd = fd
        self.path = path
        self._count = count
        self._writable = writable
        self._temp = temp  # set until `commit` moves the rebuilt file over `path`
        self._broken: str | None = None

    @classmethod
    def create(cls, path: Path) -> LeafFile:
        """An empty file under a temporary name beside `path`, private (0600) from its first byte;
        `commit` replaces `path` with it."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_stale_temps(path)
        temp = _temp_name(path)
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # never wider than 0600, whatever the umask
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return cls(fd, path, 0, writable=True, temp=temp)

    @classmethod
    def open_readonly(cls, path: Path) -> LeafFile:
        """The file as it is now: its length is the whole leaves it holds at open (a trailing partial
        leaf is ignored). A later rebuild replaces the file and leaves this view as it was."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise AuditFilesError(f"cannot open the audit leaf file {path}: {exc.strerror}") from exc
        try:
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path, size // LEAF_SIZE, writable=False)

    # -- the writer's side -----------------------------------------------------------------------

    def extend(self, hashes: Iterable[bytes]) -> None:
        """Append leaves (one `os.write`). A failed write breaks the file for good: nothing more is
        appended (later leaves would land at the wrong offsets) and readers see it short."""
        if not self._writable:
            raise AuditFilesError(f"{self.path} is open read-only")
        if self._broken is not None:
            raise AuditFilesError(f"the audit leaf file is unusable since: {self._broken}")
        view = memoryview(_packed(hashes))
        n = len(view) // LEAF_SIZE
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._broken = f"{self.path}: {exc.strerror}"
            raise AuditFilesError(f"cannot append to the audit leaf file: {self._broken}") from exc
        self._count += n

    def commit(self) -> None:
        """Move the rebuilt file over `path` (atomic); appends continue on the same descriptor."""
        if self._temp is not None:
            os.replace(self._temp, self.path)
            self._temp = None

    def close(self) -> None:
        """Close the descriptor; a rebuild never committed is deleted, `path` left as it was."""
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            self._temp = None

    @property
    def closed(self) -> bool:
        return self._fd < 0

    # -- reading -----------------------------------------------------------------------------------

    def _read(self, first: int, count: int) -> bytes:
        """Leaves `first .. first+count-1` in one read (a short read means the file was cut)."""
        if self._fd < 0:
            raise AuditFilesError(f"{self.path} is closed")
        want = count * LEAF_SIZE
        offset = first * LEAF_SIZE
        try:
            buf = os.pread(self._fd, want, offset)
            while len(buf) < want:  # pread may return less; only an empty read is the end
                more = os.pread(self._fd, want - len(buf), offset + len(buf))
                if not more:
                    break
                buf += more
        except OSError as exc:
            raise AuditFilesError(f"cannot read the audit leaf file {self.path}: {exc.strerror}") from exc
        if len(buf) < want:
            raise AuditFilesError(
                f"the audit leaf file {self.path} ends before leaf {first + len(buf) // LEAF_SIZE}"
            )
        return buf

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"LeafFile({str(self.path)!r}, {self._count} leaves{', writable' if self._writable else ''})"


def write_note(folder: Path, note: str) -> None:
    """Replace `checkpoint.note` atomically (temporary file, `os.replace`). No fsync: like `leaves` it
    is rewritten by the writer at every start, from the audit stream."""
    path = folder / NOTE_NAME
    temp = _temp_name(path)
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(note.encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def remove_note(folder: Path) -> None:
    """No checkpoint (an empty log): a reader must not keep serving an older one."""
    with contextlib.suppress(FileNotFoundError):
        (folder / NOTE_NAME).unlink()
