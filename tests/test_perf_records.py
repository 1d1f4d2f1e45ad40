"""Perf ring records: exact kernel byte layouts, round trips, and malformed input.

The expected bytes are written out by hand from the kernel's layout (perf_output_sample,
perf_prepare_sample and __perf_event__output_id_sample in kernel/events/core.c), not computed
with the module under test.
"""

from __future__ import annotations

import functools
import itertools
import operator

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys.abi import PerfRecordType, SampleType
from bpfsys.perf_records import (
    SAMPLE_ID_TYPE,
    SUPPORTED_SAMPLE_TYPE,
    LostRecord,
    OtherRecord,
    PerfRecordError,
    Record,
    Sample,
    SampleId,
    ThrottleRecord,
    check_sample_type,
    decode_record,
    encode_lost,
    encode_record,
    encode_sample,
    encode_throttle,
    iter_records,
    parse_header,
    raw_padded_size,
)

SUPPORTED_BITS = [bit for bit in SampleType if bit & SUPPORTED_SAMPLE_TYPE]
ALL_COMBINATIONS = [
    functools.reduce(operator.or_, combo, 0)
    for n in range(len(SUPPORTED_BITS) + 1)
    for combo in itertools.combinations(SUPPORTED_BITS, n)
]


def h(text: str) -> bytes:
    """Bytes from hex with spaces and line breaks ignored."""
    return bytes.fromhex("".join(text.split()))


# ---------------------------------------------------------------------------------------------
# Exact layouts
# ---------------------------------------------------------------------------------------------
def test_header_parses_type_misc_size() -> None:
    header = parse_header(h("09000000 0200 1800") + bytes(16))
    assert (header.type, header.misc, header.size) == (9, 2, 24)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # size = round_up(len + 4, 8) - 4; the padding is counted in size and zero-filled.
        (b"", h("09000000 0000 1000  04000000 00000000")),
        (b"abc", h("09000000 0000 1000  04000000 61626300")),
        (b"abcd", h("09000000 0000 1000  04000000 61626364")),
        (b"abcde", h("09000000 0000 1800  0c000000 6162636465000000 00000000")),
        (bytes(range(12)), h("09000000 0000 1800  0c000000 0001020304050607 08090a0b")),
    ],
)
def test_raw_sample_layout_and_padding(raw: bytes, expected: bytes) -> None:
    assert encode_sample(Sample(raw=raw), SampleType.RAW) == expected
    decoded = decode_record(expected, SampleType.RAW)
    assert decoded == Sample(raw=raw + bytes(raw_padded_size(len(raw)) - len(raw)))
    assert isinstance(decoded, Sample) and decoded.raw is not None
    assert len(decoded.raw) % 8 == 4


def test_every_supported_field_in_kernel_order() -> None:
    sample = Sample(
        misc=1,
        identifier=0x1111,
        ip=0xFFFFFFFF81000000,
        pid=7,
        tid=8,
        time=0x3333,
        addr=0x4444,
        id=0x5555,
        stream_id=0x6666,
        cpu=1,
        period=1,
        callchain=(0xAA, 0xBB),
        raw=b"hi",
    )
    expected = h(
        """
        09000000 0100 7000
        1111000000000000
        00000081ffffffff
        07000000 08000000
        3333000000000000
        4444000000000000
        5555000000000000
        6666000000000000
        01000000 00000000
        0100000000000000
        0200000000000000 aa00000000000000 bb00000000000000
        04000000 68690000
        """
    )
    assert len(expected) == 0x70
    assert encode_sample(sample, SUPPORTED_SAMPLE_TYPE) == expected
    assert decode_record(expected, SUPPORTED_SAMPLE_TYPE) == attrs.evolve(sample, raw=b"hi\0\0")


def test_tid_time_cpu_raw_layout_bpf_perf_event_output_style() -> None:
    st_ = SampleType.TID | SampleType.TIME | SampleType.CPU | SampleType.RAW
    sample = Sample(misc=2, pid=100, tid=101, time=5, cpu=3, raw=b"\x01\x02\x03\x04")
    expected = h(
        "09000000 0200 2800  64000000 65000000  0500000000000000  03000000 00000000"
        "  04000000 01020304"
    )
    assert encode_sample(sample, st_) == expected
    assert decode_record(expected, st_) == sample


