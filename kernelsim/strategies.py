"""Hypothesis state machines for ring consumers, and the ring writers they drive.

Theory of operation
-------------------
A ring consumer is right when, for any sequence of writes and reads, every record the producer
wrote is delivered exactly once, in order, byte for byte, or is counted as lost -- and nothing
else is. The machines here check that against a *writer*, which is a parameter:

* `ModelPerfWriter` and `ModelRingBufWriter` -- pure-Python models of the kernel's producers
  into a bytearray (the rules are in their docstrings, taken from kernel/events/ring_buffer.c
  and kernel/bpf/ringbuf.c);
* `ProgramPerfWriter` and `ProgramRingBufWriter` -- a raw tracepoint program calling
  ``bpf_perf_event_output`` / ``bpf_ringbuf_output``, run by BPF_PROG_TEST_RUN on any backend:
  the live kernel, or the simulated one once it runs programs;
* `SimPerfWriter` -- the simulated kernel's perf output path into a ring mapped through a
  `SimBackend`;
* anything else with the `PerfRingWriter` / `RingBufWriter` shape.

`perf_ring_machine(make_writer, ring_sizes)` and `ringbuf_machine(...)` return a
`RuleBasedStateMachine` class; run it as ``TestX = perf_ring_machine(...).TestCase``.

The perf machine keeps the stream the consumer must see: each successful write appends its
sample, preceded by ``("lost", k)`` when k writes failed since the previous success -- the
kernel writes its PERF_RECORD_LOST in front of the next record that fits (perf_output_begin).
Reads (through `records`, `read_batch` or `read_events`, at most a drawn number of records, at
any lag) must take that stream from its front, and ``data_tail`` must land exactly after the
records taken. The ringbuf machine keeps the reservations in producer order: a read delivers the
committed, non-discarded ones from the front and stops at the first one still BUSY. Teardown
drains the ring, flushes a pending lost count with one more write, and checks that the lost
counts reported add up to the writes that failed.
"""

from __future__ import annotations

import errno
import mmap
import struct
from collections import deque
from collections.abc import Callable
from typing import ClassVar, Final, Literal, Protocol, TypeAlias

from hypothesis import event, target
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bpfsys.abi import (
    BPF_RINGBUF_BUSY_BIT,
    BPF_RINGBUF_DISCARD_BIT,
    DATA_HEAD_OFFSET,
    DATA_TAIL_OFFSET,
    BpfFunc,
    MapType,
    PerfRecordType,
    ProgType,
    SampleType,
)
from bpfsys.asm import Insn, assemble_text
from bpfsys.backend import Backend, current_backend
from bpfsys.bpf import map_create, map_update_elem, prog_load, prog_test_run
from bpfsys.fd import OwnedFd
from bpfsys.perf_buffer import RAW_DATA_OFFSET, PerfBuffer, PerfRingReader
from bpfsys.perf_records import (
    LostRecord,
    Sample,
    encode_lost,
    encode_sample,
    raw_padded_size,
)
from bpfsys.ringbuf import RingBuf, RingBufReader, record_size
from kernelsim.backend import SimBackend

__all__ = [
    "ModelPerfWriter",
    "ModelRingBufWriter",
    "PerfRingWriter",
    "ProgramPerfWriter",
    "ProgramRingBufWriter",
    "RingBufWriter",
    "SimPerfWriter",
    "payload",
    "perf_ring_machine",
    "program_writer_unavailable",
    "ringbuf_machine",
]

MODEL_DATA_OFFSET: Final = 2048
"""Where the model perf ring's data starts: room for struct perf_event_mmap_page."""
MODEL_PAGE: Final = 64
"""The model ringbuf's consumer/producer "page": it only has to hold the positions."""
PERF_RECORD_MISC_KERNEL: Final = 1
LOST_RECORD_SIZE: Final = 24
"""PERF_RECORD_LOST without sample_id: header, u64 id, u64 lost."""

_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")
_U64_MASK: Final = (1 << 64) - 1
_HEAD: Final = DATA_HEAD_OFFSET // 8
_TAIL: Final = DATA_TAIL_OFFSET // 8


def payload(seq: int, length: int) -> bytes:
    """A payload that names its write: `length` bytes counting up from `seq`."""
    return bytes((seq * 37 + i) & 0xFF for i in range(length))


