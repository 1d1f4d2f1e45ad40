"""Perf ring consumer: `PerfRingReader` (pure, memory in, records out), `PerfBuffer` and
`PerfEventArray` (the I/O around it).

Theory of operation
-------------------
A perf ring is one shared mapping: a header page (`struct perf_event_mmap_page`) followed by a
data area of 2^n pages. The kernel is the producer, this process the consumer; two free-running
u64 byte counters in the header page are the whole protocol:

* ``data_head`` (offset 1024) -- written by the kernel after a record is complete;
* ``data_tail`` (offset 1032) -- written by the consumer when it is done with the bytes below.

Record bytes sit at ``data[pos % data_size]``. The kernel never lets ``data_head - data_tail``
exceed ``data_size - 1`` (CIRC_SPACE in `perf_output_begin`); a record that does not fit is
dropped and counted, and the count is written as a PERF_RECORD_LOST in front of the next record
that fits. Records are 8-aligned, their header (u32 type, u16 misc, u16 size) never wraps, and a
record body may wrap from the end of the data area to its start.

Rules the reader keeps, in order, on every call (the ordering tools/include/linux/ring_buffer.h
documents for user space):

1. load ``data_head`` once (the acquire side of the kernel's smp_wmb + store);
2. load ``data_tail`` (only this process writes it);
3. read records from ``data_tail`` up to, never past, the ``data_head`` loaded in 1;
4. store the new ``data_tail`` only after the consumed bytes have been copied or handed out and
   released (the release side: the kernel may overwrite them from then on).

CPython performs these loads and stores in program order; on x86-64 (TSO) that is the order the
hardware makes visible, which is what the kernel's smp_rmb/smp_mb pair asks for there.

What is read is checked before it is used; every violation raises `PerfBufferError` (never an
IndexError, never a read outside the mapping, never a loop that does not end):

* ``data_head - data_tail`` (mod 2^64) larger than the data area, or ``data_tail`` not 8-aligned:
  the whole ring is unreadable, raised at once;
* a record header whose size is 0, below 8, not a multiple of 8, larger than the data area, or
  reaching past ``data_head`` (a torn record): records before it are delivered and ``data_tail``
  is left at it; the call that finds it first in line raises. `drop_pending` moves ``data_tail``
  to ``data_head`` (losing what is left) when the caller wants to go on.

Three ways to consume, all built on one scan (`_scan`) that validates headers and groups
consecutive records carrying the same header word into runs:

* `records()` -- an iterator of typed records (`perf_records.decode_record` per the event's
  `sample_type`: `Sample`, `LostRecord`, `ThrottleRecord`, `OtherRecord`); each record is copied
  out, then ``data_tail`` is stored past it, then it is yielded.
* `read_events(buffers)` -- Aya's ``PerfBuffer::read_events``: the raw data of each sample is
  copied into the next buffer until the buffers or the ring run out; LOST counts are summed,
  other record types skipped; returns ``Events(read, lost)``.
* `read_batch(max_records)` -- zero copy: a `RecordBatch` of `RecordRun` views straight into the
  mapping (a record that wraps the end is the only one copied). ``data_tail`` moves when the batch
  is committed (`commit()` or leaving its ``with`` block), which also releases every view handed
  out, so none outlives the bytes it shows. A run's headers are checked with one strided compare,
  which is what makes the batch path fast.

`PerfBuffer` opens a PERF_COUNT_SW_BPF_OUTPUT event on one CPU, maps it read-write (so the
kernel does not overwrite unread records) and enables it; `PerfEventArray` opens one per online
CPU and stores each fd in a BPF_MAP_TYPE_PERF_EVENT_ARRAY at its CPU index, for
``bpf_perf_event_output(ctx, &map, BPF_F_CURRENT_CPU, data, size)``. Both go through a `Backend`
only, so they run unchanged on the simulated kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import mmap
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Final, NamedTuple, TypeAlias

from bpfsys.abi import (
    DATA_HEAD_OFFSET,
    DATA_TAIL_OFFSET,
    PerfEventMmapPage,
    PerfRecordType,
    SampleType,
)
from bpfsys.backend import Backend, Mapping, WritableBuffer, current_backend
from bpfsys.bpf import map_delete_elem, map_update_elem
from bpfsys.cpus import online_cpus
from bpfsys.fd import Closeable, OwnedFd
from bpfsys.perf_event import Enable, perf_event_ioctl, perf_event_open_bpf
from bpfsys.perf_records import (
    HEADER_SIZE,
    PerfRecordError,
    Record,
    Sample,
    check_sample_type,
    decode_record,
)
from bpfsys.syscall import SyscallError
from bpfsys.syscall import mmap as sys_mmap
from bpfsys.syscall import munmap as sys_munmap

__all__ = [
    "DEFAULT_PAGE_COUNT",
    "Events",
    "PerfBuffer",
    "PerfBufferError",
    "PerfEventArray",
    "PerfRingReader",
    "RecordBatch",
    "RecordRun",
]

DEFAULT_PAGE_COUNT: Final = 2
"""Data pages per CPU when none is given (Aya's default)."""
HEADER_PAGE_MIN: Final = ctypes.sizeof(PerfEventMmapPage)
"""The bytes of `struct perf_event_mmap_page`: the least room before the data area."""
RAW_DATA_OFFSET: Final = HEADER_SIZE + 4
"""Where a RAW-only sample's data starts in its record (after the header and u32 size)."""

_U64_MASK: Final = (1 << 64) - 1
_HEAD: Final = DATA_HEAD_OFFSET // 8
_TAIL: Final = DATA_TAIL_OFFSET // 8
_WORD = struct.Struct("=Q")
_U32 = struct.Struct("=I")
_U64_AT = struct.Struct("=Q")
_SAMPLE: Final = int(PerfRecordType.SAMPLE)
_SAMPLE_TYPE_BYTES: Final = _U32.pack(_SAMPLE)
_MISC = struct.Struct("=H")
_LOST: Final = int(PerfRecordType.LOST)
_LOST_COUNT_OFFSET: Final = HEADER_SIZE + 8
"""PERF_RECORD_LOST: u64 id, then u64 lost."""

BufferLike: TypeAlias = "bytes | bytearray | memoryview"
_Run: TypeAlias = tuple[int, int, int, int]
"""(offset in the data area, record size, record count, header word)."""


class PerfBufferError(ValueError):
    """The perf ring holds something the kernel never writes (see the module docstring)."""


class Events(NamedTuple):
    """What one `read_events` call did: samples copied out, and records the kernel reported
    lost (the sum of the PERF_RECORD_LOST counts it passed)."""

    read: int
    lost: int


def check_max_records(max_records: int | None) -> int:
    """`max_records` as a bound (None: no bound); ValueError unless a positive int."""
    if max_records is None:
        return 1 << 62
    if not isinstance(max_records, int) or isinstance(max_records, bool) or max_records < 1:
        raise ValueError(f"max_records must be a positive int or None, got {max_records!r}")
    return max_records


_SLICES: dict[tuple[int, int], list[slice]] = {}
_SLICE_SIZES_KEPT: Final = 64


def _slices(size: int, skip: int, count: int) -> list[slice]:
    """``[slice(k * size + skip, (k + 1) * size) for k in range(count)]``, from a cache: slice
    objects are most of the cost of cutting a run into views."""
    key = (size, skip)
    cached = _SLICES.get(key)
    if cached is None or len(cached) < count:
        if len(_SLICES) >= _SLICE_SIZES_KEPT:
            _SLICES.clear()
        cached = [slice(k * size + skip, (k + 1) * size) for k in range(max(count, 64))]
        _SLICES[key] = cached  # replaced whole: safe with readers in other threads
    return cached[:count]


def _check_raw_run(data: memoryview, type_: int, size: int, count: int) -> None:
    """PerfBufferError unless `data` holds `count` RAW-only samples of `size` bytes whose raw
    size field (u32 after the header) fills each record exactly -- one strided compare."""
    if type_ != _SAMPLE or size < RAW_DATA_OFFSET:
        raise PerfBufferError(f"records of type {type_} and size {size} are no RAW-only samples")
    with data.cast("I") as words:
        raw_sizes = words[HEADER_SIZE // 4 : count * size // 4 : size // 4].tobytes()
    if raw_sizes != _U32.pack(size - RAW_DATA_OFFSET) * count:
        raise PerfBufferError(
            f"a sample of size {size} has a raw size other than {size - RAW_DATA_OFFSET}"
        )


# ---------------------------------------------------------------------------------------------
# Zero-copy batches
# ---------------------------------------------------------------------------------------------
class RecordRun:
    """`count` consecutive records of one header (`type`, `misc`, `size`), contiguous in `data`
    (``count * size`` bytes, read-only). The views stay valid until the batch is committed."""

    __slots__ = ("_views", "count", "data", "misc", "size", "type")

    def __init__(self, header: int, count: int, data: memoryview) -> None:
        self.type = header & 0xFFFF_FFFF
        self.misc = (header >> 32) & 0xFFFF
        self.size = header >> 48
        self.count = count
        self.data = data
        self._views: list[memoryview] = []

    def records(self) -> list[memoryview]:
        """Each record, header included, as its own view."""
        views = list(map(self.data.__getitem__, _slices(self.size, 0, self.count)))
        self._views.extend(views)
        return views

    def raw_samples(self) -> list[memoryview]:
        """The RAW data of each sample of a ``sample_type == PERF_SAMPLE_RAW`` event, padding
        included (as the kernel reports it). PerfBufferError when the run is not of samples or
        a record's raw size does not fill the record exactly."""
        _check_raw_run(self.data, self.type, self.size, self.count)
        slices = _slices(self.size, RAW_DATA_OFFSET, self.count)
        views = list(map(self.data.__getitem__, slices))
        self._views.extend(views)
        return views

    def lost(self) -> int:
        """The sum of the lost counts when these are PERF_RECORD_LOST records, else 0."""
        if self.type != _LOST:
            return 0
        if self.size < _LOST_COUNT_OFFSET + 8:
            raise PerfBufferError(f"PERF_RECORD_LOST of {self.size} bytes has no lost count")
        return sum(
            _U64_AT.unpack_from(self.data, o + _LOST_COUNT_OFFSET)[0]
            for o in range(0, self.count * self.size, self.size)
        )

    def release(self) -> None:
        list(map(memoryview.release, self._views))
        self._views.clear()
        self.data.release()


class RecordBatch:
    """Records handed out without copying by `PerfRingReader.read_batch`.

    ``data_tail`` moves past them on `commit()` (or on leaving the ``with`` block, even by an
    exception), which releases every view of the batch; reading the ring again before that
    raises RuntimeError.
    """

    def __init__(self, reader: PerfRingReader, runs: list[RecordRun], end: int) -> None:
        self._reader = reader
        self.runs = runs
        self._end = end
        self.committed = False

    def __len__(self) -> int:
        return sum(run.count for run in self.runs)

    def records(self) -> list[memoryview]:
        """Every record of the batch, in ring order, header included."""
        return [view for run in self.runs for view in run.records()]

    @property
    def lost(self) -> int:
        """The records the kernel reported lost in this batch's PERF_RECORD_LOST records."""
        return sum(run.lost() for run in self.runs)

    def commit(self) -> None:
        """Release the views and store ``data_tail`` past the batch (once; later calls do
        nothing)."""
        if self.committed:
            return
        for run in self.runs:
            run.release()
        self.committed = True
        self._reader._finish_batch(self._end)

    def __enter__(self) -> RecordBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.commit()


# ---------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------
class PerfRingReader:
    """The consumer of one perf ring held in `ring` (see the module docstring for the rules).

    `ring` is the whole writable mapping: the header page, then the data area from
    `data_offset` (default: one host page) of `data_size` bytes (default: the rest; it must be
    a power of two). `sample_type` and `sample_id_all` are the event's attr values, used to
    decode samples and the sample_id trailer of other records. One consumer at a time: the
    reader is not meant to be shared between threads (the producer may be another thread).
    """

    def __init__(
        self,
        ring: WritableBuffer | Mapping,
        *,
        data_offset: int = mmap.PAGESIZE,
        data_size: int | None = None,
        sample_type: int = SampleType.RAW,
        sample_id_all: bool = False,
    ) -> None:
        self._sample_type = int(check_sample_type(sample_type))
        self._sample_id_all = bool(sample_id_all)
        view = memoryview(ring).cast("B")
        try:
            if view.readonly:
                raise ValueError("the ring must be writable: the reader stores data_tail")
            if data_offset < HEADER_PAGE_MIN or data_offset % 8:
                raise ValueError(
                    f"data_offset must be a multiple of 8 of at least {HEADER_PAGE_MIN} "
                    f"(the header page), got {data_offset}"
                )
            size = len(view) - data_offset if data_size is None else data_size
            if size < 8 or size & (size - 1) or data_offset + size > len(view):
                raise ValueError(
                    f"data_size must be a power of two >= 8 within the {len(view)}-byte ring "
                    f"after data_offset {data_offset}, got {size}"
                )
        except BaseException:
            view.release()
            raise
        self._view = view
        self._meta = view[:data_offset].cast("Q")
        self._data = view[data_offset : data_offset + size].toreadonly()
        self._words = self._data.cast("Q")
        self._size = size
        self._batch: RecordBatch | None = None

    # -- state ---------------------------------------------------------------------------------
    @property
    def data_size(self) -> int:
        """Bytes in the data area."""
        return self._size

    @property
    def data_head(self) -> int:
        """The kernel's position: bytes written so far (mod 2^64)."""
        return int(self._meta[_HEAD])

    @property
    def data_tail(self) -> int:
        """The consumer's position: bytes consumed so far (mod 2^64)."""
        return int(self._meta[_TAIL])

    def pending(self) -> int:
        """``data_head - data_tail`` mod 2^64: bytes written and not yet consumed (unchecked)."""
        return (self._meta[_HEAD] - self._meta[_TAIL]) & _U64_MASK

    def readable(self) -> bool:
        """Whether the kernel has written bytes not yet consumed."""
        return bool(self._meta[_HEAD] != self._meta[_TAIL])

    def drop_pending(self) -> int:
        """Store ``data_tail = data_head``: give up every unread byte (after a PerfBufferError,
        to go on). Returns the bytes dropped."""
        self._check_idle()
        head = self._meta[_HEAD]
        dropped = (head - self._meta[_TAIL]) & _U64_MASK
        self._meta[_TAIL] = head
        return int(dropped)

    def release(self) -> None:
        """Release the reader's views of the ring (before it is unmapped); idempotent."""
        if self._batch is not None:
            self._batch.commit()
        for view in (self._words, self._data, self._meta, self._view):
            view.release()

    # -- the scan ------------------------------------------------------------------------------
    def _check_idle(self) -> None:
        if self._batch is not None:
            raise RuntimeError("a RecordBatch of this ring is not committed yet")

    def _size_problem(self, size: int, available: int) -> str | None:
        if size == 0:
            return "header size 0"
        if size < HEADER_SIZE:
            return f"header size {size} is smaller than the header"
        if size & 7:
            return f"header size {size} is not a multiple of 8"
        if size > self._size:
            return f"header size {size} is larger than the {self._size}-byte data area"
        if size > available:
            return f"header size {size} reaches past data_head ({available} bytes left)"
        return None

    def _run_length(self, index: int, stride: int, word: int, room: int) -> int:
        """How many records from word `index` on, `stride` words apart, carry header `word`
        (at least 1, at most `room`)."""
        words = self._words
        if room < 2 or words[index + stride] != word:
            return 1
        expected = _WORD.pack(word)
        found = words[index : index + room * stride : stride].tobytes()
        if found == expected * room:
            return room
        equal, unequal = 2, room  # a prefix of `equal` matches, one of `unequal` does not
        while unequal - equal > 1:
            mid = (equal + unequal) // 2
            if found[: 8 * mid] == expected * mid:
                equal = mid
            else:
                unequal = mid
        return equal

    def _scan(
        self, limit: int, stop_after: int | None = None
    ) -> tuple[list[_Run], int, PerfBufferError | None]:
        """Runs of valid records from data_tail, at most `limit` records (with `stop_after`,
        at most `limit` records of that type, others not counted); the position after them;
        the problem of the record that stopped the scan, if one did."""
        self._check_idle()
        head = self._meta[_HEAD]  # 1. data_head first
        tail = self._meta[_TAIL]
        size = self._size
        available = (head - tail) & _U64_MASK
        if available > size:
            raise PerfBufferError(
                f"data_head {head} is {available} bytes past data_tail {tail}, "
                f"beyond the {size}-byte data area"
            )
        if tail & 7:
            raise PerfBufferError(f"data_tail {tail} is not 8-aligned")
        runs: list[_Run] = []
        words, mask, pos, taken = self._words, size - 1, tail, 0
        while available and taken < limit:
            offset = pos & mask
            word = words[offset >> 3]
            rsize = word >> 48
            problem = self._size_problem(rsize, available)
            if problem is not None:
                where = f"record at data_tail + {(pos - tail) & _U64_MASK} (offset {offset})"
                return runs, pos, PerfBufferError(f"{where}: {problem}")
            counted = stop_after is None or word & 0xFFFF_FFFF == stop_after
            room = min((size - offset) // rsize, available // rsize)
            if counted:
                room = min(room, limit - taken)
            count = self._run_length(offset >> 3, rsize >> 3, word, room)
            runs.append((offset, rsize, count, word))
            pos = (pos + rsize * count) & _U64_MASK
            available -= rsize * count
            taken += count if counted else 0
        return runs, pos, None

    def _record(self, offset: int, size: int) -> BufferLike:
        """The record at `offset`: a view, or a copy joined across the end of the data area."""
        end = offset + size
        if end <= self._size:
            return self._data[offset:end]
        return self._data[offset:].tobytes() + self._data[: end - self._size].tobytes()

    def _decode(self, record: BufferLike, offset: int) -> Record:
        """The typed record; RAW-only samples take a short path with the same result as
        `decode_record` (checked by the tests)."""
        if self._sample_type == SampleType.RAW and record[:4] == _SAMPLE_TYPE_BYTES:
            data = memoryview(record)
            _check_raw_run(data, _SAMPLE, len(data), 1)
            misc = _MISC.unpack_from(data, 4)[0]
            return Sample(misc=misc, raw=data[RAW_DATA_OFFSET:].tobytes())
        try:
            return decode_record(record, self._sample_type, self._sample_id_all)
        except PerfRecordError as exc:
            raise PerfBufferError(f"record at offset {offset}: {exc}") from exc

    def _records(self, runs: list[_Run]) -> Iterator[tuple[int, int, int]]:
        """(type, offset, size) of each record of `runs`, in order."""
        for offset, size, count, word in runs:
            type_ = word & 0xFFFF_FFFF
            for start in range(offset, offset + count * size, size):
                yield type_, start, size

    def _copy_run(self, run: _Run, buffers: Sequence[bytearray], first: int) -> Events:
        """Copy the raw data of the samples of `run` into `buffers[first:]`, or sum the lost
        counts of its LOST records, or skip it; what was done."""
        offset, size, count, word = run
        type_ = word & 0xFFFF_FFFF
        with memoryview(self._record(offset, size * count)) as data:
            if type_ == _SAMPLE and self._sample_type == SampleType.RAW:
                _check_raw_run(data, type_, size, count)
                targets = buffers[first : first + count]
                for buf, part in zip(targets, _slices(size, RAW_DATA_OFFSET, count), strict=True):
                    buf[:] = data[part]
                return Events(count, 0)
            if type_ == _SAMPLE:
                for index, start in enumerate(range(0, size * count, size), first):
                    sample = self._decode(data[start : start + size], offset + start)
                    buffers[index][:] = getattr(sample, "raw", None) or b""
                return Events(count, 0)
            return Events(0, RecordRun(word, count, data).lost() if type_ == _LOST else 0)

    # -- consuming -----------------------------------------------------------------------------
    def records(self, max_records: int | None = None) -> Iterator[Record]:
        """Decode and yield the records up to data_head (at most `max_records`), storing
        data_tail past each one before it is yielded."""
        runs, _, error = self._scan(check_max_records(max_records))
        if not runs and error is not None:
            raise error
        pos = self._meta[_TAIL]
        for _, offset, size in self._records(runs):
            with memoryview(self._record(offset, size)) as view:
                record = self._decode(view, offset)
            pos = (pos + size) & _U64_MASK
            self._meta[_TAIL] = pos
            yield record

    def read_events(self, buffers: Sequence[bytearray]) -> Events:
        """Aya's ``read_events``: copy the raw data of successive samples into `buffers[0]`,
        `buffers[1]`, ... (each is replaced whole; bytearrays), until the buffers are used up or
        data_head is reached. PERF_RECORD_LOST counts are summed; other records are skipped.
        ValueError when `buffers` is empty."""
        if not buffers:
            raise ValueError("read_events needs at least one buffer")
        read = lost = 0
        while read < len(buffers):
            runs, _, error = self._scan(len(buffers) - read, stop_after=_SAMPLE)
            # a run that fails whole is retried record by record, so that what comes before
            # the bad record is delivered and the bad record is first in line next time
            pending = deque(runs)
            while pending:
                offset, size, count, word = pending.popleft()
                try:
                    done = self._copy_run((offset, size, count, word), buffers, read)
                except PerfBufferError as exc:
                    if count > 1:
                        singles = [(offset + k * size, size, 1, word) for k in range(count)]
                        pending.extendleft(reversed(singles))
                        continue
                    error = exc
                    break
                read, lost = read + done.read, lost + done.lost
                self._meta[_TAIL] = (self._meta[_TAIL] + size * count) & _U64_MASK
            if error is not None:
                if read == lost == 0:
                    raise error
                break
            if not runs:
                break
        return Events(read, lost)

    def read_batch(self, max_records: int | None = None) -> RecordBatch:
        """Up to `max_records` records as zero-copy runs (see `RecordBatch`); commit the batch
        to move data_tail. PerfBufferError when the first record in line is invalid."""
        runs, end, error = self._scan(check_max_records(max_records))
        if not runs and error is not None:
            raise error
        batch = RecordBatch(
            self,
            [
                RecordRun(word, count, memoryview(self._record(offset, size * count)))
                for offset, size, count, word in runs
            ],
            end,
        )
        self._batch = batch
        return batch

    def _finish_batch(self, end: int) -> None:
        self._batch = None
        self._meta[_TAIL] = end  # 4. data_tail last, after the views are released


# ---------------------------------------------------------------------------------------------
# I/O: one CPU's buffer
# ---------------------------------------------------------------------------------------------
def _page_count(page_count: int) -> int:
    if (
        not isinstance(page_count, int)
        or isinstance(page_count, bool)
        or page_count < 1
        or page_count & (page_count - 1)
    ):
        raise ValueError(f"page_count must be a power of two, got {page_count!r}")
    return page_count


class PerfBuffer(Closeable):
    """The perf ring of a BPF output event on one CPU: fd, read-write mapping and reader.

    Make one with `PerfBuffer.open`. `close()` (or leaving the ``with`` block) releases the
    reader's views, unmaps the ring, then closes the fd -- the fd even when unmapping fails.
    """

    def __init__(self, cpu: int, fd: OwnedFd, mapping: Mapping, reader: PerfRingReader) -> None:
        self.cpu = cpu
        self.fd = fd
        self.reader = reader
        self._mapping = mapping

    @classmethod
    def open(
        cls,
        cpu: int,
        page_count: int = DEFAULT_PAGE_COUNT,
        *,
        backend: Backend | None = None,
        page_size: int = mmap.PAGESIZE,
    ) -> PerfBuffer:
        """perf_event_open a PERF_COUNT_SW_BPF_OUTPUT event on `cpu`, mmap its header page and
        `page_count` data pages read-write, and enable it. ValueError unless `page_count` is a
        power of two (checked before any system call); SyscallError from the calls, with
        nothing left open."""
        pages = _page_count(page_count)
        b = current_backend() if backend is None else backend
        fd = perf_event_open_bpf(cpu, backend=b)
        try:
            prot = mmap.PROT_READ | mmap.PROT_WRITE
            mapping = sys_mmap(
                fd.fileno(), (pages + 1) * page_size, prot, mmap.MAP_SHARED, 0, backend=b
            )
            try:
                reader = PerfRingReader(mapping, data_offset=page_size)
                try:
                    perf_event_ioctl(fd, Enable())
                except BaseException:
                    reader.release()
                    raise
            except BaseException:
                sys_munmap(mapping, backend=b)
                raise
        except BaseException:
            fd.close()
            raise
        return cls(cpu, fd, mapping, reader)

    @property
    def closed(self) -> bool:
        return self.fd.closed

    @property
    def mapping(self) -> Mapping:
        """The shared mapping: header page, then the data pages."""
        return self._mapping

    def fileno(self) -> int:
        """The perf event fd (for selectors and asyncio readers)."""
        return self.fd.fileno()

    def readable(self) -> bool:
        """Whether unread records are in the ring."""
        return self.reader.readable()

    def read_events(self, buffers: Sequence[bytearray]) -> Events:
        """See `PerfRingReader.read_events`."""
        return self.reader.read_events(buffers)

    def records(self, max_records: int | None = None) -> Iterator[Record]:
        """See `PerfRingReader.records`."""
        return self.reader.records(max_records)

    def read_batch(self, max_records: int | None = None) -> RecordBatch:
        """See `PerfRingReader.read_batch`."""
        return self.reader.read_batch(max_records)

    def close(self) -> None:
        """Unmap the ring, then close the fd; idempotent."""
        if self.fd.closed:
            return
        try:
            self.reader.release()
            sys_munmap(self._mapping, backend=self.fd.backend)
        finally:
            self.fd.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fd.fileno()}"
        return f"<PerfBuffer cpu={self.cpu} {state} data_size={self.reader.data_size}>"


# ---------------------------------------------------------------------------------------------
# I/O: a buffer per CPU behind a PERF_EVENT_ARRAY map
# ---------------------------------------------------------------------------------------------
def _cpu_key(cpu: int) -> bytes:
    return _U32.pack(cpu)


class PerfEventArray(Closeable):
    """A `PerfBuffer` per CPU, each stored in a BPF_MAP_TYPE_PERF_EVENT_ARRAY at its CPU.

    Make one with `PerfEventArray.open`. `poll()` waits for data; `records()` drains what is
    there; ``async for cpu, record in array`` waits on the event loop (add_reader on each fd)
    and yields records as they come. `close()` removes the map entries it made (best effort:
    the map may be gone) and closes every buffer.
    """

    def __init__(self, map_fd: OwnedFd | int, buffers: dict[int, PerfBuffer]) -> None:
        self.map_fd = map_fd
        self.buffers = buffers

    @classmethod
    def open(
        cls,
        map_fd: OwnedFd | int,
        page_count: int = DEFAULT_PAGE_COUNT,
        *,
        cpus: Sequence[int] | None = None,
        backend: Backend | None = None,
        page_size: int = mmap.PAGESIZE,
    ) -> PerfEventArray:
        """Open a buffer on each of `cpus` (default: the online CPUs) and store its fd in the
        map at index cpu. On any failure everything opened so far is closed again."""
        pages = _page_count(page_count)
        if backend is not None:
            b = backend
        else:
            b = map_fd.backend if isinstance(map_fd, OwnedFd) else current_backend()
        array = cls(map_fd, {})
        try:
            for cpu in online_cpus(b) if cpus is None else cpus:
                buf = PerfBuffer.open(cpu, pages, backend=b, page_size=page_size)
                array.buffers[cpu] = buf
                map_update_elem(map_fd, _cpu_key(cpu), _U32.pack(buf.fileno()), backend=b)
        except BaseException:
            array.close()
            raise
        return array

    def _backend(self) -> Backend:
        return next(iter(self.buffers.values())).fd.backend

    def poll(self, timeout: float | None = None) -> list[PerfBuffer]:
        """The buffers holding unread records, waiting up to `timeout` seconds (None: until
        one has data) when none holds any yet. Empty on timeout."""
        live = [b for b in self.buffers.values() if not b.closed]
        ready = [b for b in live if b.readable()]
        if ready or not live:
            return ready
        timeout_ms = -1 if timeout is None else max(0, round(timeout * 1000))
        self._backend().poll([b.fileno() for b in live], timeout_ms)
        return [b for b in live if b.readable()]

    def records(self, max_records: int | None = None) -> Iterator[tuple[int, Record]]:
        """(cpu, record) for what every buffer holds now, CPU by CPU (at most `max_records`
        per CPU)."""
        for cpu, buf in self.buffers.items():
            for record in buf.records(max_records):
                yield cpu, record

    async def _events(self) -> AsyncIterator[tuple[int, Record]]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        fds = [buf.fileno() for buf in self.buffers.values()]
        for fd in fds:
            loop.add_reader(fd, wake.set)
        try:
            while True:
                wake.clear()
                found = False
                for item in self.records():
                    found = True
                    yield item
                if not found:
                    await wake.wait()
        finally:
            for fd in fds:
                loop.remove_reader(fd)

    def __aiter__(self) -> AsyncIterator[tuple[int, Record]]:
        return self._events()

    def close(self) -> None:
        """Delete the map entries made (errors ignored), then close every buffer, each even when
        closing another failed (the first failure is raised at the end); idempotent."""
        with contextlib.ExitStack() as closing:
            for cpu, buf in self.buffers.items():
                if not buf.closed:
                    with contextlib.suppress(SyscallError, ValueError):
                        map_delete_elem(self.map_fd, _cpu_key(cpu), backend=buf.fd.backend)
                    closing.callback(buf.close)