def test_unselected_fields_are_not_written() -> None:
    sample = Sample(ip=1, pid=2, tid=3, time=4, raw=b"abcd")
    assert encode_sample(sample, SampleType.TIME) == h("09000000 0000 1000 0400000000000000")
    assert decode_record(h("09000000 0000 1000 0400000000000000"), SampleType.TIME) == Sample(
        time=4
    )


def test_lost_record_layout() -> None:
    data = h("02000000 0000 1800  0500000000000000 0300000000000000")
    assert encode_lost(LostRecord(id=5, lost=3)) == data
    assert decode_record(data, SampleType.RAW) == LostRecord(5, 3, None)


def test_lost_record_with_sample_id_trailer_in_trailer_order() -> None:
    # The trailer order is TID, TIME, ID, STREAM_ID, CPU, IDENTIFIER: IDENTIFIER comes last
    # here, first in a sample.
    st_ = SampleType.IDENTIFIER | SampleType.TID | SampleType.TIME | SampleType.CPU
    st_ |= SampleType.RAW | SampleType.IP  # bits that select no trailer field
    sid = SampleId(pid=9, tid=10, time=0x77, cpu=1, identifier=0x42)
    data = h(
        """
        02000000 0000 3800
        0500000000000000 0300000000000000
        09000000 0a000000
        7700000000000000
        01000000 00000000
        4200000000000000
        """
    )
    assert encode_lost(LostRecord(5, 3, sid), st_) == data
    assert decode_record(data, st_, sample_id_all=True) == LostRecord(5, 3, sid)


def test_throttle_and_unthrottle_layout() -> None:
    body = "1000000000000000 2000000000000000 3000000000000000"
    throttle = h("05000000 0000 2000 " + body)
    unthrottle = h("06000000 0000 2000 " + body)
    assert encode_throttle(ThrottleRecord(0x10, 0x20, 0x30, True)) == throttle
    assert encode_throttle(ThrottleRecord(0x10, 0x20, 0x30, False)) == unthrottle
    assert decode_record(throttle) == ThrottleRecord(0x10, 0x20, 0x30, True, None)
    assert decode_record(unthrottle) == ThrottleRecord(0x10, 0x20, 0x30, False, None)


def test_throttle_with_id_and_stream_id_trailer() -> None:
    st_ = SampleType.ID | SampleType.STREAM_ID
    data = h(
        "05000000 0000 3000  0100000000000000 0200000000000000 0300000000000000"
        "  0400000000000000 0500000000000000"
    )
    record = ThrottleRecord(1, 2, 3, True, SampleId(id=4, stream_id=5))
    assert encode_throttle(record, st_) == data
    assert decode_record(data, st_, sample_id_all=True) == record


def test_other_record_passes_through() -> None:
    data = h("01000000 0200 1800  0100000002000000 6162630000000000")
    record = decode_record(data, SampleType.RAW)
    assert record == OtherRecord(PerfRecordType.MMAP, 2, data[8:])
    assert encode_record(record) == data


def test_iter_records_walks_consecutive_records() -> None:
    records: list[Record] = [
        Sample(raw=b"abcd"),
        LostRecord(1, 2),
        Sample(raw=bytes(12)),
        ThrottleRecord(1, 2, 3, False),
        OtherRecord(17, 0, bytes(8)),
    ]
    data = b"".join(encode_record(r, SampleType.RAW) for r in records)
    assert list(iter_records(data, SampleType.RAW)) == records


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------
def expected_sample_size(sample_type: int, callchain: int, raw: int) -> int:
    fixed = {
        SampleType.IDENTIFIER: 8,
        SampleType.IP: 8,
        SampleType.TID: 8,
        SampleType.TIME: 8,
        SampleType.ADDR: 8,
        SampleType.ID: 8,
        SampleType.STREAM_ID: 8,
        SampleType.CPU: 8,
        SampleType.PERIOD: 8,
        SampleType.CALLCHAIN: 8 + 8 * callchain,
        SampleType.RAW: 4 + (raw + 4 + 7) // 8 * 8 - 4,
    }
    return 8 + sum(size for bit, size in fixed.items() if sample_type & bit)


