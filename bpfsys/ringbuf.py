"""BPF ring buffer (BPF_MAP_TYPE_RINGBUF) consumer: `RingBufReader` (pure) and `RingBuf` (I/O).

Theory of operation
-------------------
A BPF ring buffer is shared by every CPU: one producer position and one consumer position,
both free-running u64 byte counters, and a data area of `max_entries` bytes (a power of two,
a multiple of the page size). User space maps it in two parts (kernel/bpf/ringbuf.c,
`ringbuf_map_mmap`): the consumer page read-write at offset 0 (``consumer_pos`` at its start;
the kernel refuses any other writable mapping), and from offset ``page_size`` the producer page
(``producer_pos`` at its start) followed by the data area *mapped twice*, read-only, length
``page_size + 2 * max_entries``. The double mapping makes a record that wraps the end of the
data area contiguous in memory, so no record is ever copied to be read.

Every record starts with an 8-byte header: u32 ``len`` (bit 31 BUSY: reserved, not committed
yet; bit 30 DISCARD: committed as discarded) and u32 ``pg_off`` (kernel bookkeeping). The record
occupies ``round_up(len + 8, 8)`` bytes. The producer advances ``producer_pos`` when it
*reserves* (the record is BUSY until submitted or discarded), and never lets it run more than
``max_entries - 1`` bytes ahead of ``consumer_pos``.

The reader follows libbpf's `ringbuf_process_ring`:

1. load ``consumer_pos``; then, in a loop, load ``producer_pos`` (acquire);
2. while ``consumer_pos < producer_pos``: load the header's ``len`` (acquire); stop at a BUSY
   record (the call returns; a later call goes on from there); else move past it, hand a
   non-discarded record's data to the consumer, then store ``consumer_pos`` (release) -- after
   the consumer is done with the bytes, since the producer may reuse them from then on;
3. when a pass found new data, load ``producer_pos`` again; stop when none was found or
   `max_records` records were delivered.

Checked before use, each raising `RingBufError` with the positions named (never a read outside
the mapping, never a loop that does not end): ``producer_pos - consumer_pos`` beyond the data
area, ``consumer_pos`` not 8-aligned, a record larger than the data area, a committed record
reaching past ``producer_pos`` (torn). Records before the bad one have been delivered and
``consumer_pos`` stays at it.

Consumers: `consume(callback)` hands each record to `callback` as a read-only view valid only
during the call (released after it; when the callback raises, ``consumer_pos`` still moves past
that record, as libbpf's does on a negative return, and the exception propagates);
`records()` yields copies.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable, Generator, Iterator
from typing import Final

from bpfsys.abi import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ
from bpfsys.backend import Backend, Mapping, WritableBuffer, current_backend
from bpfsys.bpf import map_info
from bpfsys.fd import Closeable, OwnedFd
from bpfsys.perf_buffer import check_max_records
from bpfsys.syscall import mmap as sys_mmap
from bpfsys.syscall import munmap as sys_munmap

__all__ = ["RingBuf", "RingBufError", "RingBufReader", "record_size"]

_U64_MASK: Final = (1 << 64) - 1
_LEN_MASK: Final = ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT) & 0xFFFF_FFFF


class RingBufError(ValueError):
    """The ring buffer holds something the kernel never writes (see the module docstring)."""


def record_size(length: int) -> int:
    """Bytes a record of `length` data bytes occupies: round_up(length + 8, 8)."""
    return (length + BPF_RINGBUF_HDR_SZ + 7) & ~7


class RingBufReader:
    """The consumer of one BPF ring buffer (see the module docstring).

    `consumer` is the writable consumer page (``consumer_pos`` at offset 0); `producer` the
    producer page followed, from `data_offset` (default: one host page), by the data area of
    `data_size` bytes (a power of two), mapped twice when `producer` is long enough -- else a
    wrapping record is copied. One consumer at a time (the producers may be other threads).
    """

    def __init__(
        self,
        consumer: WritableBuffer | Mapping,
        producer: WritableBuffer | Mapping | bytes,
        data_size: int,
        *,
        data_offset: int = mmap.PAGESIZE,
    ) -> None:
        cons = memoryview(consumer).cast("B")
        prod = memoryview(producer).cast("B")
        try:
            if cons.readonly or len(cons) < 8:
                raise ValueError("the consumer page must be writable and hold consumer_pos")
            if data_size < 8 or data_size & (data_size - 1):
                raise ValueError(f"data_size must be a power of two >= 8, got {data_size}")
            if data_offset < 8 or data_offset % 8 or data_offset + data_size > len(prod):
                raise ValueError(
                    f"the producer mapping ({len(prod)} bytes) must hold producer_pos and "
                    f"{data_size} data bytes from data_offset {data_offset}"
                )
        except BaseException:
            cons.release()
            prod.release()
            raise
        self._cons_view, self._prod_view = cons, prod
        self._consumer = cons[:8].cast("Q")
        self._producer = prod[:8].cast("Q")
        doubled = data_offset + 2 * data_size <= len(prod)
        self._data = prod[data_offset : data_offset + data_size * (2 if doubled else 1)]
        self._data = self._data.toreadonly()
        self._lengths = self._data.cast("I")
        self._doubled = doubled
        self._size = data_size

    @property
    def data_size(self) -> int:
        return self._size

    @property
    def consumer_pos(self) -> int:
        return int(self._consumer[0])

    @property
    def producer_pos(self) -> int:
        return int(self._producer[0])

    def pending(self) -> int:
        """``producer_pos - consumer_pos`` mod 2^64: bytes reserved and not consumed."""
        return (self._producer[0] - self._consumer[0]) & _U64_MASK

    def readable(self) -> bool:
        """Whether bytes were reserved past ``consumer_pos`` (committed or not)."""
        return bool(self._producer[0] != self._consumer[0])

    def release(self) -> None:
        """Release the reader's views (before unmapping); idempotent."""
        for view in (
            self._lengths,
            self._data,
            self._producer,
            self._consumer,
            self._prod_view,
            self._cons_view,
        ):
            view.release()

    def _sample(self, offset: int, length: int) -> memoryview:
        end = offset + length
        if self._doubled or end <= self._size:
            return self._data[offset:end]
        head = self._data[offset : self._size].tobytes()
        return memoryview(head + self._data[: end - self._size].tobytes())

    def _walk(self, limit: int) -> Generator[memoryview, None, None]:
        """Committed, non-discarded records, each stored past in ``consumer_pos`` once the
        consumer resumes or closes this generator."""
        size, mask = self._size, self._size - 1
        cons = self._consumer[0]
        delivered = 0
        while delivered < limit:
            prod = self._producer[0]
            available = (prod - cons) & _U64_MASK
            if available > size:
                raise RingBufError(
                    f"producer_pos {prod} is {available} bytes past consumer_pos {cons}, "
                    f"beyond the {size}-byte data area"
                )
            if cons & 7:
                raise RingBufError(f"consumer_pos {cons} is not 8-aligned")
            if not available:
                return
            while available and delivered < limit:
                offset = cons & mask
                header = self._lengths[offset >> 2]
                if header & BPF_RINGBUF_BUSY_BIT:
                    return
                length = header & _LEN_MASK
                total = record_size(length)
                if total > size:
                    raise RingBufError(
                        f"record at consumer_pos {cons}: length {length} is larger than the "
                        f"{size}-byte data area"
                    )
                if total > available:
                    raise RingBufError(
                        f"record at consumer_pos {cons}: {total} bytes reach past "
                        f"producer_pos {prod} (torn record)"
                    )
                cons = (cons + total) & _U64_MASK
                available -= total
                if not header & BPF_RINGBUF_DISCARD_BIT:
                    view = self._sample(offset + BPF_RINGBUF_HDR_SZ, length)
                    delivered += 1
                    try:
                        yield view
                    finally:
                        view.release()
                        self._consumer[0] = cons
                else:
                    self._consumer[0] = cons

    def consume(
        self, callback: Callable[[memoryview], object], max_records: int | None = None
    ) -> int:
        """Hand up to `max_records` records (None: all there are) to `callback`, in order;
        return how many. The view is valid during the call only."""
        with contextlib.closing(self._walk(check_max_records(max_records))) as walk:
            count = 0
            for view in walk:
                callback(view)
                count += 1
        return count

    def records(self, max_records: int | None = None) -> Iterator[bytes]:
        """Copies of up to `max_records` records, in order."""
        with contextlib.closing(self._walk(check_max_records(max_records))) as walk:
            for view in walk:
                yield view.tobytes()


