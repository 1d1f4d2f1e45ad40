"""The BPF ring buffer producer: the sans-IO rules, the map's memory and fd, the test hook."""

from __future__ import annotations

import errno
import mmap
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys.abi import (
    BPF_RB_FORCE_WAKEUP,
    BPF_RB_NO_WAKEUP,
    BpfCmd,
    MapCreateAttr,
    MapType,
)
from bpfsys.bpf import map_create, map_freeze
from bpfsys.ringbuf import RingBuf, RingBufReader
from kernelsim.backend import SimBackend
from kernelsim.maps.ringbuf import RingbufMap, ringbuf_output
from kernelsim.maps.ringbuf_producer import (
    RecordState,
    RingbufProducer,
    record_size,
    wakes,
)

PAGE = 64
SIZE = 256


class Ring:
    """A producer over bytearrays, with a reader of the same memory."""

    def __init__(self, size: int = SIZE) -> None:
        self.consumer = bytearray(PAGE)
        self.producer_page = bytearray(PAGE + 2 * size)
        view = memoryview(self.producer_page)
        self.producer = RingbufProducer(
            memoryview(self.consumer), view[:PAGE], view[PAGE:], size, page_size=4096,
            data_pgoff=3,
        )  # fmt: skip
        self.reader = RingBufReader(self.consumer, self.producer_page, size, data_offset=PAGE)

    def header(self, position: int) -> tuple[int, int]:
        offset = PAGE + position % self.producer.size
        return struct.unpack_from("<II", self.producer_page, offset)


def test_reserve_writes_a_busy_header_and_moves_the_producer() -> None:
    ring = Ring()
    assert ring.producer.reserve(5) == 0
    assert ring.header(0) == (5 | 1 << 31, 3)
    assert (ring.producer.producer_pos, ring.producer.pending_pos) == (16, 0)
    assert ring.producer.state(0) is RecordState.RESERVED
    assert list(ring.reader.records()) == []  # busy: the consumer stops there


def test_commit_and_discard() -> None:
    ring = Ring()
    first = ring.producer.reserve(3)
    second = ring.producer.reserve(2)
    assert (first, second) == (0, 16)
    ring.producer.fill(16, b"hi")
    ring.producer.commit(16, discard=False, flags=0)
    assert list(ring.reader.records()) == []  # the first is still busy
    ring.producer.commit(0, discard=True, flags=0)
    assert ring.producer.state(0) is RecordState.DISCARDED
    assert ring.header(0) == (3 | 1 << 30, 3)
    assert list(ring.reader.records()) == [b"hi"]
    with pytest.raises(ValueError, match="no reservation"):
        ring.producer.commit(16, discard=False, flags=0)


def test_pending_pos_blocks_a_ring_wide_reservation() -> None:
    """6.10+: nothing may be reserved more than size - 1 bytes past the oldest busy record."""
    ring = Ring()
    busy = ring.producer.reserve(8)  # 16 bytes, stays busy
    assert busy == 0
    for _ in range(14):  # fill up to 240 bytes, committing and consuming each
        position = ring.producer.reserve(8)
        assert position is not None
        ring.producer.commit(position, discard=False, flags=0)
    struct.pack_into("<Q", ring.consumer, 0, 0)
    assert ring.producer.reserve(8) is None  # 256 - 0 > 255
    ring.producer.commit(busy, discard=False, flags=0)
    assert len(list(ring.reader.records())) == 15
    assert ring.producer.reserve(8) == 240
    assert ring.producer.pending_pos == 240


def test_records_wrap_through_the_copy() -> None:
    ring = Ring()
    for _ in range(3):
        ok, _ = ring.producer.output(b"x" * 64, 0)  # 72 bytes each
        assert ok == 0
        list(ring.reader.records())
    data = bytes(range(100))
    assert ring.producer.output(data, 0) == (0, True)  # starts at 216, wraps at 256
    assert list(ring.reader.records()) == [data]


@pytest.mark.parametrize(
    ("flags", "caught_up", "wake"),
    [
        (0, True, True),
        (0, False, False),
        (BPF_RB_NO_WAKEUP, True, False),
        (BPF_RB_FORCE_WAKEUP, False, True),
        (BPF_RB_FORCE_WAKEUP | BPF_RB_NO_WAKEUP, False, True),
    ],
)
def test_wakeup_rules(flags: int, caught_up: bool, wake: bool) -> None:
    assert wakes(flags, caught_up) is wake


def test_output_errors_and_query() -> None:
    ring = Ring()
    assert ring.producer.output(b"a", 4) == (-errno.EINVAL, False)
    assert ring.producer.output(bytes(SIZE - 8), 0) == (-errno.EAGAIN, False)
    assert ring.producer.output(b"abc", 0) == (0, True)
    assert ring.producer.output(b"abc", 0) == (0, False)  # the consumer is behind
    assert [ring.producer.query(f) for f in range(5)] == [32, SIZE, 0, 32, 0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 120), st.booleans(), st.booleans()), max_size=40))
def test_reader_sees_every_committed_record(ops: list[tuple[int, bool, bool]]) -> None:
    """Random outputs, discards and reads: the reader gets exactly the submitted records."""
    ring = Ring()
    sent: list[bytes] = []
    got: list[bytes] = []
    for seq, (length, discard, read) in enumerate(ops):
        data = bytes((seq + i) & 0xFF for i in range(length))
        position = ring.producer.reserve(length)
        if position is not None:
            ring.producer.fill(position, data)
            ring.producer.commit(position, discard=discard, flags=0)
            if not discard:
                sent.append(data)
        assert ring.producer.available() <= SIZE - 1
        if read:
            got += ring.reader.records()
    got += ring.reader.records()
    assert got == sent
    assert record_size(0) == 8