def _copy_in(area: bytearray | memoryview, size: int, pos: int, chunk: bytes) -> None:
    """Write `chunk` at ring position `pos` of the `size`-byte area, wrapping at its end."""
    start = pos % size
    first = min(len(chunk), size - start)
    area[start : start + first] = chunk[:first]
    area[: len(chunk) - first] = chunk[first:]


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
class PerfRingWriter(Protocol):
    """A producer of RAW samples into one perf ring, with the reader of that ring."""

    @property
    def reader(self) -> PerfRingReader: ...

    @property
    def max_payload(self) -> int: ...

    def output(self, data: bytes) -> bool:
        """One bpf_perf_event_output of `data`: True when written, False when dropped."""
        ...

    def close(self) -> None: ...


class RingBufWriter(Protocol):
    """A producer into one BPF ring buffer, with the reader of that ring buffer."""

    @property
    def reader(self) -> RingBufReader: ...

    @property
    def max_payload(self) -> int: ...

    supports_reserve: bool
    """Whether `reserve`/`submit` may be called (models: yes; a program run: no)."""

    def output(self, data: bytes) -> bool:
        """One bpf_ringbuf_output of `data`: True when committed, False when there was no
        room (-EAGAIN)."""
        ...

    def reserve(self, length: int) -> int | None:
        """bpf_ringbuf_reserve: the record's position, or None when there is no room."""
        ...

    def submit(self, position: int, data: bytes, discard: bool) -> None:
        """Fill the reservation at `position` with `data`; commit it or discard it."""
        ...

    def close(self) -> None: ...


class ModelPerfWriter:
    """The kernel's perf output path for a RAW-sampling BPF output event (no sample_id_all),
    pure Python, into a bytearray ring of `data_size` bytes.

    Rules (__perf_output_begin, perf_output_sample, perf_output_end):

    * the record is header + u32 raw size + data, the raw size rounded so that the record is a
      multiple of 8; the padding is skipped, not written (old bytes stay);
    * when records were lost since the last write, a PERF_RECORD_LOST carrying their count goes
      in front of this record and its 24 bytes count in the space needed;
    * space: CIRC_SPACE(head, data_tail, size) = (data_tail - head - 1) mod size must be at least
      the bytes needed, else nothing is written and the lost count grows by one;
    * data_head is stored after the bytes are written.
    """

    def __init__(
        self, data_size: int, *, data_offset: int = MODEL_DATA_OFFSET, event_id: int = 1
    ) -> None:
        self.ring = bytearray(data_offset + data_size)
        self.data_size = data_size
        self.event_id = event_id
        self.pending_lost = 0
        self._meta = memoryview(self.ring)[:data_offset].cast("Q")
        self._data = memoryview(self.ring)[data_offset:]
        self.reader = PerfRingReader(self.ring, data_offset=data_offset, data_size=data_size)

    @property
    def max_payload(self) -> int:
        return self.data_size

    def output(self, data: bytes) -> bool:
        record = encode_sample(Sample(misc=PERF_RECORD_MISC_KERNEL, raw=data), SampleType.RAW)
        written = record[: RAW_DATA_OFFSET + len(data)]
        needed = len(record) + (LOST_RECORD_SIZE if self.pending_lost else 0)
        head, tail = self._meta[_HEAD], self._meta[_TAIL]
        if (tail - head - 1) % self.data_size < needed:
            self.pending_lost += 1
            return False
        if self.pending_lost:
            lost = encode_lost(LostRecord(self.event_id, self.pending_lost))
            _copy_in(self._data, self.data_size, head, lost)
            head += len(lost)
            self.pending_lost = 0
        _copy_in(self._data, self.data_size, head, written)
        self._meta[_HEAD] = (head + len(record)) & _U64_MASK
        return True

    def close(self) -> None:
        self.reader.release()
        self._meta.release()
        self._data.release()