def sample_for(sample_type: int, seed: int) -> Sample:
    """A sample with every selected field set to distinct values derived from `seed`."""
    has = functools.partial(operator.and_, sample_type)
    value = (seed * 0x9E3779B97F4A7C15) & (2**64 - 1)
    return Sample(
        misc=seed & 0xFFFF,
        identifier=value ^ 1 if has(SampleType.IDENTIFIER) else None,
        ip=value ^ 2 if has(SampleType.IP) else None,
        pid=(value ^ 3) & 0xFFFFFFFF if has(SampleType.TID) else None,
        tid=(value ^ 4) & 0xFFFFFFFF if has(SampleType.TID) else None,
        time=value ^ 5 if has(SampleType.TIME) else None,
        addr=value ^ 6 if has(SampleType.ADDR) else None,
        id=value ^ 7 if has(SampleType.ID) else None,
        stream_id=value ^ 8 if has(SampleType.STREAM_ID) else None,
        cpu=(value ^ 9) & 0xFFFFFFFF if has(SampleType.CPU) else None,
        period=value ^ 10 if has(SampleType.PERIOD) else None,
        callchain=tuple(range(seed % 5)) if has(SampleType.CALLCHAIN) else None,
        raw=bytes(range(seed % 8 * 8 + 4)) if has(SampleType.RAW) else None,
    )


def test_every_combination_of_supported_bits_round_trips() -> None:
    assert len(ALL_COMBINATIONS) == 2 ** len(SUPPORTED_BITS) == 2048
    for seed, sample_type in enumerate(ALL_COMBINATIONS):
        sample = sample_for(sample_type, seed)
        data = encode_sample(sample, sample_type)
        callchain = len(sample.callchain or ())
        raw = len(sample.raw or b"")
        assert len(data) == expected_sample_size(sample_type, callchain, raw), hex(sample_type)
        assert parse_header(data).size == len(data) and len(data) % 8 == 0
        assert decode_record(data, sample_type) == sample, hex(sample_type)


sample_types = st.sets(st.sampled_from(SUPPORTED_BITS)).map(
    lambda bits: functools.reduce(operator.or_, bits, 0)
)
u64s = st.integers(0, 2**64 - 1)
u32s = st.integers(0, 2**32 - 1)


@st.composite
def samples(draw: st.DrawFn, sample_type: int) -> Sample:
    def opt(bit: SampleType, strategy: st.SearchStrategy[int]) -> int | None:
        return draw(strategy) if sample_type & bit else None

    has_tid = bool(sample_type & SampleType.TID)
    return Sample(
        misc=draw(st.integers(0, 0xFFFF)),
        identifier=opt(SampleType.IDENTIFIER, u64s),
        ip=opt(SampleType.IP, u64s),
        pid=draw(u32s) if has_tid else None,
        tid=draw(u32s) if has_tid else None,
        time=opt(SampleType.TIME, u64s),
        addr=opt(SampleType.ADDR, u64s),
        id=opt(SampleType.ID, u64s),
        stream_id=opt(SampleType.STREAM_ID, u64s),
        cpu=opt(SampleType.CPU, u32s),
        period=opt(SampleType.PERIOD, u64s),
        callchain=tuple(draw(st.lists(u64s, max_size=20)))
        if sample_type & SampleType.CALLCHAIN
        else None,
        raw=draw(st.binary(max_size=300)) if sample_type & SampleType.RAW else None,
    )


def padded(sample: Sample) -> Sample:
    """`sample` as the kernel reports it: raw data with its zero padding."""
    if sample.raw is None:
        return sample
    return attrs.evolve(
        sample, raw=sample.raw + bytes(raw_padded_size(len(sample.raw)) - len(sample.raw))
    )


