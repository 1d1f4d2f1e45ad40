"""RingBufReader without a kernel: order, BUSY and DISCARD, callbacks, wraparound, faults.

The producer is the model of kernel/bpf/ringbuf.c in kernelsim.strategies, or bytes put in
place by hand for the faults the kernel never produces.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys.ringbuf import RingBufError, RingBufReader, record_size
from kernelsim.strategies import MODEL_PAGE, ModelRingBufWriter, payload, ringbuf_machine


def poke(writer: ModelRingBufWriter, pos: int, length_word: int) -> None:
    """Overwrite the record header at ring position `pos` (both copies of the data area)."""
    size = writer.data_size
    for copy in range(2 if len(writer.producer) >= MODEL_PAGE + 2 * size else 1):
        struct.pack_into("=I", writer.producer, MODEL_PAGE + copy * size + pos % size, length_word)


def set_positions(writer: ModelRingBufWriter, consumer: int, producer: int) -> None:
    struct.pack_into("=Q", writer.consumer, 0, consumer)
    struct.pack_into("=Q", writer.producer, 0, producer)


@pytest.fixture(params=[True, False], ids=["doubled", "single"])
def writer(request: pytest.FixtureRequest) -> ModelRingBufWriter:
    return ModelRingBufWriter(256, doubled=bool(request.param))


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------
def test_reader_rejects_bad_layouts() -> None:
    with pytest.raises(ValueError, match="writable"):
        RingBufReader(bytes(8), bytearray(64 + 256), 256, data_offset=64)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="power of two"):
        RingBufReader(bytearray(8), bytearray(64 + 256), 200, data_offset=64)
    with pytest.raises(ValueError, match="must hold"):
        RingBufReader(bytearray(8), bytearray(64 + 128), 256, data_offset=64)


def test_record_size_rounds_the_header_in() -> None:
    assert [record_size(n) for n in (0, 1, 8, 9, 16)] == [8, 16, 16, 24, 24]


# ---------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------
def test_records_in_order_exact_length(writer: ModelRingBufWriter) -> None:
    sent = [payload(i, n) for i, n in enumerate([0, 1, 7, 8, 9, 30])]
    assert all(writer.output(data) for data in sent)
    reader = writer.reader
    assert reader.readable() and reader.pending() == sum(record_size(len(s)) for s in sent)
    assert list(reader.records()) == sent
    assert reader.consumer_pos == reader.producer_pos and not reader.readable()


def test_busy_record_stops_the_reader_until_submitted(writer: ModelRingBufWriter) -> None:
    first = writer.reserve(4)
    second = writer.reserve(4)
    assert first is not None and second is not None
    writer.submit(second, b"2222", discard=False)
    reader = writer.reader
    assert list(reader.records()) == []  # the first is still BUSY
    assert reader.consumer_pos == 0
    writer.submit(first, b"1111", discard=False)
    assert list(reader.records()) == [b"1111", b"2222"]


def test_discarded_records_are_skipped_not_counted(writer: ModelRingBufWriter) -> None:
    kept, dropped, last = writer.reserve(3), writer.reserve(5), writer.reserve(2)
    assert kept is not None and dropped is not None and last is not None
    writer.submit(kept, b"abc", discard=False)
    writer.submit(dropped, b"xxxxx", discard=True)
    writer.submit(last, b"zz", discard=False)
    got: list[bytes] = []
    assert writer.reader.consume(lambda view: got.append(bytes(view)), 1) == 1
    assert got == [b"abc"] and writer.reader.consumer_pos == record_size(3)
    assert writer.reader.consume(lambda view: got.append(bytes(view))) == 1
    assert got == [b"abc", b"zz"]


def test_callback_view_lives_only_during_the_call(writer: ModelRingBufWriter) -> None:
    writer.output(b"hello")
    kept: list[memoryview] = []

    def keep(view: memoryview) -> None:
        assert view.readonly and bytes(view) == b"hello"
        kept.append(view)

    assert writer.reader.consume(keep) == 1
    with pytest.raises(ValueError, match="released"):
        bytes(kept[0])


def test_callback_error_still_consumes_that_record(writer: ModelRingBufWriter) -> None:
    for data in (b"one", b"two", b"three"):
        writer.output(data)

    def fail_on_two(view: memoryview) -> None:
        if bytes(view) == b"two":
            raise KeyError("two")

    with pytest.raises(KeyError):
        writer.reader.consume(fail_on_two)
    assert writer.reader.consumer_pos == record_size(3) * 2  # past "two", as libbpf does
    assert list(writer.reader.records()) == [b"three"]


def test_max_records_is_validated(writer: ModelRingBufWriter) -> None:
    with pytest.raises(ValueError, match="max_records"):
        writer.reader.consume(print, 0)


def read_with_origin(writer: ModelRingBufWriter) -> list[tuple[bytes, bool]]:
    """Each record read, and whether its view was into the producer mapping itself."""
    seen: list[tuple[bytes, bool]] = []
    writer.reader.consume(lambda view: seen.append((bytes(view), view.obj is writer.producer)))
    return seen


@pytest.mark.parametrize("doubled", [True, False])
def test_wraparound_at_every_offset_and_length(doubled: bool) -> None:
    """Every 8-aligned start in a 128-byte ring, lengths 0..23: the record is whole; with the
    doubled mapping the callback's view is into the mapping, else a joined copy."""
    size = 128
    for start in range(0, size, 8):
        for length in range(24):
            writer = ModelRingBufWriter(size, doubled=doubled)
            set_positions(writer, size + start, size + start)
            writer._producer_pos = writer._pending_pos = size + start
            data = payload(start, length)
            assert writer.output(data)
            wraps = start + 8 + length > size
            assert read_with_origin(writer) == [(data, doubled or not wraps or length == 0)]
            writer.close()


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------
def test_record_longer_than_the_data_area(writer: ModelRingBufWriter) -> None:
    writer.output(b"ok")
    writer.output(b"bad")
    poke(writer, record_size(2), 256)  # length 256: 264 bytes in a 256-byte area
    got: list[bytes] = []
    with pytest.raises(RingBufError, match="larger than the 256-byte data area"):
        writer.reader.consume(lambda view: got.append(bytes(view)))
    assert got == [b"ok"] and writer.reader.consumer_pos == record_size(2)


