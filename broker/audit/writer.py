"""The audit writer: one task per broker instance that numbers, hashes, stores and checkpoints.

Producers call `record()`, which waits while the bounded queue is full (backpressure, never a drop)
and returns a future that resolves to the record's index once JetStream has acknowledged it.

Storage: each JetStream message on `coord.audit.log` carries a run of consecutive export lines
(records, then possibly a checkpoint line), so one acknowledged round trip stores hundreds of
records in order; its `Nats-Msg-Id` is `audit-<first index>` so a retried batch dedupes. The
concatenation of all messages, in stream order, is exactly `broker audit export`'s output.

On start the writer reads the whole log back, recomputes the tree, and refuses to continue
(`AuditIntegrityError`) unless the recomputed root at its last checkpoint's size equals that
checkpoint's root and the checkpoint's signature verifies: a new checkpoint is never signed over
a log that is inconsistent with an earlier one.

Files (`files=StatePaths.audit_dir`, layout in `broker.audit.leaves`): the leaf hashes that inclusion
proofs need live in `<files>/leaves`, not in memory (32 B a record: 220 MB at 7M records), rebuilt from
the log at every start and moved into place whole; every checkpoint signed or recovered is written to
`<files>/checkpoint.note` after the leaves it covers are in the leaf file, so other processes on the
host can serve proofs from the two files (`broker.audit.snapshot.AuditSnapshot`). The files are a
cache: a folder the writer cannot use stops it at start, but a write that fails later is logged and
never stops the log (proofs are refused until the next start). Without `files` the leaves stay in
memory (`LeafHashes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.aio import AsyncResource, Backoff, stop_task
from broker.audit.inbox import consume_inbox
from broker.audit.leaves import LEAVES_NAME, LeafFile, LeafHashes, LeafStore, remove_note, write_note
from broker.audit.merkle import CompactRange, SubtreeCache, leaf_hash
from broker.audit.note import Checkpoint, log_origin, sign_checkpoint, verify_checkpoint
from broker.audit.proofs import checked_proof
from broker.audit.reader import read_log, split_lines
from broker.audit.records import RECORD_ENCODER, AuditEvent, make_record
from broker.audit.repeats import Repeats, repeat_key
from broker.errors import AuditFilesError, AuditIntegrityError, BusUnavailable, NoteError
from broker.metrics.registry import Registry
from broker.nats.bus import Bus
from broker.nats.names import audit_subject

log = structlog.get_logger(__name__)





# records are at most ~1 KB (fields bounded by the schemas), so a batch stays well under the 1 MB
# NATS payload limit
BATCH_MAX_RECORDS = 500



class _LineKind(msgspec.Struct):
    type: str
    note: str | None = None


_LINE = msgspec.json.Decoder(_LineKind)


@dataclass(frozen=True, slots=True)
class _Pending:
    ev: AuditEvent
    done: asyncio.Future[int]


class AuditWriter(AsyncResource):
    """Implements `AuditSink`. Use as `async with AuditWriter(...) as audit:`."""

    def __init__(
        self,
        bus: Bus,
        *,
        instance: str,
        key_name: str,
        signing_key: Ed25519PrivateKey,
        metrics: Registry,
        queue_max: int = 10_000,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 10.0,
        inbox: bool = False,
        files: Path | None = None,
    ) -> None:
        self.bus = bus
        self.files = files
        self.inbox = inbox
        self.instance = instance
        self.origin = log_origin(instance)
        self.subject = audit_subject(instance)
        self.key_name = key_name
        self._key = signing_key
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_max)
        self._every = checkpoint_every
        self._interval = checkpoint_interval_s
        self.tree = CompactRange()
        self.leaves: LeafStore = LeafHashes()  # a LeafFile once recovered, when `files` is given
        self._proof_cache = SubtreeCache()  # subtree roots of `leaves`, for fast proofs
        self._repeats = Repeats()
        # the latest signed checkpoint and its note, replaced together as one tuple: a proof computed
        # in another thread (the operators' API) reads both at once and never a mix of two
        self.head: tuple[Checkpoint, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_cp_time = time.monotonic()
        self.ready = asyncio.Event()
        self.m_records = metrics.counter(
            "coord_audit_records_total", "audit records stored, by event", ("event",)
        )
        metrics.gauge("coord_audit_queue_depth", "audit records waiting for the writer", self._queue.qsize)
        metrics.gauge("coord_audit_tree_size", "records in the audit Merkle tree", lambda: self.tree.size)

    async def _open(self) -> None:
        # not `_spawn`: on close the queue is drained before the task is stopped (see `_close`)
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def _close(self) -> None:
        await self.drain_and_stop()

    async def drain_and_stop(self, drain_timeout: float = 5.0) -> None:
        """Write what producers handed over (for at most `drain_timeout`), sign the final checkpoint,
        stop the task and close the leaf file."""
        if self._task is None:
            return
        if self.ready.is_set() and self.bus.connected and not self._task.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout):
                    await self._queue.join()  # what producers handed over is written first
        await stop_task(self._task, every_s=5.0)  # time for the final checkpoint before a second cancel
        self._task = None
        self.leaves.close()

    async def record(self, ev: AuditEvent) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(ev, fut))
        return fut

    async def wait_ready(self, timeout: float) -> None:
        """Until recovery is done; raises what stopped the writer (e.g. AuditIntegrityError)."""
        assert self._task is not None  # noqa: S101 - entered
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        if self._task in done:
            self._task.result()
            raise AuditIntegrityError("the audit writer stopped before it was ready")
        if ready not in done:
            raise BusUnavailable(f"audit log not recovered within {timeout:.0f} s")

    @property
    def checkpoint(self) -> Checkpoint | None:
        return self.head[0] if self.head is not None else None

    @property
    def checkpoint_note(self) -> str | None:
        return self.head[1] if self.head is not None else None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def proof(self, index: int) -> tuple[Checkpoint, str, list[bytes]]:
        """Inclusion proof of record `index` against the latest signed checkpoint, verified against
        its root; IndexError outside it, `AuditFilesError` if the leaf file is damaged."""
        head = self.head  # one read: checkpoint and note of the same signing
        if head is None or not 0 <= index < head[0].size:
            raise IndexError(index)
        cp, note = head
        return cp, note, checked_proof(self.leaves, index, cp, self._proof_cache)

    def leaf(self, index: int) -> bytes:
        """The leaf hash of record `index` (IndexError if there is no such record yet)."""
        if index < 0:
            raise IndexError(index)
        return self.leaves[index]

    # -- the task ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._recover()
                break
            except BusUnavailable as exc:
                log.warning("audit.recover_waiting", error=str(exc))
                await asyncio.sleep(0.5)
        self.ready.set()
        inbox = asyncio.create_task(consume_inbox(self.bus, self), name="audit-inbox") if self.inbox else None
        try:
            while True:
                batch = await self._next_batch()
                await self._write(batch)
        except asyncio.CancelledError:
            if inbox is not None:
                await stop_task(inbox)
            await self._final_checkpoint()
            raise

    async def _recover(self) -> None:
        await self.bus.wait_ready()
        stored = await read_log(self.bus, instance=self.instance)
        leaves = self._new_leaves()
        try:
            tree, note, cp = self._replay(stored, leaves)
            leaves.commit()  # the rebuilt leaf file replaces the old one whole
        except BaseException:
            leaves.close()
            raise
        old, self.leaves = self.leaves, leaves
        self._proof_cache = SubtreeCache()
        old.close()
        self.tree, self.head = tree, (cp, note) if cp is not None and note is not None else None
        self._publish_note(note)
        log.info("audit.recovered", size=tree.size, checkpoint=cp.size if cp else None)

    def _new_leaves(self) -> LeafStore:
        if self.files is None:
            return LeafHashes()
        return LeafFile.create(self.files / LEAVES_NAME)

    def _replay(
        self, stored: list[tuple[int, bytes]], leaves: LeafStore
    ) -> tuple[CompactRange, str | None, Checkpoint | None]:
        """Recompute the tree and the leaves from the stored log; check every stored checkpoint."""
        tree = CompactRange()
        note: str | None = None
        cp: Checkpoint | None = None
        trusted = {self.key_name: self._key.public_key()}
        for _seq, data in stored:
            hashes: list[bytes] = []
            for line in split_lines(data):
                kind = _LINE.decode(line)
                if kind.type == "record":
                    self._repeats.remember_line(line, tree.size)
                    h = leaf_hash(line)
                    tree.append(h)
                    hashes.append(h)
                elif kind.type == "checkpoint" and kind.note is not None:
                    try:
                        c = verify_checkpoint(kind.note, trusted, self.origin)
                    except NoteError as exc:
                        raise AuditIntegrityError(f"stored checkpoint does not verify: {exc}") from exc
                    if c.size != tree.size or c.root != tree.root():
                        raise AuditIntegrityError(
                            f"stored log is inconsistent with its checkpoint of size {c.size}"
                        )
                    note, cp = kind.note, c
            leaves.extend(hashes)
        return tree, note, cp

    def _publish_note(self, note: str | None) -> None:
        """Write the checkpoint for other processes; its leaves are already in the leaf file."""
        if self.files is None:
            return
        try:
            if note is None:
                remove_note(self.files)
            else:
                write_note(self.files, note)
        except OSError as exc:
            log.error("audit.note_write_failed", error=str(exc))

    def _append_leaves(self, hashes: list[bytes]) -> None:
        try:
            self.leaves.extend(hashes)
        except AuditFilesError as exc:  # proofs fail (the file is short) until the next start
            log.error("audit.leaves_write_failed", error=str(exc))

    async def _next_batch(self) -> list[_Pending]:
        timeout = max(0.0, self._interval - (time.monotonic() - self._last_cp_time))
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout=timeout if self.tree.size else None)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < BATCH_MAX_RECORDS and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _write(self, batch: list[_Pending]) -> None:
        repeats = [p for p in batch if self._repeat_of(p) is not None]
        batch = [p for p in batch if self._repeat_of(p) is None]
        self._settle_repeats(repeats)
        lines: list[bytes] = []
        tree = self.tree.copy()
        hashes: list[bytes] = []
        keys: dict[bytes, int] = {}
        unique: list[_Pending] = []
        for p in batch:  # the same decision twice within one batch is one record too
            k = repeat_key(p.ev.event, p.ev.message_id, p.ev.actor, p.ev.reason)
            if k is not None and k in keys:
                repeats.append(p)
                continue
            if k is not None:
                keys[k] = self.tree.size + len(unique)
            unique.append(p)
        batch = unique
        for i, p in enumerate(batch):
            rec = make_record(self.tree.size + i, self.instance, p.ev)
            line = RECORD_ENCODER.encode(rec)
            h = leaf_hash(line)
            tree.append(h)
            hashes.append(h)
            lines.append(line)
        note: str | None = None
        cp: Checkpoint | None = None
        since = tree.size - (self.checkpoint.size if self.checkpoint else 0)
        if since > 0 and (since >= self._every or time.monotonic() - self._last_cp_time >= self._interval):
            cp = Checkpoint(self.origin, tree.size, tree.root())
            note = sign_checkpoint(cp, self.key_name, self._key)
            lines.append(msgspec.json.encode({"type": "checkpoint", "note": note}))
        if not lines:
            self._last_cp_time = time.monotonic()
            return
        data = b"\n".join(lines) + b"\n"
        first = self.tree.size
        backoff = Backoff(0.1, 2.0)
        msg_id = f"audit-{self.instance}-{first}-{tree.size}"
        while True:
            try:
                await self.bus.publish(self.subject, data, msg_id=msg_id)
                break
            except BusUnavailable as exc:
                log.warning("audit.write_retry", error=str(exc))
                await backoff.sleep()
        self.tree = tree
        for k, index in keys.items():
            self._repeats.remember(k, index)
        self._settle_repeats([p for p in repeats if not p.done.done()])
        self._append_leaves(hashes)
        for i, p in enumerate(batch):
            self._queue.task_done()
            self.m_records.inc(p.ev.event)
            if not p.done.done():
                p.done.set_result(first + i)
        if cp is not None and note is not None:
            self.head = (cp, note)
            self._last_cp_time = time.monotonic()
            self._publish_note(note)

    def _repeat_of(self, p: _Pending) -> int | None:
        return self._repeats.index_of(repeat_key(p.ev.event, p.ev.message_id, p.ev.actor, p.ev.reason))

    def _settle_repeats(self, repeats: list[_Pending]) -> None:
        """A repeated decision is already in the log: its future gets the first record's index."""
        for p in repeats:
            self._queue.task_done()
            if not p.done.done():
                index = self._repeat_of(p)
                p.done.set_result(index if index is not None else -1)

    async def _final_checkpoint(self) -> None:
        if self.checkpoint is not None and self.checkpoint.size == self.tree.size:
            return
        if self.tree.size == 0 or not self.bus.connected:
            return
        self._last_cp_time = -1e9  # due now
        with contextlib.suppress(BusUnavailable, TimeoutError):
            await asyncio.wait_for(self._write([]), timeout=3)