class ModelRingBufWriter:
    """The BPF ring buffer producer (kernel/bpf/ringbuf.c, 6.x), pure Python, over bytearrays:
    a consumer page and a producer page followed by the data area, once or, with `doubled`,
    twice (as the kernel maps it).

    Rules (__bpf_ringbuf_reserve, bpf_ringbuf_commit):

    * a record takes round_up(length + 8, 8) bytes; none larger than the data area is reserved;
    * reserve fails when the new producer position would be more than size - 1 bytes past the
      consumer position, or past the oldest record still BUSY (pending_pos, which first moves
      over the committed records in front of it);
    * reserve writes the header (length | BUSY, pg_off) and then advances producer_pos;
    * submit writes the data and clears BUSY, setting DISCARD for a discarded record.
    """

    supports_reserve = True

    def __init__(self, data_size: int, *, doubled: bool = True) -> None:
        self.data_size = data_size
        self.consumer = bytearray(MODEL_PAGE)
        self.producer = bytearray(MODEL_PAGE + data_size * (2 if doubled else 1))
        self._doubled = doubled
        self._pending_pos = 0
        self._producer_pos = 0
        self._cons = memoryview(self.consumer)[:8].cast("Q")
        self._prod = memoryview(self.producer)[:8].cast("Q")
        self.reader = RingBufReader(self.consumer, self.producer, data_size, data_offset=MODEL_PAGE)

    @property
    def max_payload(self) -> int:
        return self.data_size

    def _write(self, pos: int, chunk: bytes) -> None:
        data = memoryview(self.producer)[MODEL_PAGE:]
        _copy_in(data[: self.data_size], self.data_size, pos, chunk)
        if self._doubled:
            _copy_in(data[self.data_size :], self.data_size, pos, chunk)
        data.release()

    def _header(self, pos: int) -> int:
        offset = MODEL_PAGE + pos % self.data_size
        return int(_U32.unpack_from(self.producer, offset)[0])

    def reserve(self, length: int) -> int | None:
        total = record_size(length)
        if total > self.data_size:
            return None
        mask = self.data_size - 1
        while self._pending_pos < self._producer_pos:
            header = self._header(self._pending_pos)
            if header & BPF_RINGBUF_BUSY_BIT:
                break
            self._pending_pos += record_size(header & ~BPF_RINGBUF_DISCARD_BIT)
        new_pos = self._producer_pos + total
        if new_pos - self._cons[0] > mask or new_pos - self._pending_pos > mask:
            return None
        position = self._producer_pos
        self._write(position, _U32.pack(length | BPF_RINGBUF_BUSY_BIT) + _U32.pack(0))
        self._producer_pos = new_pos
        self._prod[0] = new_pos
        return position

    def submit(self, position: int, data: bytes, discard: bool) -> None:
        length = self._header(position) & ~BPF_RINGBUF_BUSY_BIT
        if length != len(data):
            raise ValueError(f"reservation at {position} is of {length} bytes, not {len(data)}")
        self._write(position + 8, data)
        flags = BPF_RINGBUF_DISCARD_BIT if discard else 0
        self._write(position, _U32.pack(length | flags))

    def output(self, data: bytes) -> bool:
        position = self.reserve(len(data))
        if position is None:
            return False
        self.submit(position, data, discard=False)
        return True

    def close(self) -> None:
        self.reader.release()
        self._cons.release()
        self._prod.release()


def _output_program(data_map: OwnedFd, max_payload: int, call: str) -> list[Insn]:
    """A raw tracepoint program: ctx[0] is a length; it calls the helper set up by `call`
    with r6 = ctx, r7 = length, r8 = the payload (the value of `data_map` at key 0) and
    returns the helper's result (-EINVAL when the length is too large)."""
    return assemble_text(
        f"""
        mov %r6, %r1
        ldxdw %r7, [%r6+0]
        jgt %r7, {max_payload}, fail
        stw [%r10-4], 0
        lddw %r1, map_fd({data_map.fileno()})
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, fail
        mov %r8, %r0
        {call}
        exit
        fail:
        mov %r0, -{errno.EINVAL}
        exit
        """
    )