# ---------------------------------------------------------------------------------------------
# The map
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def sim() -> Iterator[SimBackend]:
    backend = SimBackend()
    yield backend
    backend.kernel.close_all()


def test_test_hook_output_reaches_a_mapped_reader(sim: SimBackend) -> None:
    with map_create(MapType.RINGBUF, 0, 0, 4096, backend=sim) as fd, RingBuf.open(fd) as ring:
        assert ringbuf_output(sim.kernel, fd.fileno(), b"one") == 0
        ring_map = sim.kernel.fds.get(fd.fileno(), RingbufMap)
        assert ringbuf_output(sim.kernel, ring_map, b"two", BPF_RB_NO_WAKEUP) == 0
        assert ringbuf_output(sim.kernel, fd.fileno(), b"", 8) == -errno.EINVAL
        assert list(ring.records()) == [b"one", b"two"]
        assert ringbuf_output(sim.kernel, fd.fileno(), bytes(4096 - 16)) == 0
        assert ringbuf_output(sim.kernel, fd.fileno(), b"x") == -errno.EAGAIN


def test_poll_follows_available_data(sim: SimBackend) -> None:
    with map_create(MapType.RINGBUF, 0, 0, 4096, backend=sim) as fd, RingBuf.open(fd) as ring:
        assert sim.poll([fd.fileno()], 0) == []
        assert ringbuf_output(sim.kernel, fd.fileno(), b"data", BPF_RB_NO_WAKEUP) == 0
        assert sim.poll([fd.fileno()], 0) == [fd.fileno()]  # readable: data is there
        assert list(ring.records()) == [b"data"]
        assert sim.poll([fd.fileno()], 0) == []
        assert ringbuf_output(sim.kernel, fd.fileno(), b"more") == 0
        assert ring.poll(0.5)


def test_a_wakeup_reaches_a_selector_without_poll(sim: SimBackend) -> None:
    import selectors

    with (
        map_create(MapType.RINGBUF, 0, 0, 4096, backend=sim) as fd,
        RingBuf.open(fd),
        selectors.DefaultSelector() as selector,
    ):
        selector.register(fd.fileno(), selectors.EVENT_READ)
        assert selector.select(0) == []
        assert ringbuf_output(sim.kernel, fd.fileno(), b"x", BPF_RB_NO_WAKEUP) == 0
        assert selector.select(0) == []  # no wakeup asked for
        assert ringbuf_output(sim.kernel, fd.fileno(), b"y", BPF_RB_FORCE_WAKEUP) == 0
        assert len(selector.select(0)) == 1


def test_freeze_and_writable_mappings(sim: SimBackend) -> None:
    with map_create(MapType.RINGBUF, 0, 0, 4096, backend=sim) as fd:
        rw = mmap.PROT_READ | mmap.PROT_WRITE
        consumer = sim.mmap(fd.fileno(), 4096, rw, mmap.MAP_SHARED, 0)
        with pytest.raises(OSError) as busy:
            map_freeze(fd, backend=sim)
        assert busy.value.errno == errno.EBUSY
        sim.munmap(consumer)
        map_freeze(fd, backend=sim)
        with pytest.raises(OSError) as frozen:
            sim.mmap(fd.fileno(), 4096, rw, mmap.MAP_SHARED, 0)
        assert frozen.value.errno == errno.EPERM
        sim.munmap(sim.mmap(fd.fileno(), 4096, mmap.PROT_READ, mmap.MAP_SHARED, 0))


def test_closing_the_map_releases_its_memory(sim: SimBackend) -> None:
    attr = MapCreateAttr(map_type=MapType.RINGBUF, max_entries=8192)
    fd = sim.bpf(BpfCmd.MAP_CREATE, attr, len(bytes(attr)))
    mapping = sim.mmap(fd, 4096 + 2 * 8192, mmap.PROT_READ, mmap.MAP_SHARED, 4096)
    assert ringbuf_output(sim.kernel, fd, b"kept") == 0
    sim.close(fd)
    assert "RingbufMap" not in sim.kernel.live_objects()  # the caller's mapping stays valid
    assert bytes(memoryview(mapping)[4096 + 8 : 4096 + 12]) == b"kept"
    sim.munmap(mapping)


@settings(max_examples=80, deadline=None)
@given(
    length=st.integers(-1, 6 * 4096),
    prot=st.integers(0, 7),
    flags=st.sampled_from([mmap.MAP_SHARED, mmap.MAP_PRIVATE, 0, mmap.MAP_SHARED | 0x20]),
    offset=st.integers(-1, 6 * 4096),
)
def test_random_mmaps_only_raise_oserror(length: int, prot: int, flags: int, offset: int) -> None:
    backend = SimBackend()
    attr = MapCreateAttr(map_type=MapType.RINGBUF, max_entries=4096)
    fd = backend.bpf(BpfCmd.MAP_CREATE, attr, len(bytes(attr)))
    try:
        mapping = backend.mmap(fd, length, prot, flags, offset)
    except OSError:
        pass
    else:
        assert len(mapping) == length
        backend.munmap(mapping)
    backend.kernel.close_all()
    assert "RingbufMap" not in backend.kernel.live_objects()