def test_torn_record_reaching_past_producer_pos(writer: ModelRingBufWriter) -> None:
    writer.output(b"x" * 20)
    poke(writer, 0, 40)  # committed, but 48 bytes where 32 were reserved
    with pytest.raises(RingBufError, match="reach past producer_pos"):
        list(writer.reader.records())
    assert writer.reader.consumer_pos == 0


@pytest.mark.parametrize(
    ("consumer", "producer", "message"),
    [(0, 264, "beyond the 256-byte data area"), (16, 8, "beyond"), (4, 20, "8-aligned")],
)
def test_impossible_positions(
    writer: ModelRingBufWriter, consumer: int, producer: int, message: str
) -> None:
    set_positions(writer, consumer, producer)
    with pytest.raises(RingBufError, match=message):
        writer.reader.consume(print)


def test_busy_forever_is_not_a_loop(writer: ModelRingBufWriter) -> None:
    assert writer.reserve(10) is not None
    for _ in range(3):
        assert writer.reader.consume(print) == 0
    assert writer.reader.readable()


def test_consumer_that_never_advances_makes_the_producer_fail(
    writer: ModelRingBufWriter,
) -> None:
    results = [writer.output(payload(i, 24)) for i in range(10)]  # 32-byte records
    assert results == [True] * 7 + [False] * 3  # 8 * 32 = 256 > 255
    assert len(list(writer.reader.records())) == 7
    assert writer.output(b"again")


def test_one_page_and_a_record_near_the_ring_size() -> None:
    writer = ModelRingBufWriter(4096)
    assert not writer.output(bytes(4096 - 15))  # 4096 bytes with its header: never
    assert writer.output(b"\x07" * (4096 - 16))  # 4088 bytes: only into an empty ring
    assert not writer.output(b"")
    assert list(writer.reader.records()) == [b"\x07" * 4080]
    assert writer.output(b"\x08" * 4080)  # wraps
    assert list(writer.reader.records()) == [b"\x08" * 4080]
    writer.close()


def test_producer_thread_writing_while_the_consumer_reads() -> None:
    writer = ModelRingBufWriter(512)
    total = 1500

    def produce() -> None:
        seq = 0
        while seq < total:
            if writer.output(payload(seq, seq % 45)):
                seq += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    producer = threading.Thread(target=produce)
    got: list[bytes] = []

    def collect(view: memoryview) -> None:
        got.append(bytes(view))

    try:
        producer.start()
        while len(got) < total:
            if len(got) % 2:
                writer.reader.consume(collect, 5)
            else:
                got.extend(writer.reader.records(3))
        producer.join()
    finally:
        sys.setswitchinterval(old)
    assert got == [payload(seq, seq % 45) for seq in range(total)]
    writer.close()


@settings(max_examples=300, deadline=None)
@given(
    doubled=st.booleans(),
    data=st.binary(min_size=128, max_size=128),
    consumer=st.integers(0, 300),
    producer=st.integers(0, 300) | st.integers(0, (1 << 64) - 1),
)
def test_garbage_ring_raises_ringbuf_error_or_delivers(
    doubled: bool, data: bytes, consumer: int, producer: int
) -> None:
    """Whatever the ring holds: records or RingBufError, in bounded time, and consumer_pos
    never moves past producer_pos."""
    writer = ModelRingBufWriter(64, doubled=doubled)
    area = writer.producer[MODEL_PAGE:]
    writer.producer[MODEL_PAGE:] = (data * 2)[: len(area)]
    set_positions(writer, consumer, producer)
    with contextlib.suppress(RingBufError):
        list(writer.reader.records())
    moved = (writer.reader.consumer_pos - consumer) & ((1 << 64) - 1)
    assert moved <= (producer - consumer) & ((1 << 64) - 1)


# ---------------------------------------------------------------------------------------------
# The state machine over the model writer
# ---------------------------------------------------------------------------------------------
TestModelRingBufDoubled = ringbuf_machine(
    ModelRingBufWriter, st.sampled_from([64, 128, 256, 4096])
).TestCase
TestModelRingBufDoubled.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
TestModelRingBufSingle = ringbuf_machine(
    lambda size: ModelRingBufWriter(size, doubled=False), st.sampled_from([64, 128, 256])
).TestCase
TestModelRingBufSingle.settings = settings(max_examples=20, stateful_step_count=40, deadline=None)