class SimPerfWriter:
    """The simulated kernel's own perf output path (`kernelsim.perf.output.perf_output`, what
    its bpf_perf_event_output runs) into a `PerfBuffer` of `data_size` bytes opened on CPU
    `cpu` of a `SimBackend` -- the mapping, the ring writer and the reader all real."""

    def __init__(self, data_size: int, backend: SimBackend, *, cpu: int = 0) -> None:
        page = backend.kernel.config.page_size
        self.backend = backend
        self.buffer = PerfBuffer.open(cpu, data_size // page, backend=backend, page_size=page)
        self.max_payload = data_size

    @property
    def reader(self) -> PerfRingReader:
        return self.buffer.reader

    def output(self, data: bytes) -> bool:
        from kernelsim.perf.output import perf_output

        result = perf_output(self.backend.kernel, self.buffer.fileno(), data)
        if result in (0, -errno.ENOSPC):
            return result == 0
        raise OSError(-result, f"perf_output returned {result}")

    def close(self) -> None:
        self.buffer.close()


def program_writer_unavailable(backend: Backend, helper: BpfFunc) -> str | None:
    """Why a program-run writer calling `helper` cannot run on `backend`, or None when it can:
    the simulated kernel runs it once its interpreter has the helper."""
    from kernelsim.backend import SimBackend
    from kernelsim.prog.interpreter.helpers import KERNEL_HELPERS, helper_name

    if isinstance(backend, SimBackend) and int(helper) not in KERNEL_HELPERS:
        return f"the simulated kernel has no {helper_name(helper)} helper yet"
    return None


class _ProgramWriter:
    """What both program-run writers share: the payload map, the program and the test run."""

    def __init__(self, backend: Backend | None, max_payload: int, cpu: int) -> None:
        self.backend = current_backend() if backend is None else backend
        self.max_payload = max_payload
        self.cpu = cpu
        self.data_map = map_create(MapType.ARRAY, 4, max_payload, 1, backend=self.backend)
        self._prog: OwnedFd | None = None

    def _load(self, call: str) -> None:
        insns = _output_program(self.data_map, self.max_payload, call)
        self._prog = prog_load(ProgType.RAW_TRACEPOINT, insns, backend=self.backend)

    def _run(self, data: bytes, full: int) -> bool:
        """Run the program on `data`: True when the helper returned 0, False on `full`."""
        assert self._prog is not None
        map_update_elem(self.data_map, bytes(4), data.ljust(self.max_payload, b"\0"))
        result = prog_test_run(
            self._prog, ctx_in=_U64.pack(len(data)), data_out_size=0, cpu=self.cpu
        )
        if result.retval == 0:
            return True
        if result.retval == -full & 0xFFFF_FFFF:
            return False
        raise OSError(-result.retval & 0xFFFF_FFFF, f"output helper returned {result.retval:#x}")

    def close(self) -> None:
        if self._prog is not None:
            self._prog.close()
        self.data_map.close()


class ProgramPerfWriter(_ProgramWriter):
    """``bpf_perf_event_output(ctx, &map, BPF_F_CURRENT_CPU, data, len)`` from a raw
    tracepoint program run on `cpu` by BPF_PROG_TEST_RUN (BPF_F_TEST_RUN_ON_CPU), into a
    `PerfBuffer` of `data_size` bytes on that CPU, on `backend`."""

    def __init__(
        self,
        data_size: int,
        *,
        backend: Backend | None = None,
        cpu: int = 0,
        max_payload: int = 2048,
    ) -> None:
        super().__init__(backend, max_payload, cpu)
        try:
            self.perf_map = map_create(
                MapType.PERF_EVENT_ARRAY, 4, 4, cpu + 1, backend=self.backend
            )
            self.buffer = PerfBuffer.open(cpu, data_size // mmap.PAGESIZE, backend=self.backend)
            map_update_elem(self.perf_map, _U32.pack(cpu), _U32.pack(self.buffer.fileno()))
            self._load(
                f"""mov %r1, %r6
                lddw %r2, map_fd({self.perf_map.fileno()})
                lddw %r3, 0xffffffff
                mov %r4, %r8
                mov %r5, %r7
                call 25"""
            )
        except BaseException:
            self.close()
            raise

    @property
    def reader(self) -> PerfRingReader:
        return self.buffer.reader

    def output(self, data: bytes) -> bool:
        return self._run(data, errno.ENOSPC)

    def close(self) -> None:
        if hasattr(self, "buffer"):
            self.buffer.close()
        if hasattr(self, "perf_map"):
            self.perf_map.close()
        super().close()


class ProgramRingBufWriter(_ProgramWriter):
    """``bpf_ringbuf_output(&ringbuf, data, len, 0)`` from a raw tracepoint program run by
    BPF_PROG_TEST_RUN, into a BPF_MAP_TYPE_RINGBUF of `data_size` bytes read through `RingBuf`.
    Reservations cannot be held open across runs: `supports_reserve` is False."""

    supports_reserve = False

    def __init__(
        self,
        data_size: int,
        *,
        backend: Backend | None = None,
        cpu: int = 0,
        max_payload: int = 2048,
    ) -> None:
        super().__init__(backend, max_payload, cpu)
        try:
            self.ringbuf_map = map_create(MapType.RINGBUF, 0, 0, data_size, backend=self.backend)
            self.ringbuf = RingBuf.open(self.ringbuf_map, max_entries=data_size)
            self._load(
                f"""lddw %r1, map_fd({self.ringbuf_map.fileno()})
                mov %r2, %r8
                mov %r3, %r7
                mov %r4, 0
                call 130"""
            )
        except BaseException:
            self.close()
            raise

    @property
    def reader(self) -> RingBufReader:
        return self.ringbuf.reader

    def output(self, data: bytes) -> bool:
        return self._run(data, errno.EAGAIN)

    def reserve(self, length: int) -> int | None:
        raise NotImplementedError("a program run cannot hold a reservation open")

    def submit(self, position: int, data: bytes, discard: bool) -> None:
        raise NotImplementedError("a program run cannot hold a reservation open")

    def close(self) -> None:
        if hasattr(self, "ringbuf"):
            self.ringbuf.close()
        if hasattr(self, "ringbuf_map"):
            self.ringbuf_map.close()
        super().close()


# ---------------------------------------------------------------------------------------------
# The perf ring machine
# ---------------------------------------------------------------------------------------------
Expected: TypeAlias = tuple[Literal["sample", "lost"], bytes | int]
PERF_READ_APIS: Final = ("records", "batch", "events")


class PerfRingMachine(RuleBasedStateMachine):
    """Writes and reads of one perf ring against the stream they must produce (module doc).

    Subclasses (made by `perf_ring_machine`) set `make_writer` (data size -> writer),
    `ring_sizes` (a strategy of data sizes) and `max_burst`.
    """

    make_writer: ClassVar[Callable[[int], PerfRingWriter]]
    ring_sizes: ClassVar[st.SearchStrategy[int]]
    max_burst: ClassVar[int] = 40

    def __init__(self) -> None:
        super().__init__()
        self.writer: PerfRingWriter | None = None
        self.expected: deque[Expected] = deque()
        self.failed_writes = 0
        self.reported_lost = 0
        self.unreported = 0
        self.position = 0
        self.seq = 0
        self.wraps = 0

    # -- helpers --------------------------------------------------------------------------------
    @property
    def ring(self) -> PerfRingWriter:
        assert self.writer is not None
        return self.writer

    def _write(self, length: int) -> None:
        self.seq += 1
        data = payload(self.seq, length)
        if self.ring.output(data):
            if self.unreported:
                self.expected.append(("lost", self.unreported))
                self.unreported = 0
            self.expected.append(("sample", data))
        else:
            self.failed_writes += 1
            self.unreported += 1

    def _take(self, kind: Literal["sample", "lost"], value: bytes | int) -> None:
        """Check one delivered record against the front of the expected stream."""
        assert self.expected, f"{kind} {value!r} delivered, nothing was written"
        want_kind, want = self.expected.popleft()
        assert kind == want_kind, f"delivered {kind} {value!r}, expected {want_kind} {want!r}"
        if kind == "lost":
            assert isinstance(value, int) and value == want, f"lost {value!r}, expected {want!r}"
            self.reported_lost += value
            size = LOST_RECORD_SIZE
        else:
            assert isinstance(value, bytes) and isinstance(want, bytes)
            assert len(value) == raw_padded_size(len(want)), "raw size is not the padded size"
            assert value[: len(want)] == want, "sample bytes differ from what was written"
            size = RAW_DATA_OFFSET + len(value)
            offset = self.position % self.ring.reader.data_size
            if offset + size > self.ring.reader.data_size:
                self.wraps += 1
                event(f"wrapped sample: payload length {len(want) % 8} mod 8")
        self.position += size

    def _read(self, api: str, limit: int | None) -> int:
        """Read through `api`, check what comes; the number of records delivered."""
        reader = self.ring.reader
        before = len(self.expected)
        if api == "records":
            for record in reader.records(limit):
                if isinstance(record, Sample):
                    self._take("sample", record.raw or b"")
                else:
                    assert isinstance(record, LostRecord), f"unexpected record {record!r}"
                    self._take("lost", record.lost)
        elif api == "batch":
            with reader.read_batch(limit) as batch:
                for run in batch.runs:
                    if run.type == PerfRecordType.SAMPLE:
                        for raw in run.raw_samples():
                            self._take("sample", raw.tobytes())
                    else:
                        assert run.type == PerfRecordType.LOST, f"unexpected type {run.type}"
                        for one in run.records():
                            self._take("lost", _U64.unpack_from(one, 16)[0])
        else:
            self._read_events(reader, limit or 64)
        assert reader.data_tail == self.position & _U64_MASK, "data_tail is not after the read"
        return before - len(self.expected)

    def _pass_lost(self) -> int:
        """Take the lost records at the front of the expected stream (read_events reports only
        their sum); return that sum."""
        total = 0
        while self.expected and self.expected[0][0] == "lost":
            count = self.expected[0][1]
            assert isinstance(count, int)
            self._take("lost", count)
            total += count
        return total

    def _read_events(self, reader: PerfRingReader, buffers: int) -> None:
        bufs = [bytearray() for _ in range(buffers)]
        read, lost = reader.read_events(bufs)
        wanted_lost = 0
        for buf in bufs[:read]:
            wanted_lost += self._pass_lost()
            self._take("sample", bytes(buf))
        if read < buffers:  # the ring was drained: the lost records at its end went too
            wanted_lost += self._pass_lost()
        assert lost == wanted_lost, f"read_events lost {lost}, expected {wanted_lost}"

    # -- rules ----------------------------------------------------------------------------------
    @initialize(data=st.data())
    def open_ring(self, data: st.DataObject) -> None:
        size = data.draw(self.ring_sizes, label="data_size")
        self.writer = type(self).make_writer(size)
        self.position = self.writer.reader.data_tail

    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        limit = min(self.ring.max_payload, self.ring.reader.data_size)
        self._write(data.draw(st.integers(0, limit), label="length"))

    @rule(data=st.data())
    def write_burst(self, data: st.DataObject) -> None:
        """Same-length records in a row: runs for the batch path, and a full ring."""
        limit = min(self.ring.max_payload, self.ring.reader.data_size // 4)
        length = data.draw(st.integers(0, limit), label="length")
        for _ in range(data.draw(st.integers(1, self.max_burst), label="count")):
            self._write(length)

    @rule(
        api=st.sampled_from(PERF_READ_APIS),
        limit=st.none() | st.integers(1, 16),
    )
    def read(self, api: str, limit: int | None) -> None:
        delivered = self._read(api, limit)
        if limit is not None and api != "events":
            assert delivered <= limit, f"{delivered} records delivered, limit {limit}"

    @invariant()
    def tail_never_passes_head(self) -> None:
        if self.writer is not None:
            reader = self.ring.reader
            assert reader.pending() <= reader.data_size, "data_tail passed data_head"

    def teardown(self) -> None:
        if self.writer is None:
            return
        try:
            self._read("records", None)
            if self.unreported:  # the lost count is written with the next record that fits
                self._write(0)
                self._read("records", None)
            assert not self.expected, f"{len(self.expected)} records never delivered"
            assert not self.unreported, "a lost count was never reported"
            assert self.reported_lost == self.failed_writes, "lost counts do not add up"
            target(float(self.wraps), label="wrapped samples")
        finally:
            self.ring.close()


def perf_ring_machine(
    make_writer: Callable[[int], PerfRingWriter],
    ring_sizes: st.SearchStrategy[int],
    *,
    max_burst: int = 40,
) -> type[PerfRingMachine]:
    """A `PerfRingMachine` class over writers made by `make_writer(data_size)`."""
    return type(
        "PerfRingMachine",
        (PerfRingMachine,),
        {
            "make_writer": staticmethod(make_writer),
            "ring_sizes": ring_sizes,
            "max_burst": max_burst,
        },
    )


# ---------------------------------------------------------------------------------------------
# The BPF ring buffer machine
# ---------------------------------------------------------------------------------------------
class _Reservation:
    __slots__ = ("data", "position", "state")

    def __init__(self, position: int, data: bytes) -> None:
        self.position = position
        self.data = data
        self.state: Literal["busy", "committed", "discarded"] = "busy"


class RingBufMachine(RuleBasedStateMachine):
    """Reservations, commits, discards and reads of one BPF ring buffer, checked against the
    reservations in producer order (module doc). Subclasses set `make_writer`, `ring_sizes`."""

    make_writer: ClassVar[Callable[[int], RingBufWriter]]
    ring_sizes: ClassVar[st.SearchStrategy[int]]

    def __init__(self) -> None:
        super().__init__()
        self.writer: RingBufWriter | None = None
        self.records: deque[_Reservation] = deque()
        self.seq = 0
        self.failed = 0
        self.wraps = 0

    @property
    def ring(self) -> RingBufWriter:
        assert self.writer is not None
        return self.writer

    def _expected_read(self, limit: int | None) -> tuple[list[bytes], int]:
        """Pop what a read of at most `limit` records delivers; (records, consumer_pos)."""
        out: list[bytes] = []
        size = self.ring.reader.data_size
        pos = self.ring.reader.consumer_pos
        while self.records and self.records[0].state != "busy":
            if limit is not None and len(out) == limit:
                break
            record = self.records.popleft()
            pos = record.position + record_size(len(record.data))
            if record.state == "committed":
                out.append(record.data)
                if record.position % size + record_size(len(record.data)) > size:
                    self.wraps += 1
                    event(f"wrapped record: length {len(record.data) % 8} mod 8")
        return out, pos

    @initialize(data=st.data())
    def open_ring(self, data: st.DataObject) -> None:
        self.writer = type(self).make_writer(data.draw(self.ring_sizes, label="data_size"))

    def _length(self, data: st.DataObject) -> int:
        limit = min(self.ring.max_payload, self.ring.reader.data_size)
        return data.draw(st.integers(0, limit), label="length")

    @rule(data=st.data())
    def output(self, data: st.DataObject) -> None:
        self.seq += 1
        chunk = payload(self.seq, self._length(data))
        position = self.ring.reader.producer_pos
        if self.ring.output(chunk):
            record = _Reservation(position, chunk)
            record.state = "committed"
            self.records.append(record)
        else:
            self.failed += 1

    @precondition(lambda self: self.writer is not None and self.ring.supports_reserve)
    @rule(data=st.data())
    def reserve(self, data: st.DataObject) -> None:
        self.seq += 1
        chunk = payload(self.seq, self._length(data))
        position = self.ring.reserve(len(chunk))
        if position is None:
            self.failed += 1
        else:
            self.records.append(_Reservation(position, chunk))

    @precondition(
        lambda self: (
            self.writer is not None and any(record.state == "busy" for record in self.records)
        )
    )
    @rule(data=st.data(), discard=st.booleans())
    def submit(self, data: st.DataObject, discard: bool) -> None:
        busy = [record for record in self.records if record.state == "busy"]
        record = data.draw(st.sampled_from(busy), label="reservation")
        self.ring.submit(record.position, record.data, discard)
        record.state = "discarded" if discard else "committed"

    @rule(api=st.sampled_from(("consume", "records")), limit=st.none() | st.integers(1, 8))
    def read(self, api: str, limit: int | None) -> None:
        want, position = self._expected_read(limit)
        reader = self.ring.reader
        got: list[bytes] = []
        if api == "consume":
            count = reader.consume(lambda view: got.append(view.tobytes()), limit)
            assert count == len(got)
        else:
            got = list(reader.records(limit))
        assert got == want, f"delivered {len(got)} records, expected {len(want)} (or bytes differ)"
        assert reader.consumer_pos == position, "consumer_pos is not after the records read"

    @invariant()
    def consumer_never_passes_producer(self) -> None:
        if self.writer is not None:
            reader = self.ring.reader
            assert reader.pending() <= reader.data_size, "consumer_pos passed producer_pos"

    def teardown(self) -> None:
        if self.writer is None:
            return
        try:
            for record in self.records:
                if record.state == "busy":
                    self.ring.submit(record.position, record.data, discard=False)
                    record.state = "committed"
            want, _ = self._expected_read(None)
            assert list(self.ring.reader.records()) == want
            assert not self.ring.reader.readable(), "records left after the final drain"
            target(float(self.wraps), label="wrapped records")
        finally:
            self.ring.close()


def ringbuf_machine(
    make_writer: Callable[[int], RingBufWriter], ring_sizes: st.SearchStrategy[int]
) -> type[RingBufMachine]:
    """A `RingBufMachine` class over writers made by `make_writer(data_size)`."""
    return type(
        "RingBufMachine",
        (RingBufMachine,),
        {"make_writer": staticmethod(make_writer), "ring_sizes": ring_sizes},
    )
