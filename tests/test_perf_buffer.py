"""PerfRingReader without a kernel: records, batches, read_events, wraparound, faults, threads.

Rings are bytearrays laid out as the kernel lays out a perf mapping (header page, then the data
area); records are written by hand with `perf_records.encode_*` or by the model writer of
kernelsim.strategies (the kernel's perf_output_begin rules).
"""

from __future__ import annotations

import struct
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys.abi import DATA_HEAD_OFFSET, DATA_TAIL_OFFSET, PerfRecordType, SampleType
from bpfsys.perf_buffer import Events, PerfBufferError, PerfRingReader
from bpfsys.perf_records import (
    LostRecord,
    OtherRecord,
    Sample,
    ThrottleRecord,
    decode_record,
    encode_lost,
    encode_record,
    encode_sample,
    encode_throttle,
    raw_padded_size,
)
from kernelsim.strategies import ModelPerfWriter, payload, perf_ring_machine

OFFSET = 2048


class Ring:
    """A perf mapping image: header page of OFFSET bytes, then `size` data bytes."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.mem = bytearray(OFFSET + size)
        self.head = 0

    def reader(self, **kwargs: object) -> PerfRingReader:
        return PerfRingReader(self.mem, data_offset=OFFSET, data_size=self.size, **kwargs)  # type: ignore[arg-type]

    def start_at(self, pos: int) -> None:
        """An empty ring whose positions are `pos`."""
        self.head = pos
        struct.pack_into("=QQ", self.mem, DATA_HEAD_OFFSET, pos, pos)

    def put(self, record: bytes) -> int:
        """Write `record` at data_head (wrapping) and publish it; return where it started."""
        start = self.head
        for i, byte in enumerate(record):
            self.mem[OFFSET + (start + i) % self.size] = byte
        self.head = (self.head + len(record)) & ((1 << 64) - 1)
        struct.pack_into("=Q", self.mem, DATA_HEAD_OFFSET, self.head)
        return start

    @property
    def tail(self) -> int:
        return int(struct.unpack_from("=Q", self.mem, DATA_TAIL_OFFSET)[0])

    def set_head(self, value: int) -> None:
        struct.pack_into("=Q", self.mem, DATA_HEAD_OFFSET, value)

    def set_tail(self, value: int) -> None:
        struct.pack_into("=Q", self.mem, DATA_TAIL_OFFSET, value)


def raw(data: bytes, misc: int = 1) -> bytes:
    return encode_sample(Sample(misc=misc, raw=data), SampleType.RAW)


def header(type_: int, size: int, misc: int = 0) -> bytes:
    return struct.pack("=IHH", type_, misc, size)


@pytest.fixture
def ring() -> Iterator[Ring]:
    yield Ring()


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "offset", "message"),
    [
        (100, OFFSET, "power of two"),
        (4, OFFSET, "power of two"),
        (512, OFFSET, "power of two"),  # beyond the buffer
        (256, 1024, "header page"),
        (256, OFFSET + 4, "multiple of 8"),
    ],
)
def test_reader_rejects_bad_layouts(size: int, offset: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PerfRingReader(bytearray(OFFSET + 256), data_offset=offset, data_size=size)


def test_reader_needs_a_writable_ring() -> None:
    with pytest.raises(ValueError, match="writable"):
        PerfRingReader(bytes(OFFSET + 256), data_offset=OFFSET)  # type: ignore[arg-type]


def test_reader_takes_the_rest_as_data_by_default() -> None:
    reader = PerfRingReader(bytearray(4096 * 3))
    assert reader.data_size == 8192


# ---------------------------------------------------------------------------------------------
# Typed records
# ---------------------------------------------------------------------------------------------
def test_empty_ring_gives_nothing(ring: Ring) -> None:
    reader = ring.reader()
    assert not reader.readable()
    assert list(reader.records()) == []
    assert reader.read_events([bytearray()]) == Events(0, 0)
    with reader.read_batch() as batch:
        assert len(batch) == 0 and batch.lost == 0


def test_records_are_decoded_in_order_and_tail_follows(ring: Ring) -> None:
    written: list[bytes] = [
        raw(b"first"),
        encode_lost(LostRecord(id=7, lost=3)),
        encode_throttle(ThrottleRecord(time=5, id=6, stream_id=7)),
        encode_record(OtherRecord(type=PerfRecordType.COMM, misc=2, body=bytes(range(16)))),
        raw(b""),
    ]
    for record in written:
        ring.put(record)
    reader = ring.reader()
    assert reader.readable() and reader.pending() == sum(map(len, written))
    got = list(reader.records())
    assert got == [decode_record(r, SampleType.RAW) for r in written]
    assert got[0] == Sample(misc=1, raw=b"first" + bytes(7))
    assert got[1] == LostRecord(id=7, lost=3)
    assert ring.tail == ring.head and not reader.readable()


@settings(max_examples=200)
@given(data=st.binary(max_size=100), misc=st.integers(0, 0xFFFF))
def test_raw_short_path_equals_decode_record(data: bytes, misc: int) -> None:
    ring = Ring(256)
    record = raw(data, misc)
    ring.put(record)
    assert list(ring.reader().records()) == [decode_record(record, SampleType.RAW)]


def test_other_sample_types_decode_every_field(ring: Ring) -> None:
    sample_type = SampleType.TID | SampleType.TIME | SampleType.CPU | SampleType.RAW
    sample = Sample(misc=2, pid=10, tid=11, time=12, cpu=1, raw=b"abcd")
    ring.put(encode_sample(sample, sample_type))
    assert list(ring.reader(sample_type=sample_type).records()) == [sample]
    ring.put(encode_sample(sample, sample_type))
    buffers = [bytearray()]
    assert ring.reader(sample_type=sample_type).read_events(buffers) == Events(1, 0)
    assert bytes(buffers[0]) == sample.raw


def test_records_honours_max_records_and_an_abandoned_iterator(ring: Ring) -> None:
    records = [raw(bytes([i])) for i in range(5)]
    for record in records:
        ring.put(record)
    reader = ring.reader()
    assert len(list(reader.records(2))) == 2
    assert ring.tail == 2 * len(records[0])
    it = reader.records()
    assert next(it) == Sample(misc=1, raw=bytes([2]) + bytes(3))
    del it  # the record handed out was consumed, nothing more
    assert ring.tail == 3 * len(records[0])
    assert [s.raw[:1] for s in reader.records() if isinstance(s, Sample) and s.raw] == [
        b"\x03",
        b"\x04",
    ]
    with pytest.raises(ValueError, match="max_records"):
        list(reader.records(0))


# ---------------------------------------------------------------------------------------------
# read_events (Aya's semantics)
# ---------------------------------------------------------------------------------------------
def test_read_events_fills_buffers_and_sums_lost(ring: Ring) -> None:
    ring.put(encode_lost(LostRecord(id=1, lost=4)))
    ring.put(raw(b"one"))
    ring.put(encode_record(OtherRecord(type=PerfRecordType.COMM, misc=0, body=bytes(8))))
    ring.put(encode_lost(LostRecord(id=1, lost=2)))
    ring.put(raw(b"two!!"))
    reader = ring.reader()
    buffers = [bytearray(b"old contents"), bytearray()]
    assert reader.read_events(buffers) == Events(read=2, lost=6)
    assert buffers == [bytearray(b"one" + bytes(1)), bytearray(b"two!!" + bytes(7))]
    assert ring.tail == ring.head


def test_read_events_stops_when_buffers_are_used_up(ring: Ring) -> None:
    for i in range(3):
        ring.put(raw(bytes([i]) * 4))
    ring.put(encode_lost(LostRecord(id=1, lost=9)))
    reader = ring.reader()
    one = [bytearray()]
    assert [reader.read_events(one) for _ in range(3)] == [Events(1, 0)] * 3
    assert one[0] == b"\x02" * 4
    assert reader.read_events(one) == Events(0, 9)  # the trailing LOST, no sample
    with pytest.raises(ValueError, match="at least one buffer"):
        reader.read_events([])


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------
def test_batch_hands_out_views_into_the_ring_and_commits_on_exit(ring: Ring) -> None:
    start = ring.put(raw(b"AAAA"))
    ring.put(raw(b"BBBB"))
    reader = ring.reader()
    with reader.read_batch() as batch:
        [run] = batch.runs
        assert (run.type, run.size, run.count) == (PerfRecordType.SAMPLE, 16, 2)
        samples = run.raw_samples()
        assert [bytes(s) for s in samples] == [b"AAAA", b"BBBB"]
        ring.mem[OFFSET + start + 12] = ord("Z")  # zero copy: the view shows the ring
        assert bytes(samples[0]) == b"ZAAA"
        assert samples[0].readonly
        assert ring.tail == 0, "data_tail moved before the batch was committed"
        with pytest.raises(RuntimeError, match="not committed"):
            reader.read_batch()
    assert ring.tail == ring.head
    with pytest.raises(ValueError, match="released"):
        bytes(samples[0])


def test_batch_bounds_records_per_call_and_commits_once(ring: Ring) -> None:
    for i in range(10):
        ring.put(raw(bytes([i])))
    reader = ring.reader()
    batch = reader.read_batch(4)
    assert len(batch) == 4 and len(batch.records()) == 4
    batch.commit()
    batch.commit()
    assert ring.tail == 4 * 16
    with reader.read_batch(100) as rest:
        assert [bytes(r)[12] for r in rest.records()] == list(range(4, 10))


@settings(max_examples=100)
@given(sizes=st.lists(st.sampled_from([0, 4, 5, 12, 20]), min_size=1, max_size=60))
def test_runs_split_exactly_where_the_header_changes(sizes: list[int]) -> None:
    ring = Ring(2048)
    records = [raw(payload(i, n)) for i, n in enumerate(sizes)]
    for record in records:
        ring.put(record)
    with ring.reader().read_batch() as batch:
        assert [bytes(r) for r in batch.records()] == records
        for run in batch.runs:  # every run is a maximal stretch of one header
            assert run.count >= 1 and run.data.nbytes == run.size * run.count


def test_batch_copies_only_the_record_that_wraps() -> None:
    ring = Ring(64)
    ring.start_at(40)
    ring.put(raw(b"x" * 4))  # 40..56
    ring.put(raw(b"y" * 12))  # 56..80: wraps
    with ring.reader().read_batch() as batch:
        first, second = batch.runs
        assert first.data.obj is not second.data.obj  # the wrapped one is a copy
        assert bytes(second.raw_samples()[0]) == b"y" * 12
        assert bytes(first.raw_samples()[0]) == b"x" * 4


def test_lost_records_in_a_batch(ring: Ring) -> None:
    ring.put(encode_lost(LostRecord(id=3, lost=11)))
    ring.put(raw(b"after"))
    with ring.reader().read_batch() as batch:
        assert batch.lost == 11
        assert [run.type for run in batch.runs] == [PerfRecordType.LOST, PerfRecordType.SAMPLE]
        with pytest.raises(PerfBufferError, match="no RAW-only samples"):
            batch.runs[0].raw_samples()


# ---------------------------------------------------------------------------------------------
# Wraparound at every offset
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["records", "batch", "events"])
def test_wraparound_at_every_offset_and_length(api: str) -> None:
    """Every 8-aligned start in a 128-byte ring, payload lengths 0..23 (every length modulo 8):
    every split of a record across the end of the data area is read byte for byte."""
    size = 128
    for start in range(0, size, 8):
        for length in range(24):
            ring = Ring(size)
            ring.start_at(size * 3 + start)
            data = payload(start, length)
            ring.put(raw(data))
            ring.put(raw(b"next"))
            reader = ring.reader()
            got: list[bytes]
            if api == "records":
                got = [s.raw for s in reader.records() if isinstance(s, Sample) and s.raw]
            elif api == "batch":
                with reader.read_batch() as batch:
                    got = [bytes(v) for run in batch.runs for v in run.raw_samples()]
            else:
                buffers = [bytearray(), bytearray()]
                assert reader.read_events(buffers) == Events(2, 0)
                got = [bytes(b) for b in buffers]
            assert got[0][:length] == data and len(got[0]) == raw_padded_size(length)
            assert got[1] == b"next"
            assert ring.tail == ring.head


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (header(PerfRecordType.SAMPLE, 0), "header size 0"),
        (header(PerfRecordType.SAMPLE, 4), "smaller than the header"),
        (header(PerfRecordType.SAMPLE, 20) + bytes(12), "not a multiple of 8"),
        (header(PerfRecordType.SAMPLE, 264), "larger than the 256-byte data area"),
    ],
)
def test_corrupt_header_stops_the_reader_after_the_good_records(
    ring: Ring, bad: bytes, message: str
) -> None:
    ring.put(raw(b"good"))
    bad_at = ring.put(bad.ljust(24, b"\0"))
    reader = ring.reader()
    assert [s.raw for s in reader.records() if isinstance(s, Sample)] == [b"good"]
    assert ring.tail == bad_at
    for read in (
        lambda: list(reader.records()),
        lambda: reader.read_batch(),
        lambda: reader.read_events([bytearray()]),
    ):
        with pytest.raises(PerfBufferError, match=message):
            read()
        assert ring.tail == bad_at
    assert reader.drop_pending() == 24
    assert ring.tail == ring.head and list(reader.records()) == []


def test_torn_record_reaching_past_data_head(ring: Ring) -> None:
    record = raw(b"z" * 20)
    ring.put(record)
    ring.set_head(len(record) - 8)  # head published mid-record
    with pytest.raises(PerfBufferError, match="reaches past data_head"):
        list(ring.reader().records())
    assert ring.tail == 0


def test_sample_whose_raw_size_does_not_fill_it(ring: Ring) -> None:
    good = raw(b"abcd")
    bad = bytearray(raw(b"efgh"))  # same header as the good one: one run
    struct.pack_into("=I", bad, 8, 100)
    ring.put(good)
    bad_at = ring.put(bytes(bad))
    reader = ring.reader()
    buffers = [bytearray(), bytearray()]
    assert reader.read_events(buffers) == Events(1, 0)  # the run is retried record by record
    assert buffers[0] == b"abcd" and ring.tail == bad_at
    with pytest.raises(PerfBufferError, match="raw size"):
        reader.read_events(buffers)
    with pytest.raises(PerfBufferError, match="raw size"):
        list(reader.records())
    assert ring.tail == bad_at
    with pytest.raises(PerfBufferError, match="raw size"), reader.read_batch() as batch:
        batch.runs[0].raw_samples()
    assert ring.tail == ring.head  # a batch is committed when its block is left, even so


@pytest.mark.parametrize(
    ("head", "tail", "message"),
    [
        (257, 0, "beyond the 256-byte data area"),
        (1000, 8, "beyond the 256-byte data area"),
        (0, 8, "beyond"),  # head behind tail: 2^64 - 8 bytes "pending"
        (20, 4, "not 8-aligned"),
    ],
)
def test_impossible_positions(ring: Ring, head: int, tail: int, message: str) -> None:
    ring.set_head(head)
    ring.set_tail(tail)
    reader = ring.reader()
    with pytest.raises(PerfBufferError, match=message):
        list(reader.records())
    with pytest.raises(PerfBufferError, match=message):
        reader.read_batch()
    assert ring.tail == tail


def test_positions_near_2_to_the_64_wrap(ring: Ring) -> None:
    ring.start_at((1 << 64) - 16)
    ring.put(raw(b"ab"))
    ring.put(raw(b"cd"))
    assert [s.raw for s in ring.reader().records() if isinstance(s, Sample)] == [
        b"ab" + bytes(2),
        b"cd" + bytes(2),
    ]
    assert ring.tail == 16


def test_consumer_that_never_advances_sees_the_lost_count() -> None:
    writer = ModelPerfWriter(256)
    results = [writer.output(payload(i, 28)) for i in range(20)]  # 40-byte records
    assert results == [True] * 6 + [False] * 14  # 6 * 40 = 240 <= 255 < 280
    reader = writer.reader
    assert len([r for r in reader.records() if isinstance(r, Sample)]) == 6
    assert writer.output(b"after") is True
    lost, after = reader.records()
    assert lost == LostRecord(id=1, lost=14)
    assert isinstance(after, Sample) and after.raw is not None
    assert after.raw[:5] == b"after" and len(after.raw) == 12  # padding: old ring bytes
    writer.close()


def test_one_data_page_and_a_record_near_the_ring_size() -> None:
    writer = ModelPerfWriter(4096)
    check_record_near_the_ring_size(writer.output, writer.reader)
    writer.close()


def check_record_near_the_ring_size(
    output: Callable[[bytes], bool], reader: PerfRingReader
) -> None:
    """On a one-page ring: a 4088-byte record fits only in an empty ring; with a lost count
    pending it needs 24 bytes more and cannot fit at all; a record of 4096 bytes never fits.
    (Shared with the live test: the kernel behaves the same.)"""
    biggest = 4076  # 8 + 4 + 4076 = 4088 bytes; CIRC_SPACE of an empty ring is 4095
    assert output(b"\1" * biggest)
    assert not output(b"")  # nothing fits beside it
    assert [r.raw for r in reader.records() if isinstance(r, Sample)] == [b"\1" * biggest]
    assert not output(b"\2" * biggest)  # 4088 + a 24-byte LOST record > 4095
    assert output(b"s")  # the lost count goes out in front of a small one
    lost, small = reader.records()
    assert isinstance(lost, LostRecord) and lost.lost == 2
    assert isinstance(small, Sample) and small.raw is not None and small.raw[:1] == b"s"
    assert output(b"\2" * biggest)  # starts at offset 32 and wraps
    assert [r.raw for r in reader.records() if isinstance(r, Sample)] == [b"\2" * biggest]
    assert not output(b"\3" * (biggest + 8))  # 4096 bytes: never
    assert not reader.readable()


def check_padding_is_left_stale(output: Callable[[bytes], bool], reader: PerfRingReader) -> None:
    """The kernel skips the RAW padding (__output_skip): after the ring has been written all
    over with 0xaa, a 1-byte sample reads back as 01 aa aa aa. (Shared with the live test.)"""
    for _ in range(2 * reader.data_size // 72 + 1):
        assert output(b"\xaa" * 60)  # 72-byte records
        list(reader.records())
    assert output(b"\x01")
    assert [r.raw for r in reader.records() if isinstance(r, Sample)] == [b"\x01\xaa\xaa\xaa"]


def test_padding_is_left_stale() -> None:
    writer = ModelPerfWriter(4096)
    check_padding_is_left_stale(writer.output, writer.reader)
    writer.close()


def test_producer_thread_writing_while_the_consumer_reads() -> None:
    writer = ModelPerfWriter(512)
    total = 3000
    done = threading.Event()

    def produce() -> None:
        seq = 0
        while seq < total:
            if writer.output(payload(seq, seq % 41)):
                seq += 1
            else:  # full: roll back the loss the model counted, let the consumer run
                writer.pending_lost -= 1
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    producer = threading.Thread(target=produce)
    try:
        producer.start()
        got: list[bytes] = []
        apis = iter(range(1 << 30))
        while len(got) < total:
            api = next(apis) % 3
            reader = writer.reader
            if api == 0:
                got += [r.raw or b"" for r in reader.records(7) if isinstance(r, Sample)]
            elif api == 1:
                with reader.read_batch(5) as batch:
                    got += [bytes(v) for run in batch.runs for v in run.raw_samples()]
            else:
                buffers = [bytearray() for _ in range(3)]
                read, lost = reader.read_events(buffers)
                assert lost == 0
                got += [bytes(b) for b in buffers[:read]]
        producer.join()
    finally:
        sys.setswitchinterval(old)
    assert done.is_set()
    for seq, data in enumerate(got):
        want = payload(seq, seq % 41)
        assert data[: len(want)] == want and len(data) == raw_padded_size(len(want))
    writer.close()


@settings(max_examples=300, deadline=None)
@given(
    size=st.sampled_from([64, 128, 256]),
    data=st.binary(min_size=256, max_size=256),
    head=st.integers(0, 600) | st.integers(0, (1 << 64) - 1),
    tail=st.integers(0, 600),
    sample_type=st.sampled_from([SampleType.RAW, SampleType.TID | SampleType.RAW]),
)
def test_garbage_ring_raises_perf_buffer_error_or_delivers(
    size: int, data: bytes, head: int, tail: int, sample_type: int
) -> None:
    """Whatever the ring holds, every API returns or raises PerfBufferError, in bounded time,
    and data_tail never moves past data_head."""
    for api in range(4):
        ring = Ring(size)
        ring.mem[OFFSET:] = data[:size]
        ring.set_head(head)
        ring.set_tail(tail)
        reader = ring.reader(sample_type=sample_type)
        try:
            if api == 0:
                list(reader.records())
            elif api == 1:
                reader.read_events([bytearray() for _ in range(4)])
            else:
                with reader.read_batch() as batch:
                    for run in batch.runs:
                        run.lost()
                        run.records() if api == 2 else run.raw_samples()
        except PerfBufferError:
            pass
        moved = (ring.tail - tail) & ((1 << 64) - 1)
        assert moved <= (head - tail) & ((1 << 64) - 1)


# ---------------------------------------------------------------------------------------------
# The state machine over the model writer
# ---------------------------------------------------------------------------------------------
TestModelPerfRing = perf_ring_machine(
    ModelPerfWriter, st.sampled_from([64, 128, 256, 1024, 4096])
).TestCase
TestModelPerfRing.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