@st.composite
def sample_and_type(draw: st.DrawFn) -> tuple[Sample, int]:
    sample_type = draw(sample_types)
    return draw(samples(sample_type)), sample_type


@given(sample_and_type())
@settings(max_examples=300)
def test_sample_round_trip(case: tuple[Sample, int]) -> None:
    sample, sample_type = case
    data = encode_sample(sample, sample_type)
    decoded = decode_record(data, sample_type)
    assert decoded == padded(sample)
    assert encode_record(decoded, sample_type) == data
    callchain = len(sample.callchain or ())
    assert len(data) == expected_sample_size(sample_type, callchain, len(sample.raw or b""))


@st.composite
def sample_ids(draw: st.DrawFn, sample_type: int) -> SampleId | None:
    if not draw(st.booleans()):
        return None
    has_tid = bool(sample_type & SampleType.TID)
    return SampleId(
        pid=draw(u32s) if has_tid else None,
        tid=draw(u32s) if has_tid else None,
        time=draw(u64s) if sample_type & SampleType.TIME else None,
        id=draw(u64s) if sample_type & SampleType.ID else None,
        stream_id=draw(u64s) if sample_type & SampleType.STREAM_ID else None,
        cpu=draw(u32s) if sample_type & SampleType.CPU else None,
        identifier=draw(u64s) if sample_type & SampleType.IDENTIFIER else None,
    )


@given(sample_types.flatmap(lambda t: st.tuples(st.just(t), sample_ids(t), u64s, u64s, u64s)))
def test_lost_and_throttle_round_trip_with_sample_id(
    case: tuple[int, SampleId | None, int, int, int],
) -> None:
    sample_type, sid, a, b, c = case
    trailer = 0 if sid is None else 8 * bin(sample_type & SAMPLE_ID_TYPE).count("1")
    lost = LostRecord(a, b, sid)
    data = encode_lost(lost, sample_type)
    assert len(data) == 24 + trailer
    assert decode_record(data, sample_type, sample_id_all=sid is not None) == lost
    for throttle in (True, False):
        record = ThrottleRecord(a, b, c, throttle, sid)
        data = encode_throttle(record, sample_type)
        assert len(data) == 32 + trailer
        assert decode_record(data, sample_type, sample_id_all=sid is not None) == record


# ---------------------------------------------------------------------------------------------
# Malformed input and bad arguments
# ---------------------------------------------------------------------------------------------
@given(sample_and_type())
@settings(max_examples=100)
def test_every_truncation_raises_perf_record_error(case: tuple[Sample, int]) -> None:
    sample, sample_type = case
    data = encode_sample(sample, sample_type)
    for cut in range(len(data)):
        with pytest.raises(PerfRecordError):
            decode_record(data[:cut], sample_type)


@given(sample_and_type())
@settings(max_examples=100)
def test_header_size_inconsistent_with_fields_raises(case: tuple[Sample, int]) -> None:
    sample, sample_type = case
    data = bytearray(encode_sample(sample, sample_type))
    grown = data + bytes(8)
    grown[6:8] = (len(grown)).to_bytes(2, "little")
    with pytest.raises(PerfRecordError, match="beyond its fields"):
        decode_record(grown, sample_type)
    if len(data) > 8:
        shrunk = bytearray(data)
        shrunk[6:8] = (len(data) - 8).to_bytes(2, "little")
        with pytest.raises(PerfRecordError, match="truncated"):
            decode_record(shrunk, sample_type)


@given(st.binary(max_size=200), sample_types, st.booleans())
def test_arbitrary_bytes_decode_or_raise_perf_record_error(
    data: bytes, sample_type: int, sample_id_all: bool
) -> None:
    try:
        record = decode_record(data, sample_type, sample_id_all)
    except PerfRecordError:
        return
    assert isinstance(record, Sample | LostRecord | ThrottleRecord | OtherRecord)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "header truncated"),
        (h("09000000 0000 10"), "header truncated"),
        (h("09000000 0000 0400"), "smaller than the header"),
        (h("09000000 0000 1000 04000000"), "record truncated"),
        (h("09000000 0000 1000 09000000 00000000"), "truncated at raw.data"),
        (h("09000000 0000 1000 ffffffffffffffff"), "callchain.nr"),
        (h("02000000 0000 1000 0100000000000000"), "truncated at lost"),
    ],
)
def test_specific_malformed_records(data: bytes, match: str) -> None:
    sample_type = SampleType.CALLCHAIN if "callchain" in match else SampleType.RAW
    with pytest.raises(PerfRecordError, match=match):
        decode_record(data, sample_type)


