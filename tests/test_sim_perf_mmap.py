"""The perf ring: mmap rules and the user page on every backend; the ring writer (records, wrap,
PERF_RECORD_LOST, overwrite, pause, wakeups) on the simulator, and a model-based property test
of the sans-IO writer.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import select
import struct
from collections.abc import Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from perf_sim_support import PAGE, bpf_output_attr, errno_of

from bpfsys.abi import (
    DATA_HEAD_OFFSET,
    DATA_TAIL_OFFSET,
    PerfAttrFlag,
    PerfEventMmapPage,
    PerfIoctl,
    PerfRecordType,
    SampleType,
)
from bpfsys.backend import Backend, Mapping
from bpfsys.perf_records import LostRecord, Sample, SampleId, iter_records
from kernelsim.backend import SimBackend
from kernelsim.kernel import Kernel, KernelConfig
from kernelsim.perf.output import perf_output
from kernelsim.perf.ring import PerfRing

F = PerfAttrFlag
RW = mmap.PROT_READ | mmap.PROT_WRITE


def page_of(mapping: Mapping) -> PerfEventMmapPage:
    return PerfEventMmapPage.from_buffer_copy(bytes(memoryview(mapping)[:1088]))


@pytest.fixture
def event_fd(backend: Backend) -> Iterator[int]:
    fd = backend.perf_event_open(bpf_output_attr(), -1, 0, -1, 0)
    yield fd
    backend.close(fd)


# ---------------------------------------------------------------------------------------------
# mmap rules (every backend)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("length", "prot", "flags", "offset", "expected"),
    [
        (1 * PAGE, RW, mmap.MAP_SHARED, 0, 0),
        (2 * PAGE, RW, mmap.MAP_SHARED, 0, 0),
        (3 * PAGE, RW, mmap.MAP_SHARED, 0, 0),
        (4 * PAGE, RW, mmap.MAP_SHARED, 0, errno.EINVAL),  # 3 data pages
        (5 * PAGE, RW, mmap.MAP_SHARED, 0, 0),
        (9 * PAGE, RW, mmap.MAP_SHARED, 0, 0),
        (17 * PAGE, RW, mmap.MAP_SHARED, 0, 0),
        (1025 * PAGE, RW, mmap.MAP_SHARED, 0, 0),
        (3 * PAGE - 100, RW, mmap.MAP_SHARED, 0, 0),  # rounded up to pages
        (3 * PAGE + 100, RW, mmap.MAP_SHARED, 0, errno.EINVAL),  # 4 pages
        (3 * PAGE, RW, mmap.MAP_SHARED, PAGE, errno.EINVAL),  # no AUX area
        (3 * PAGE, RW, mmap.MAP_PRIVATE, 0, errno.EINVAL),
        (3 * PAGE, RW | mmap.PROT_EXEC, mmap.MAP_SHARED, 0, errno.EPERM),
        (3 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, 0, 0),
        (3 * PAGE, mmap.PROT_WRITE, mmap.MAP_SHARED, 0, 0),
    ],
)
def test_mmap_geometry(
    backend: Backend, event_fd: int, length: int, prot: int, flags: int, offset: int, expected: int
) -> None:
    mappings: list[object] = []
    assert (
        errno_of(lambda: mappings.append(backend.mmap(event_fd, length, prot, flags, offset)))
        == expected
    )
    for mapping in mappings:
        assert isinstance(mapping, mmap.mmap)
        assert len(mapping) == length
        backend.munmap(mapping)


def test_second_mmap_shares_the_ring_until_unmapped(backend: Backend, event_fd: int) -> None:
    first = backend.mmap(event_fd, 3 * PAGE, RW, mmap.MAP_SHARED, 0)
    second = backend.mmap(event_fd, 3 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, 0)
    assert (
        errno_of(lambda: backend.mmap(event_fd, 5 * PAGE, RW, mmap.MAP_SHARED, 0)) == errno.EINVAL
    )
    struct.pack_into("<Q", first, DATA_TAIL_OFFSET, 64)
    assert struct.unpack_from("<Q", second, DATA_TAIL_OFFSET)[0] == 64  # one shared ring
    backend.munmap(second)
    backend.munmap(first)
    bigger = backend.mmap(event_fd, 5 * PAGE, RW, mmap.MAP_SHARED, 0)  # a new ring now
    assert page_of(bigger).data_size == 4 * PAGE
    assert page_of(bigger).data_tail == 0
    backend.munmap(bigger)


def test_inherited_task_event_cannot_be_mapped(backend: Backend) -> None:
    fd = backend.perf_event_open(bpf_output_attr(flags=int(F.INHERIT)), 0, -1, -1, 0)
    cpu_fd = backend.perf_event_open(bpf_output_attr(flags=int(F.INHERIT)), -1, 0, -1, 0)
    try:
        assert errno_of(lambda: backend.mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)) == errno.EINVAL
        mapping = backend.mmap(cpu_fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
        backend.munmap(mapping)
    finally:
        backend.close(fd)
        backend.close(cpu_fd)


@pytest.mark.parametrize(
    ("attr_fields", "pid", "cpu", "pages"),
    [
        ({}, -1, 0, 3),
        ({}, -1, 1, 9),
        ({"flags": int(F.DISABLED)}, -1, 0, 2),
        ({}, 0, -1, 2),
        ({"config": 0, "sample_period": 0, "sample_type": 0}, -1, 0, 1),
    ],
)
def test_user_page_fields(
    backend: Backend, attr_fields: dict[str, int], pid: int, cpu: int, pages: int
) -> None:
    fd = backend.perf_event_open(bpf_output_attr(**attr_fields), pid, cpu, -1, 0)
    mapping = backend.mmap(fd, pages * PAGE, RW, mmap.MAP_SHARED, 0)
    try:
        page = page_of(mapping)
        assert (page.version, page.compat_version, page.index, page.offset) == (0, 0, 0, 0)
        assert page.lock >= 2 and page.lock % 2 == 0  # updates done (2 each; more for tasks)
        assert page.capabilities == 0b10  # cap_bit0_is_deprecated (no user time on this VM)
        assert (page.pmc_width, page.time_shift, page.time_mult, page.time_zero) == (0, 0, 0, 0)
        assert page.size == PerfEventMmapPage._reserved.offset == 96
        assert (page.data_offset, page.data_size) == (PAGE, (pages - 1) * PAGE)
        assert (page.data_head, page.data_tail) == (0, 0)
        assert (page.aux_head, page.aux_tail, page.aux_offset, page.aux_size) == (0, 0, 0, 0)
        assert not any(bytes(page._reserved))
        if attr_fields.get("flags") == F.DISABLED:
            assert page.time_enabled == page.time_running == 0
        assert page.time_enabled >= page.time_running  # equal unless a task was scheduled out
    finally:
        backend.munmap(mapping)
        backend.close(fd)


def test_poll_readiness_follows_the_ring(backend: Backend, event_fd: int) -> None:
    assert backend.poll([event_fd], 0) == [event_fd]  # no ring: POLLHUP
    assert backend.poll([event_fd], 0) == [event_fd]
    mapping = backend.mmap(event_fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    assert backend.poll([event_fd], 0) == []
    backend.munmap(mapping)
    assert backend.poll([event_fd], 0) == [event_fd]


# ---------------------------------------------------------------------------------------------
# The writer through perf_output (simulator)
# ---------------------------------------------------------------------------------------------
def ring_records(
    mapping: Mapping, sample_type: int, start: int = 0, sample_id_all: bool = False
) -> list[object]:
    data_size = len(mapping) - PAGE
    head = struct.unpack_from("<Q", mapping, DATA_HEAD_OFFSET)[0]
    data = bytes(memoryview(mapping)[PAGE:])
    pos = start % data_size
    chunk = (data + data)[pos : pos + head - start]
    return list(iter_records(chunk, sample_type, sample_id_all))


@pytest.fixture
def sim() -> Iterator[SimBackend]:
    """A simulated kernel whose current task has the fixed pid 4242 (and comm python3)."""
    backend = SimBackend(Kernel(KernelConfig(pid=4242)))
    yield backend
    backend.kernel.close_all()


def test_samples_are_laid_out_per_sample_type(sim: SimBackend) -> None:
    st_ = SampleType.IDENTIFIER | SampleType.TID | SampleType.TIME | SampleType.CPU
    st_ |= SampleType.PERIOD | SampleType.RAW | SampleType.ID | SampleType.STREAM_ID
    fd = sim.perf_event_open(bpf_output_attr(sample_type=int(st_)), -1, 1, -1, 0)
    mapping = sim.mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    sim.kernel.advance(12345)
    assert perf_output(sim.kernel, fd, b"abc", ip=0x1234) == 0
    [sample] = ring_records(mapping, int(st_))
    event_id = ctypes.c_uint64(0)
    sim.ioctl(fd, PerfIoctl.ID, ctypes.addressof(event_id))
    assert isinstance(sample, Sample)
    assert sample.identifier == sample.id == sample.stream_id == event_id.value
    assert (sample.pid, sample.tid, sample.cpu, sample.period) == (4242, 4242, 1, 1)
    assert sample.time == sim.kernel.now_ns
    assert sample.raw == b"abc\0"  # padded: size + 4 is a multiple of 8
    mapping.close()


def test_read_and_empty_fields_keep_the_kernels_order(sim: SimBackend) -> None:
    st_ = SampleType.PERIOD | SampleType.READ | SampleType.RAW | SampleType.DATA_SRC
    attr = bpf_output_attr(sample_type=int(st_), read_format=0b111)
    fd = sim.perf_event_open(attr, -1, 0, -1, 0)
    mapping = sim.mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    sim.kernel.advance(1000)
    assert perf_output(sim.kernel, fd, b"") == 0
    raw = bytes(memoryview(mapping)[PAGE : PAGE + 64])
    kind, _misc, size = struct.unpack_from("<IHH", raw)
    assert (kind, size) == (PerfRecordType.SAMPLE, 8 + 8 + 32 + 8 + 8)
    period, count, enabled, running, event_id = struct.unpack_from("<5Q", raw, 8)
    assert (period, count, enabled, running) == (1, 0, 1000, 1000) and event_id > 0
    assert struct.unpack_from("<IIQ", raw, 48) == (4, 0, 0)  # empty raw, then DATA_SRC
    mapping.close()


def test_full_ring_drops_and_reports_lost(sim: SimBackend) -> None:
    attr = bpf_output_attr(
        flags=int(F.SAMPLE_ID_ALL), sample_type=int(SampleType.RAW | SampleType.TID)
    )
    fd = sim.perf_event_open(attr, -1, 0, -1, 0)
    mapping = sim.mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    sample_size = 8 + 8 + 4 + 20  # header, tid, raw size + 20 bytes (size + 4 is 24)
    written = [perf_output(sim.kernel, fd, bytes([i]) * 20) for i in range(200)]
    fits = (PAGE - 1) // sample_size
    assert written == [0] * fits + [-errno.ENOSPC] * (200 - fits)
    head = struct.unpack_from("<Q", mapping, DATA_HEAD_OFFSET)[0]
    assert head == fits * sample_size
    struct.pack_into("<Q", mapping, DATA_TAIL_OFFSET, head)  # the consumer read everything
    assert perf_output(sim.kernel, fd, b"after") == 0
    records = ring_records(mapping, int(SampleType.RAW | SampleType.TID), head, sample_id_all=True)
    lost, sample = records
    assert isinstance(lost, LostRecord) and lost.lost == 200 - fits
    assert lost.sample_id == SampleId(pid=4242, tid=4242)
    assert isinstance(sample, Sample) and sample.raw is not None and sample.raw.startswith(b"after")
    mapping.close()


def test_read_only_mapping_overwrites(sim: SimBackend) -> None:
    fd = sim.perf_event_open(bpf_output_attr(), -1, 0, -1, 0)
    mapping = sim.mmap(fd, 2 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, 0)
    results = {perf_output(sim.kernel, fd, b"z" * 28) for _ in range(300)}
    assert results == {0}  # never full: old records are overwritten
    assert struct.unpack_from("<Q", mapping, DATA_HEAD_OFFSET)[0] == 300 * 40
    mapping.close()


def test_write_backward_ring(sim: SimBackend) -> None:
    fd = sim.perf_event_open(bpf_output_attr(flags=int(F.WRITE_BACKWARD)), -1, 0, -1, 0)
    mapping = sim.mmap(fd, 2 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, 0)
    for text in (b"one", b"two"):
        assert perf_output(sim.kernel, fd, text) == 0
    head = struct.unpack_from("<Q", mapping, DATA_HEAD_OFFSET)[0]
    assert head == (-32) & ((1 << 64) - 1)  # two 16-byte records, written downwards
    data = bytes(memoryview(mapping)[PAGE:])
    newest_first = list(iter_records(data[PAGE - 32 :], int(SampleType.RAW)))
    assert [r.raw for r in newest_first if isinstance(r, Sample)] == [b"two\0", b"one\0"]
    mapping.close()


def test_pause_output_drops_and_counts(sim: SimBackend) -> None:
    fd = sim.perf_event_open(bpf_output_attr(), -1, 0, -1, 0)
    mapping = sim.mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    sim.ioctl(fd, PerfIoctl.PAUSE_OUTPUT, 1)
    assert perf_output(sim.kernel, fd, b"dropped") == -errno.ENOSPC
    sim.ioctl(fd, PerfIoctl.PAUSE_OUTPUT, 0)
    assert perf_output(sim.kernel, fd, b"kept") == 0
    lost, sample = ring_records(mapping, int(SampleType.RAW))
    assert isinstance(lost, LostRecord) and lost.lost == 1
    assert isinstance(sample, Sample) and sample.raw == b"kept"
    mapping.close()


def test_output_without_a_ring_or_pages(sim: SimBackend) -> None:
    fd = sim.perf_event_open(bpf_output_attr(), -1, 0, -1, 0)
    assert perf_output(sim.kernel, fd, b"x") == -errno.ENOSPC
    one_page = sim.mmap(fd, PAGE, RW, mmap.MAP_SHARED, 0)
    assert perf_output(sim.kernel, fd, b"x") == -errno.ENOSPC
    one_page.close()
    big = sim.mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    assert perf_output(sim.kernel, fd, bytes(70_000)) == -errno.E2BIG
    big.close()


def test_redirected_event_writes_into_the_target_ring(sim: SimBackend) -> None:
    a = sim.perf_event_open(bpf_output_attr(), -1, 0, -1, 0)
    c = sim.perf_event_open(bpf_output_attr(), -1, 0, -1, 0)
    mapping = sim.mmap(a, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    sim.ioctl(c, PerfIoctl.SET_OUTPUT, a)
    assert perf_output(sim.kernel, c, b"from c") == 0
    [sample] = ring_records(mapping, int(SampleType.RAW))
    assert isinstance(sample, Sample) and sample.raw == b"from c\0\0\0\0\0\0"
    assert sorted(sim.poll([a, c], 0)) == [a]  # the wakeup is polled once
    mapping.close()
    assert perf_output(sim.kernel, c, b"gone") == -errno.ENOSPC  # the ring went with its mapping


@pytest.mark.parametrize(
    ("wakeup_events", "watermark", "writes", "wakeups"),
    [(1, 0, 3, 3), (3, 0, 7, 2), (0, 0, 64, 1), (0, 256, 20, 3)],
)
def test_wakeups(
    sim: SimBackend, wakeup_events: int, watermark: int, writes: int, wakeups: int
) -> None:
    flags = int(F.WATERMARK) if watermark else 0
    attr = bpf_output_attr(wakeup_events=watermark or wakeup_events, flags=flags)
    fd = sim.perf_event_open(attr, -1, 0, -1, 0)
    mapping = sim.mmap(fd, 2 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, 0)
    seen = 0
    for _ in range(writes):
        perf_output(sim.kernel, fd, bytes(28))  # 40-byte records
        seen += len(sim.poll([fd], 0))
        assert sim.poll([fd], 0) == []  # a poll consumes the wakeup
    assert seen == wakeups
    mapping.close()


def test_fd_is_selectable(sim: SimBackend) -> None:
    fd = sim.perf_event_open(bpf_output_attr(), -1, 0, -1, 0)
    mapping = sim.mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    sim.poll([fd], 0)
    assert select.select([fd], [], [], 0)[0] == []
    perf_output(sim.kernel, fd, b"x")
    assert select.select([fd], [], [], 0)[0] == [fd]
    mapping.close()


# ---------------------------------------------------------------------------------------------
# Model-based test of the sans-IO writer
# ---------------------------------------------------------------------------------------------
RING_PAGE = 4096
DATA_PAGES = 1


def lost_record(count: int) -> bytes:
    return struct.pack("<IHHQQ", PerfRecordType.LOST, 0, 24, 7, count)


class RingMachine(RuleBasedStateMachine):
    """A producer writes records of arbitrary sizes; a consumer reads and advances data_tail.
    Every record arrives once, in order, byte for byte, or is counted in a PERF_RECORD_LOST."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = bytearray((1 + DATA_PAGES) * RING_PAGE)
        self.ring = PerfRing(memoryview(self.memory), RING_PAGE, DATA_PAGES, overwrite=False)
        self.ring.init_user_page()
        self.serial = 0
        self.sent: list[bytes] = []
        """Records not yet consumed or declared lost, in order."""
        self.dropped = 0
        self.reported_lost = 0
        self.lost_in_ring = 0
        """Drops counted by PERF_RECORD_LOST records written but not yet consumed."""

    @rule(payload=st.integers(0, 1200), fill=st.integers(0, 255))
    def produce(self, payload: int, fill: int) -> None:
        self.serial += 1
        body = struct.pack("<Q", self.serial) + bytes([fill]) * (payload // 8 * 8)
        record = struct.pack("<IHH", PerfRecordType.SAMPLE, 0, 8 + len(body)) + body
        pending = self.ring.lost
        result = self.ring.output(record, lost_record=lost_record)
        if result.written:
            self.sent.append(record)
            self.lost_in_ring += pending
        else:
            self.dropped += 1

    @rule(limit=st.integers(1, 5))
    def consume(self, limit: int) -> None:
        head = struct.unpack_from("<Q", self.memory, DATA_HEAD_OFFSET)[0]
        tail = struct.unpack_from("<Q", self.memory, DATA_TAIL_OFFSET)[0]
        data = bytes(self.memory[RING_PAGE:])
        for _ in range(limit):
            if tail == head:
                break
            pos = tail % RING_PAGE
            kind, _, size = struct.unpack_from("<IHH", (data + data)[pos : pos + 8])
            record = (data + data)[pos : pos + size]
            if kind == PerfRecordType.LOST:
                count = struct.unpack_from("<Q", record, 16)[0]
                self.reported_lost += count
                self.lost_in_ring -= count
            else:
                assert self.sent, "a record nobody sent"
                assert record == self.sent.pop(0)
            tail += size
        struct.pack_into("<Q", self.memory, DATA_TAIL_OFFSET, tail)

    @invariant()
    def lost_counts_add_up(self) -> None:
        assert self.reported_lost + self.lost_in_ring + self.ring.lost == self.dropped
        assert self.lost_in_ring >= 0

    @invariant()
    def ring_never_overflows(self) -> None:
        head = struct.unpack_from("<Q", self.memory, DATA_HEAD_OFFSET)[0]
        tail = struct.unpack_from("<Q", self.memory, DATA_TAIL_OFFSET)[0]
        assert 0 <= head - tail < RING_PAGE
        assert head % 8 == 0


TestRingMachine = RingMachine.TestCase
TestRingMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


def test_wraparound_hits_every_offset_modulo_8() -> None:
    """Records of every size class cross the ring's end at every 8-byte aligned phase."""
    memory = bytearray(2 * RING_PAGE)
    ring = PerfRing(memoryview(memory), RING_PAGE, 1, overwrite=True)
    phases: set[int] = set()
    for size in range(16, 16 + 8 * 64, 8):
        for _ in range(RING_PAGE // size + 2):
            start = ring.head % RING_PAGE
            body = (bytes(range(256)) * 4)[: size - 8]
            record = struct.pack("<IHH", PerfRecordType.SAMPLE, 0, size) + body
            ring.output(record, lost_record=lost_record)
            if start + size > RING_PAGE:
                phases.add((RING_PAGE - start) // 8 % 8)
                # The record continues at the start of the data area.
                split = RING_PAGE - start
                assert bytes(memory[RING_PAGE + start :]) == record[:split]
                assert bytes(memory[RING_PAGE : RING_PAGE + size - split]) == record[split:]
    assert phases == set(range(8))


def test_ring_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError):
        PerfRing(memoryview(bytearray(4 * RING_PAGE)), RING_PAGE, 3, overwrite=False)
    with pytest.raises(ValueError):
        PerfRing(memoryview(bytearray(RING_PAGE)), RING_PAGE, 1, overwrite=False)