class RingBuf(Closeable):
    """The mappings of a BPF ring buffer map and their reader (the map fd stays the caller's).

    Make one with `RingBuf.open`; `close()` (or leaving the ``with`` block) releases the
    reader and unmaps both parts, the second even when the first fails.
    """

    def __init__(
        self,
        map_fd: OwnedFd | int,
        backend: Backend,
        mappings: list[Mapping],
        reader: RingBufReader,
    ) -> None:
        self.map_fd = map_fd
        self.reader = reader
        self._backend = backend
        self._mappings = mappings

    @classmethod
    def open(
        cls,
        map_fd: OwnedFd | int,
        *,
        max_entries: int | None = None,
        backend: Backend | None = None,
        page_size: int = mmap.PAGESIZE,
    ) -> RingBuf:
        """Map the consumer page read-write at offset 0 and the producer page plus the doubled
        data area read-only at offset `page_size`. `max_entries` defaults to the map's (from
        BPF_OBJ_GET_INFO_BY_FD). Nothing stays mapped when a step fails."""
        if backend is not None:
            b = backend
        else:
            b = map_fd.backend if isinstance(map_fd, OwnedFd) else current_backend()
        fd = map_fd.fileno() if isinstance(map_fd, OwnedFd) else map_fd
        size = int(map_info(map_fd, backend=b).max_entries) if max_entries is None else max_entries
        mappings: list[Mapping] = []
        try:
            rw, ro = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ
            mappings.append(sys_mmap(fd, page_size, rw, mmap.MAP_SHARED, 0, backend=b))
            mappings.append(
                sys_mmap(fd, page_size + 2 * size, ro, mmap.MAP_SHARED, page_size, backend=b)
            )
            reader = RingBufReader(mappings[0], mappings[1], size, data_offset=page_size)
        except BaseException:
            _unmap_all(mappings, b)
            raise
        return cls(map_fd, b, mappings, reader)

    @property
    def closed(self) -> bool:
        return not self._mappings

    def fileno(self) -> int:
        """The map fd (pollable: readable while data is available)."""
        return self.map_fd.fileno() if isinstance(self.map_fd, OwnedFd) else self.map_fd

    def readable(self) -> bool:
        return self.reader.readable()

    def poll(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: forever) for data; whether there is some."""
        if self.reader.readable():
            return True
        timeout_ms = -1 if timeout is None else max(0, round(timeout * 1000))
        self._backend.poll([self.fileno()], timeout_ms)
        return self.reader.readable()

    def consume(
        self, callback: Callable[[memoryview], object], max_records: int | None = None
    ) -> int:
        """See `RingBufReader.consume`."""
        return self.reader.consume(callback, max_records)

    def records(self, max_records: int | None = None) -> Iterator[bytes]:
        """See `RingBufReader.records`."""
        return self.reader.records(max_records)

    def close(self) -> None:
        """Release the reader and unmap; idempotent."""
        if self._mappings:
            self.reader.release()
            mappings, self._mappings = self._mappings, []
            _unmap_all(mappings, self._backend)


def _unmap_all(mappings: list[Mapping], backend: Backend) -> None:
    """Unmap each mapping, all of them even when one fails (the first error is raised)."""
    with contextlib.ExitStack() as stack:
        for mapping in mappings:
            stack.callback(sys_munmap, mapping, backend=backend)