def test_lost_record_missing_trailer_when_sample_id_all() -> None:
    data = h("02000000 0000 1800  0500000000000000 0300000000000000")
    with pytest.raises(PerfRecordError, match=r"sample_id\.time"):
        decode_record(data, SampleType.TIME, sample_id_all=True)


@pytest.mark.parametrize(
    "bits", [SampleType.READ, SampleType.BRANCH_STACK, SampleType.RAW | SampleType.REGS_USER]
)
def test_unsupported_sample_type_is_rejected_by_name(bits: SampleType) -> None:
    unsupported = bits & ~SUPPORTED_SAMPLE_TYPE
    name = next(b.c_name for b in SampleType if b & unsupported)
    with pytest.raises(ValueError, match=f"sample_type: unsupported bits {name}"):
        check_sample_type(bits)
    with pytest.raises(ValueError, match=name):
        decode_record(h("09000000 0000 0800"), bits)
    with pytest.raises(ValueError, match=name):
        encode_sample(Sample(), bits)


def test_unknown_sample_type_bits_and_bad_types() -> None:
    with pytest.raises(ValueError, match="0x8000000000000000"):
        check_sample_type(1 << 63)
    with pytest.raises(ValueError, match="u64"):
        check_sample_type(1 << 64)
    with pytest.raises(TypeError, match="sample_type"):
        check_sample_type("RAW")  # type: ignore[arg-type]
    assert check_sample_type(SampleType.RAW | SampleType.TID) == SampleType.RAW | SampleType.TID


@pytest.mark.parametrize(
    ("sample", "sample_type", "match"),
    [
        (Sample(), SampleType.RAW, "raw is required"),
        (Sample(raw=b""), SampleType.RAW | SampleType.TIME, "time is required"),
        (Sample(pid=1), SampleType.TID, "tid is required"),
        (Sample(callchain=None), SampleType.CALLCHAIN, "callchain is required"),
        (Sample(time=-1), SampleType.TIME, "time must be a u64"),
        (Sample(cpu=2**32), SampleType.CPU, "cpu must be a u32"),
        (Sample(callchain=(1, 2**64)), SampleType.CALLCHAIN, r"callchain\[1\] must be a u64"),
        (Sample(misc=0x10000, raw=b""), SampleType.RAW, "misc must be a u16"),
        (Sample(raw=bytes(65517)), SampleType.RAW, "65536 bytes exceeds the u16"),
        (Sample(raw=bytes(65512)), SampleType.RAW | SampleType.TIME, "time is required"),
        (Sample(time=1, raw=bytes(65516)), SampleType.RAW | SampleType.TIME, "exceeds the u16"),
    ],
)
def test_encode_sample_errors_name_the_field(sample: Sample, sample_type: int, match: str) -> None:
    with pytest.raises(PerfRecordError, match=match):
        encode_sample(sample, sample_type)


def test_largest_raw_sample_fits_exactly() -> None:
    data = encode_sample(Sample(raw=bytes(65516)), SampleType.RAW)
    assert len(data) == 65528 and parse_header(data).size == 65528


def test_encode_lost_and_throttle_errors() -> None:
    with pytest.raises(PerfRecordError, match="lost must be a u64"):
        encode_lost(LostRecord(1, -1))
    with pytest.raises(PerfRecordError, match=r"sample_id\.cpu is required"):
        encode_lost(LostRecord(1, 1, SampleId()), SampleType.CPU)
    with pytest.raises(PerfRecordError, match="stream_id must be a u64"):
        encode_throttle(ThrottleRecord(1, 2, 2**64))
