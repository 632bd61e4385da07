"""The single-file replay format (``.mrp``): export, import, and direct playback.

Layout (byte by byte in docs/replay-format.md)::

    prefix   magic(8) format_version(u16) flags(u16) header_length(u32) header_checksum(16)
    header   msgpack map: match metadata and counts
    chunks   zlib(msgpack array of stored batches), ~CHUNK_SECONDS of match time each
    keyframes zlib(keyframe data), one per keyframe
    footer   msgpack map: chunk index and keyframe index (tick -> offset, length, checksum)
    trailer  footer_offset(u64) footer_length(u32) reserved(u32) footer_checksum(16) end magic(8)

A reader opens the prefix, header, trailer and footer (a few KB) and then
reads only the chunks and keyframes a seek needs. :class:`ReplayFileReader`
implements :class:`~replay.source.ReplaySource`, so the replay engine plays a
file without importing it. Batches keep the event codec's layout
(replay.codec), so events of an older schema are upcast on read, exactly as
the event store does.

File reads are plain blocking reads: a chunk is tens of KB read from a local
file (well under a millisecond), cheaper than a hop to a worker thread.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import os
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from replay.codec import decode_batch, encode_batch, pack, unpack
from replay.errors import (
    CorruptEventError,
    MatchExistsError,
    ReplayFileCorruptError,
    ReplayFileTruncatedError,
    ReplayFileUnsupportedError,
    UnknownMatchError,
)
from replay.events import EventCatalog, NewEvent
from replay.source import ReplaySource
from replay.store.base import READ_ONLY_STATUSES, EventBatch, EventStore, Keyframe, MatchRecord
from replay.store.upcast import upcast_events

__all__ = [
    "CHUNK_SECONDS",
    "FORMAT_VERSION",
    "ReplayFileInfo",
    "ReplayFileReader",
    "export_match",
    "import_replay",
    "read_header",
]

MAGIC = b"\x89MRP\r\n\x1a\n"
END_MAGIC = b"MRPEND\r\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHHI16s")  # magic, format version, flags, header length, checksum
_TRAILER = struct.Struct("<QII16s8s")  # footer offset, footer length, reserved, checksum, magic

CHUNK_SECONDS = 10.0
"""Match time per event chunk. A seek decompresses one chunk (~10 s of events:
~100-200 KB raw for a 64-player match, well under 1 ms), while chunks stay big
enough for zlib to find the repetition across ticks."""

ZLIB_LEVEL = 9
"""Export is once, reads are many: the best ratio costs only export time (zlib
decompression speed barely depends on the level)."""

CHUNK_CACHE = 8
"""Decoded chunks kept per reader (~8 x 10 s of events, a few MB for 64 players),
so scrubbing within a minute decodes nothing twice."""

MAX_SECTION_BYTES = 256 * 1024 * 1024
"""Largest header, footer, chunk or keyframe a reader accepts (compressed and
decompressed): a corrupt length cannot make it allocate more."""


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass(frozen=True)
class ChunkEntry:
    first_tick: int
    last_tick: int
    first_seq: int
    last_seq: int
    offset: int
    length: int
    checksum: bytes


@dataclass(frozen=True)
class KeyframeEntry:
    tick: int
    offset: int
    length: int
    format_version: int
    checksum: bytes
    """Checksum of the uncompressed keyframe data (``Keyframe.checksum``)."""


@dataclass(frozen=True)
class ReplayFileInfo:
    """What the header says: everything but the events."""

    format_version: int
    record: MatchRecord
    events: int
    keyframes: int
    exported_at: float


# -- reading -----------------------------------------------------------------------


def _read_exact(f: BinaryIO, offset: int, length: int, what: str) -> bytes:
    if length > MAX_SECTION_BYTES:
        raise ReplayFileCorruptError(f"{what}: length {length} exceeds {MAX_SECTION_BYTES}")
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise ReplayFileTruncatedError(
            f"{what}: needs bytes {offset}..{offset + length}; the file ends at"
            f" {offset + len(data)}"
        )
    return data


def _unpack_section(data: bytes, what: str) -> Any:
    try:
        return unpack(data, max_bin_len=MAX_SECTION_BYTES)
    except Exception as exc:  # any malformed msgpack
        raise ReplayFileCorruptError(f"{what} does not decode: {exc!r}") from exc


def _read_info(f: BinaryIO) -> ReplayFileInfo:
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise ReplayFileTruncatedError(f"file of {len(prefix)} bytes is shorter than the prefix")
    magic, version, _flags, length, checksum = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ReplayFileCorruptError("not a matchreplay file (bad magic)")
    if version != FORMAT_VERSION:
        raise ReplayFileUnsupportedError(
            f"replay file format version {version}; this build reads version {FORMAT_VERSION}"
        )
    header = _read_exact(f, _PREFIX.size, length, "header")
    if _checksum(header) != checksum:
        raise ReplayFileCorruptError("header checksum mismatch")
    h = _unpack_section(header, "header")
    try:
        record = MatchRecord(
            match_id=str(h["match_id"]),
            game=str(h["game"]),
            rules_version=str(h["rules_version"]),
            tick_rate=int(h["tick_rate"]),
            players=tuple(h["players"]),
            settings=dict(h["settings"]),
            seed=int(h["seed"]),
            created_at=float(h["created_at"]),
            ended_at=None if h["ended_at"] is None else float(h["ended_at"]),
            status=h["status"],
            version=int(h["events"]),
            last_tick=int(h["last_tick"]),
        )
        return ReplayFileInfo(
            version,
            record,
            int(h["events"]),
            int(h["keyframes"]),
            float(h["exported_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReplayFileCorruptError(f"header lacks or mistypes a field: {exc!r}") from exc


def read_header(path: str | os.PathLike[str]) -> ReplayFileInfo:
    """The metadata of a replay file, reading only its first few hundred bytes."""
    with open(path, "rb") as f:
        return _read_info(f)


class ReplayFileReader:
    """A replay file opened for reading: a :class:`ReplaySource` for one match.

    Opening validates the prefix, header, trailer and footer. Chunks are
    verified (checksum) when read; :meth:`verify` reads them all.
    """

    def __init__(self, path: str | os.PathLike[str], catalogs: Mapping[str, EventCatalog]) -> None:
        """``catalogs``: game name -> event catalog, for upcasting old events on read."""
        self.path = os.fspath(path)
        self._f: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        try:
            self.info = _read_info(self._f)
            self._read_footer()
            self._catalog: EventCatalog | None = catalogs.get(self.info.record.game)
        except BaseException:
            self._f.close()
            raise
        self._chunk_cache: OrderedDict[int, list[EventBatch]] = OrderedDict()
        self._chunk_last_ticks = [c.last_tick for c in self.chunks]
        self._keyframe_ticks = [k.tick for k in self.keyframes]

    def _read_footer(self) -> None:
        body_start = self._f.tell()  # just after the header, which _read_info read
        size = self._f.seek(0, os.SEEK_END)
        if size < body_start + _TRAILER.size:
            raise ReplayFileTruncatedError("the file ends before its trailer")
        trailer = _read_exact(self._f, size - _TRAILER.size, _TRAILER.size, "trailer")
        offset, length, _reserved, checksum, magic = _TRAILER.unpack(trailer)
        if magic != END_MAGIC:
            raise ReplayFileTruncatedError("no trailer at the end of the file (truncated?)")
        if offset + length > size - _TRAILER.size:
            raise ReplayFileCorruptError("the trailer points past the end of the file")
        footer = _read_exact(self._f, offset, length, "footer")
        if _checksum(footer) != checksum:
            raise ReplayFileCorruptError("footer checksum mismatch")
        d = _unpack_section(footer, "footer")
        try:
            self.chunks = [
                ChunkEntry(int(a), int(b), int(c), int(e), int(o), int(n), bytes(k))
                for a, b, c, e, o, n, k in d["chunks"]
            ]
            self.keyframes = [
                KeyframeEntry(int(t), int(o), int(n), int(v), bytes(k))
                for t, o, n, v, k in d["keyframes"]
            ]
            self._last_position = int(d["last_position"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplayFileCorruptError(f"footer index malformed: {exc!r}") from exc
        for e in (*self.chunks, *self.keyframes):
            if e.offset < body_start or e.offset + e.length > offset:
                raise ReplayFileCorruptError("footer index points outside the data sections")

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ReplayFileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ReplayFileReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- ReplaySource --------------------------------------------------------------

    async def get_match(self, match_id: str) -> MatchRecord:
        self._check_id(match_id)
        return self.record

    @property
    def record(self) -> MatchRecord:
        # A file is a closed recording: a match exported while live reads as interrupted.
        record = self.info.record
        if record.status not in READ_ONLY_STATUSES:
            record = record.with_changes(status="interrupted")
        return record

    async def read_batches(
        self,
        match_id: str,
        *,
        from_seq: int = 1,
        to_seq: int | None = None,
        from_tick: int | None = None,
        to_tick: int | None = None,
    ) -> list[EventBatch]:
        self._check_id(match_id)
        lo_tick = -(2**62) if from_tick is None else from_tick
        hi_tick = 2**62 if to_tick is None else to_tick
        hi_seq = 2**62 if to_seq is None else to_seq
        out: list[EventBatch] = []
        # Chunks are in seq order and their tick ranges non-decreasing.
        for i in range(bisect.bisect_left(self._chunk_last_ticks, lo_tick), len(self.chunks)):
            c = self.chunks[i]
            if c.first_tick > hi_tick or c.first_seq > hi_seq:
                break
            if c.last_seq < from_seq:
                continue
            for b in self._chunk(i):
                if (
                    b.first_seq <= hi_seq
                    and b.last_seq >= from_seq
                    and b.events[0][2] <= hi_tick
                    and b.events[-1][2] >= lo_tick
                ):
                    out.append(b)
        return out

    async def get_keyframe(self, match_id: str, at_or_before: int) -> Keyframe | None:
        self._check_id(match_id)
        i = bisect.bisect_right(self._keyframe_ticks, at_or_before)
        if i == 0:
            return None
        e = self.keyframes[i - 1]
        raw = _read_exact(self._f, e.offset, e.length, f"keyframe at tick {e.tick}")
        try:
            data = zlib.decompress(raw, bufsize=MAX_SECTION_BYTES)
        except zlib.error:
            data = raw  # fails its checksum: the engine skips it with a warning
        return Keyframe(match_id, e.tick, e.format_version, data, e.checksum)

    async def keyframe_ticks(self, match_id: str) -> list[int]:
        self._check_id(match_id)
        return list(self._keyframe_ticks)

    async def last_position(self) -> int:
        return self._last_position

    async def wait_for_commit(self, after: int, timeout: float) -> None:
        await asyncio.sleep(timeout)  # nothing is ever appended to a file

    # -- validation ------------------------------------------------------------------

    def iter_chunks(self) -> Iterator[list[EventBatch]]:
        """Every chunk's batches, in seq order: read and checked one chunk at a time,
        bypassing the chunk cache (a whole-file pass must not evict a viewer's chunks)."""
        for i in range(len(self.chunks)):
            yield self._decode_chunk(i)

    def verify(self) -> None:
        """Read and check everything: chunk and keyframe checksums, event decoding, gap-free
        seqs from 1 to the header's count, non-decreasing ticks, index ranges."""
        expected_seq, last_tick = 1, -1
        for i, (c, batches) in enumerate(zip(self.chunks, self.iter_chunks(), strict=True)):
            if not batches or batches[0].first_seq != c.first_seq:
                raise ReplayFileCorruptError(f"chunk {i} does not start at seq {c.first_seq}")
            for b in batches:
                if b.first_seq != expected_seq:
                    raise ReplayFileCorruptError(
                        f"chunk {i}: batch at seq {b.first_seq}, expected {expected_seq}"
                    )
                for e in b.events:
                    if e[2] < last_tick:
                        raise ReplayFileCorruptError(
                            f"chunk {i}: ticks go back at seq {b.first_seq}"
                        )
                    last_tick = e[2]
                expected_seq = b.last_seq + 1
            if (batches[-1].last_seq, batches[0].events[0][2], last_tick) != (
                c.last_seq,
                c.first_tick,
                c.last_tick,
            ):
                raise ReplayFileCorruptError(f"chunk {i} does not match its index entry")
        if expected_seq - 1 != self.info.events or last_tick != self.info.record.last_tick:
            raise ReplayFileCorruptError(
                f"the chunks hold {expected_seq - 1} events up to tick {last_tick}; the header"
                f" says {self.info.events} up to tick {self.info.record.last_tick}"
            )
        if len(self.keyframes) != self.info.keyframes:
            raise ReplayFileCorruptError("keyframe count differs from the header")
        for e in self.keyframes:
            raw = _read_exact(self._f, e.offset, e.length, f"keyframe at tick {e.tick}")
            try:
                data = zlib.decompress(raw, bufsize=MAX_SECTION_BYTES)
            except zlib.error as exc:
                raise ReplayFileCorruptError(f"keyframe at tick {e.tick}: {exc}") from exc
            if _checksum(data) != e.checksum:
                raise ReplayFileCorruptError(f"keyframe at tick {e.tick}: checksum mismatch")

    # -- internals ---------------------------------------------------------------------

    def _check_id(self, match_id: str) -> None:
        if match_id != self.info.record.match_id:
            raise UnknownMatchError(match_id)

    def _chunk(self, i: int) -> list[EventBatch]:
        batches = self._chunk_cache.get(i)
        if batches is None:
            batches = self._decode_chunk(i)
            self._chunk_cache[i] = batches
            if len(self._chunk_cache) > CHUNK_CACHE:
                self._chunk_cache.popitem(last=False)
        else:
            self._chunk_cache.move_to_end(i)
        return batches

    def _decode_chunk(self, i: int) -> list[EventBatch]:
        c = self.chunks[i]
        what = f"chunk {i} (ticks {c.first_tick}..{c.last_tick})"
        raw = _read_exact(self._f, c.offset, c.length, what)
        if _checksum(raw) != c.checksum:
            raise ReplayFileCorruptError(f"{what}: checksum mismatch")
        try:
            rows = _unpack_section(zlib.decompress(raw, bufsize=MAX_SECTION_BYTES), what)
            match_id = self.info.record.match_id
            out = []
            for first_seq, first_position, first_id, base_tick, blob in rows:
                events = decode_batch(blob, base_tick)
                if not events:
                    raise ValueError(f"empty batch at seq {first_seq}")
                if self._catalog is not None:
                    upcast_events(self._catalog, events, f"{what} seq {first_seq}", first_seq)
                out.append(
                    EventBatch(
                        match_id,
                        first_seq,
                        first_position,
                        int.from_bytes(first_id, "big"),
                        events,
                    )
                )
            return out
        except ReplayFileCorruptError:
            raise
        except (zlib.error, CorruptEventError, TypeError, ValueError) as exc:
            raise ReplayFileCorruptError(f"{what}: {exc}") from exc


# -- writing -----------------------------------------------------------------------


class _Writer:
    """Appends sections to an open file and collects the footer index."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.chunks: list[list[Any]] = []
        self.keyframes: list[list[Any]] = []
        self.last_position = 0

    def prefix_and_header(self, header: dict[str, Any]) -> None:
        body = pack(header)
        self.f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(body), _checksum(body)))
        self.f.write(body)

    def chunk(self, batches: list[EventBatch]) -> None:
        rows = [
            (
                b.first_seq,
                b.first_position,
                b.first_id.to_bytes(16, "big"),
                b.events[0][2],
                encode_batch([NewEvent(t, tick, data, v) for t, v, tick, data in b.events]),
            )
            for b in batches
        ]
        blob = zlib.compress(pack(rows), ZLIB_LEVEL)
        offset = self.f.tell()
        self.f.write(blob)
        first, last = batches[0], batches[-1]
        self.last_position = max(self.last_position, last.last_position)
        self.chunks.append(
            [
                first.events[0][2],
                last.events[-1][2],
                first.first_seq,
                last.last_seq,
                offset,
                len(blob),
                _checksum(blob),
            ]
        )

    def keyframe(self, kf: Keyframe) -> None:
        blob = zlib.compress(kf.data, ZLIB_LEVEL)
        offset = self.f.tell()
        self.f.write(blob)
        self.keyframes.append([kf.tick, offset, len(blob), kf.format_version, kf.checksum])

    def footer_and_trailer(self) -> None:
        index = {"chunks": self.chunks, "keyframes": self.keyframes}
        body = pack(index | {"last_position": self.last_position})
        offset = self.f.tell()
        self.f.write(body)
        self.f.write(_TRAILER.pack(offset, len(body), 0, _checksum(body), END_MAGIC))


async def export_match(
    source: ReplaySource, match_id: str, path: str | os.PathLike[str]
) -> ReplayFileInfo:
    """Write one match (events as stored, keyframes, metadata) to a replay file.

    The file appears complete or not at all: it is written beside ``path``,
    fsynced, then renamed over it.
    """
    record = await source.get_match(match_id)
    kf_ticks = await source.keyframe_ticks(match_id)
    chunk_ticks = max(1, round(CHUNK_SECONDS * record.tick_rate))
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            w = _Writer(f)
            w.prefix_and_header(
                record.describe()
                | {
                    "created_at": record.created_at,
                    "ended_at": record.ended_at,
                    "status": record.status,
                    "events": record.version,
                    "last_tick": record.last_tick,
                    "keyframes": len(kf_ticks),
                    "exported_at": time.time(),
                }
            )
            next_seq = 1
            start = 0
            while start <= record.last_tick:
                end = start + chunk_ticks - 1
                batches = [
                    b
                    for b in await source.read_batches(
                        match_id, from_tick=start, to_tick=end, to_seq=record.version
                    )
                    if b.first_seq >= next_seq  # a batch spanning two windows is written once
                ]
                if batches:
                    w.chunk(batches)
                    next_seq = batches[-1].last_seq + 1
                start = end + 1
            if next_seq != record.version + 1:
                raise CorruptEventError(
                    f"match {match_id!r}: read {next_seq - 1} of its {record.version} events"
                )
            for tick in kf_ticks:
                kf = await source.get_keyframe(match_id, tick)
                if kf is not None and kf.tick == tick:
                    w.keyframe(kf)
            w.footer_and_trailer()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return read_header(path)


async def import_replay(path: str | os.PathLike[str], store: EventStore) -> MatchRecord:
    """Import a replay file into ``store``: the same events (seqs, ticks, ids) and keyframes.

    Everything is validated before anything is written (ReplayFileError
    subclasses; MatchExistsError when the match id is taken); only a store
    failure during the writes can leave a partial match, marked interrupted. Appends are
    issued per chunk without waiting for each other, so the store's group
    commit writes a chunk in one or a few transactions.
    """
    # No catalogs: events are copied with the versions they were stored with (the
    # importing store upcasts them on read, like every stored event).
    with ReplayFileReader(path, {}) as reader:
        reader.verify()
        record = reader.record
        try:
            await store.get_match(record.match_id)
        except UnknownMatchError:
            pass
        else:
            raise MatchExistsError(record.match_id)
        status, ended_at = record.status, record.ended_at
        await store.create_match(record.with_changes(status="running", ended_at=None))
        try:
            for batches in reader.iter_chunks():
                await asyncio.gather(
                    *(
                        store.append(
                            record.match_id,
                            [NewEvent(t, tick, data, v) for t, v, tick, data in b.events],
                            b.first_seq - 1,
                            first_id=b.first_id,
                        )
                        for b in batches
                    )
                )
            for tick in await reader.keyframe_ticks(record.match_id):
                kf = await reader.get_keyframe(record.match_id, tick)
                if kf is not None:  # always: verify() read every keyframe
                    await store.put_keyframe(kf)
        except BaseException:
            # A verified file fails here only on a store error (disk full, ...): the
            # partial match is marked interrupted rather than left looking live.
            with contextlib.suppress(Exception):
                await store.update_match(record.match_id, status="interrupted")
            raise
        return await store.update_match(record.match_id, status=status, ended_at=ended_at)
