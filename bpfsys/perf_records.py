"""Perf ring records as the kernel writes them: decoding and the exact inverse (pure, no I/O).

Theory of operation
-------------------
Every record in a perf ring starts with `struct perf_event_header` (u32 type, u16 misc, u16
size); `size` counts the header and is a multiple of 8. Three record types are decoded:

* PERF_RECORD_SAMPLE, whose body holds one field per bit of the event's `sample_type`, in the
  kernel's order (`perf_output_sample` in kernel/events/core.c)::

      IDENTIFIER u64 · IP u64 · TID u32 pid, u32 tid · TIME u64 · ADDR u64 · ID u64 ·
      STREAM_ID u64 · CPU u32 cpu, u32 res · PERIOD u64 · (READ) ·
      CALLCHAIN u64 nr, u64 ips[nr] · RAW u32 size, u8 data[size]

  For RAW the kernel rounds ``size + 4`` up to a multiple of 8 and stores the rounded length,
  less 4, in `size` (`perf_prepare_sample`): the padding is part of the data the consumer sees.
  With no raw data attached it writes size 4 and four zero bytes, the same bytes as empty data.
  The padding is skipped, not written, by the kernel (`__output_skip`); `encode_sample` writes
  zeros there. PERF_SAMPLE_READ and the bits after RAW are not supported (`check_sample_type`).
* PERF_RECORD_LOST (u64 id, u64 lost) and PERF_RECORD_THROTTLE / UNTHROTTLE (u64 time, u64 id,
  u64 stream_id), followed, when the event has `sample_id_all`, by the `sample_id` trailer:
  TID, TIME, ID, STREAM_ID, CPU, IDENTIFIER, each present when its bit is in `sample_type`
  (`__perf_event__output_id_sample`).

Other record types are kept whole as `OtherRecord`. A record that is truncated or whose parts do
not add up to its header's size raises `PerfRecordError` (a ValueError), never IndexError or
struct.error. The `encode_*` functions produce the exact bytes the kernel writes, header
included, for the simulated kernel's ring writer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final, TypeAlias

import attrs

from bpfsys.abi import PerfEventHeader, PerfRecordType, SampleType

HEADER_SIZE: Final = 8
MAX_RECORD_SIZE: Final = 0xFFFF
"""The largest record: perf_event_header.size is a u16."""

SUPPORTED_SAMPLE_TYPE: Final = (
    SampleType.IDENTIFIER
    | SampleType.IP
    | SampleType.TID
    | SampleType.TIME
    | SampleType.ADDR
    | SampleType.ID
    | SampleType.STREAM_ID
    | SampleType.CPU
    | SampleType.PERIOD
    | SampleType.CALLCHAIN
    | SampleType.RAW
)
"""The sample_type bits this module decodes and encodes."""

SAMPLE_ID_TYPE: Final = (
    SampleType.TID
    | SampleType.TIME
    | SampleType.ID
    | SampleType.STREAM_ID
    | SampleType.CPU
    | SampleType.IDENTIFIER
)
"""The sample_type bits that select fields of the sample_id trailer."""

BytesLike: TypeAlias = "bytes | bytearray | memoryview"
"""Record bytes: anything exposing a contiguous byte buffer of these kinds."""

_HEADER = struct.Struct("<IHH")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF


class PerfRecordError(ValueError):
    """A perf record is truncated, inconsistent with its header, or cannot be encoded."""


def check_sample_type(sample_type: int) -> SampleType:
    """`sample_type` as a SampleType; ValueError naming the unsupported bits (READ among them)."""
    if not isinstance(sample_type, int) or isinstance(sample_type, bool):
        raise TypeError(f"sample_type must be an int, got {type(sample_type).__name__}")
    if not 0 <= sample_type <= _U64_MAX:
        raise ValueError(f"sample_type must be a u64, got {sample_type}")
    unsupported = sample_type & ~int(SUPPORTED_SAMPLE_TYPE)
    if unsupported:
        known = [f.c_name for f in SampleType if f & unsupported]
        unknown = unsupported & ~sum(int(f) for f in SampleType)
        names = known + ([hex(unknown)] if unknown else [])
        raise ValueError(
            f"sample_type: unsupported bits {' | '.join(names)} "
            "(PERF_SAMPLE_READ and the bits after RAW are not decoded)"
        )
    return SampleType(sample_type)


@attrs.frozen
class SampleId:
    """The sample_id trailer of non-sample records; a field is None when its bit is not set."""

    pid: int | None = None
    tid: int | None = None
    time: int | None = None
    id: int | None = None
    stream_id: int | None = None
    cpu: int | None = None
    identifier: int | None = None


@attrs.frozen
class Sample:
    """A PERF_RECORD_SAMPLE; a field is None when its sample_type bit is not set.

    `raw` is what the kernel reports, padding included (its length is 4 modulo 8); `misc` is the
    header's misc (PERF_RECORD_MISC_KERNEL/USER/...).
    """

    misc: int = 0
    identifier: int | None = None
    ip: int | None = None
    pid: int | None = None
    tid: int | None = None
    time: int | None = None
    addr: int | None = None
    id: int | None = None
    stream_id: int | None = None
    cpu: int | None = None
    period: int | None = None
    callchain: tuple[int, ...] | None = None
    raw: bytes | None = None


@attrs.frozen
class LostRecord:
    """PERF_RECORD_LOST: `lost` records of event `id` were dropped (ring full)."""

    id: int
    lost: int
    sample_id: SampleId | None = None


@attrs.frozen
class ThrottleRecord:
    """PERF_RECORD_THROTTLE (`throttle` True) or PERF_RECORD_UNTHROTTLE (False)."""

    time: int
    id: int
    stream_id: int
    throttle: bool = True
    sample_id: SampleId | None = None


@attrs.frozen
class OtherRecord:
    """Any other record type, undecoded: `body` is everything after the header."""

    type: int
    misc: int
    body: bytes


Record: TypeAlias = Sample | LostRecord | ThrottleRecord | OtherRecord


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------
class _Cursor:
    """Reads little-endian fields from a record body; PerfRecordError on truncation."""

    def __init__(self, body: memoryview, what: str) -> None:
        self._body = body
        self._pos = 0
        self._what = what

    def take(self, n: int, field: str) -> memoryview:
        if n > len(self._body) - self._pos:
            raise PerfRecordError(
                f"{self._what} truncated at {field}: needs {n} bytes at offset "
                f"{HEADER_SIZE + self._pos}, record has {HEADER_SIZE + len(self._body)}"
            )
        view = self._body[self._pos : self._pos + n]
        self._pos += n
        return view

    def u64(self, field: str) -> int:
        return int(_U64.unpack(self.take(8, field))[0])

    def u32(self, field: str) -> int:
        return int(_U32.unpack(self.take(4, field))[0])

    def finish(self) -> None:
        extra = len(self._body) - self._pos
        if extra:
            raise PerfRecordError(
                f"{self._what}: {extra} bytes beyond its fields "
                f"(header size {HEADER_SIZE + len(self._body)})"
            )


def parse_header(data: BytesLike) -> PerfEventHeader:
    """The perf_event_header at the start of `data`; PerfRecordError if short or size < 8."""
    view = memoryview(data).cast("B")
    if len(view) < HEADER_SIZE:
        raise PerfRecordError(f"perf_event_header truncated: {len(view)} of {HEADER_SIZE} bytes")
    type_, misc, size = _HEADER.unpack(view[:HEADER_SIZE])
    if size < HEADER_SIZE:
        raise PerfRecordError(f"perf_event_header size {size} is smaller than the header")
    return PerfEventHeader(type=type_, misc=misc, size=size)


def _decode_sample_id(cur: _Cursor, sample_type: int) -> SampleId:
    pid = tid = time = id_ = stream_id = cpu = identifier = None
    if sample_type & SampleType.TID:
        pid, tid = cur.u32("sample_id.pid"), cur.u32("sample_id.tid")
    if sample_type & SampleType.TIME:
        time = cur.u64("sample_id.time")
    if sample_type & SampleType.ID:
        id_ = cur.u64("sample_id.id")
    if sample_type & SampleType.STREAM_ID:
        stream_id = cur.u64("sample_id.stream_id")
    if sample_type & SampleType.CPU:
        cpu = cur.u32("sample_id.cpu")
        cur.u32("sample_id.res")
    if sample_type & SampleType.IDENTIFIER:
        identifier = cur.u64("sample_id.identifier")
    return SampleId(pid, tid, time, id_, stream_id, cpu, identifier)


def _decode_sample(cur: _Cursor, sample_type: int, misc: int) -> Sample:
    def u64_if(bit: SampleType, field: str) -> int | None:
        return cur.u64(field) if sample_type & bit else None

    identifier = u64_if(SampleType.IDENTIFIER, "identifier")
    ip = u64_if(SampleType.IP, "ip")
    pid = tid = cpu = None
    if sample_type & SampleType.TID:
        pid, tid = cur.u32("pid"), cur.u32("tid")
    time = u64_if(SampleType.TIME, "time")
    addr = u64_if(SampleType.ADDR, "addr")
    id_ = u64_if(SampleType.ID, "id")
    stream_id = u64_if(SampleType.STREAM_ID, "stream_id")
    if sample_type & SampleType.CPU:
        cpu = cur.u32("cpu")
        cur.u32("res")
    period = u64_if(SampleType.PERIOD, "period")
    callchain = None
    if sample_type & SampleType.CALLCHAIN:
        nr = cur.u64("callchain.nr")
        if nr > MAX_RECORD_SIZE // 8:
            raise PerfRecordError(f"sample callchain.nr {nr} cannot fit in a record")
        ips = cur.take(8 * nr, "callchain.ips")
        callchain = tuple(int(ip_[0]) for ip_ in _U64.iter_unpack(ips))
    raw = None
    if sample_type & SampleType.RAW:
        size = cur.u32("raw.size")
        raw = bytes(cur.take(size, "raw.data"))
    return Sample(
        misc, identifier, ip, pid, tid, time, addr, id_, stream_id, cpu, period, callchain, raw
    )


def decode_record(data: BytesLike, sample_type: int = 0, sample_id_all: bool = False) -> Record:
    """Decode the record at the start of `data` (bytes after its header's size are ignored).

    `sample_type` and `sample_id_all` are the event's attr values. PerfRecordError when the
    record is shorter than its header says or its fields do not add up to that size.
    """
    st = int(check_sample_type(sample_type))
    header = parse_header(data)
    view = memoryview(data).cast("B")
    if header.size > len(view):
        raise PerfRecordError(
            f"record truncated: header size {header.size}, {len(view)} bytes available"
        )
    body = view[HEADER_SIZE : header.size]
    record: Record
    if header.type == PerfRecordType.SAMPLE:
        cur = _Cursor(body, "PERF_RECORD_SAMPLE")
        record = _decode_sample(cur, st, header.misc)
    elif header.type == PerfRecordType.LOST:
        cur = _Cursor(body, "PERF_RECORD_LOST")
        id_, lost = cur.u64("id"), cur.u64("lost")
        record = LostRecord(id_, lost, _decode_sample_id(cur, st) if sample_id_all else None)
    elif header.type in (PerfRecordType.THROTTLE, PerfRecordType.UNTHROTTLE):
        cur = _Cursor(body, f"PERF_RECORD_{PerfRecordType(header.type).name}")
        time, id_, stream_id = cur.u64("time"), cur.u64("id"), cur.u64("stream_id")
        record = ThrottleRecord(
            time,
            id_,
            stream_id,
            header.type == PerfRecordType.THROTTLE,
            _decode_sample_id(cur, st) if sample_id_all else None,
        )
    else:
        return OtherRecord(header.type, header.misc, bytes(body))
    cur.finish()
    return record


def iter_records(
    data: BytesLike, sample_type: int = 0, sample_id_all: bool = False
) -> Iterator[Record]:
    """Decode consecutive records filling `data` exactly (PerfRecordError on a partial one)."""
    view = memoryview(data).cast("B")
    pos = 0
    while pos < len(view):
        record = decode_record(view[pos:], sample_type, sample_id_all)
        pos += parse_header(view[pos:]).size
        yield record


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------
def _u(value: int | None, bits: int, field: str) -> int:
    if value is None:
        raise PerfRecordError(f"{field} is required by sample_type but is None")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise PerfRecordError(f"{field} must be a u{bits}, got {value!r}")
    return value


def raw_padded_size(length: int) -> int:
    """The raw `size` the kernel reports for `length` bytes: round_up(length + 4, 8) - 4."""
    return (length + 4 + 7) // 8 * 8 - 4


def _frame(type_: int, misc: int, body: bytes) -> bytes:
    size = HEADER_SIZE + len(body)
    if size > MAX_RECORD_SIZE:
        raise PerfRecordError(f"record of {size} bytes exceeds the u16 header size")
    return _HEADER.pack(type_, _u(misc, 16, "misc"), size) + body


def _encode_sample_id(sample_id: SampleId, sample_type: int) -> bytes:
    out = bytearray()
    if sample_type & SampleType.TID:
        out += _U32.pack(_u(sample_id.pid, 32, "sample_id.pid"))
        out += _U32.pack(_u(sample_id.tid, 32, "sample_id.tid"))
    if sample_type & SampleType.TIME:
        out += _U64.pack(_u(sample_id.time, 64, "sample_id.time"))
    if sample_type & SampleType.ID:
        out += _U64.pack(_u(sample_id.id, 64, "sample_id.id"))
    if sample_type & SampleType.STREAM_ID:
        out += _U64.pack(_u(sample_id.stream_id, 64, "sample_id.stream_id"))
    if sample_type & SampleType.CPU:
        out += _U32.pack(_u(sample_id.cpu, 32, "sample_id.cpu")) + bytes(4)
    if sample_type & SampleType.IDENTIFIER:
        out += _U64.pack(_u(sample_id.identifier, 64, "sample_id.identifier"))
    return bytes(out)


def encode_sample(sample: Sample, sample_type: int) -> bytes:
    """The PERF_RECORD_SAMPLE the kernel writes for `sample` under `sample_type`.

    Fields whose bit is not in `sample_type` are not written; a field whose bit is set must not
    be None (PerfRecordError). RAW data is zero-padded as `raw_padded_size` says.
    """
    st = int(check_sample_type(sample_type))
    s = sample
    out = bytearray()

    def u64_if(bit: SampleType, value: int | None, field: str) -> None:
        if st & bit:
            out.extend(_U64.pack(_u(value, 64, field)))

    u64_if(SampleType.IDENTIFIER, s.identifier, "identifier")
    u64_if(SampleType.IP, s.ip, "ip")
    if st & SampleType.TID:
        out += _U32.pack(_u(s.pid, 32, "pid")) + _U32.pack(_u(s.tid, 32, "tid"))
    u64_if(SampleType.TIME, s.time, "time")
    u64_if(SampleType.ADDR, s.addr, "addr")
    u64_if(SampleType.ID, s.id, "id")
    u64_if(SampleType.STREAM_ID, s.stream_id, "stream_id")
    if st & SampleType.CPU:
        out += _U32.pack(_u(s.cpu, 32, "cpu")) + bytes(4)
    u64_if(SampleType.PERIOD, s.period, "period")
    if st & SampleType.CALLCHAIN:
        if s.callchain is None:
            raise PerfRecordError("callchain is required by sample_type but is None")
        out += _U64.pack(len(s.callchain))
        for i, ip in enumerate(s.callchain):
            out += _U64.pack(_u(ip, 64, f"callchain[{i}]"))
    if st & SampleType.RAW:
        if s.raw is None:
            raise PerfRecordError("raw is required by sample_type but is None")
        data = bytes(s.raw)
        size = raw_padded_size(len(data))
        out += _U32.pack(size) + data + bytes(size - len(data))
    return _frame(PerfRecordType.SAMPLE, s.misc, bytes(out))


def encode_lost(record: LostRecord, sample_type: int = 0) -> bytes:
    """The PERF_RECORD_LOST the kernel writes (with the sample_id trailer iff record.sample_id)."""
    st = int(check_sample_type(sample_type))
    body = _U64.pack(_u(record.id, 64, "id")) + _U64.pack(_u(record.lost, 64, "lost"))
    if record.sample_id is not None:
        body += _encode_sample_id(record.sample_id, st)
    return _frame(PerfRecordType.LOST, 0, body)


def encode_throttle(record: ThrottleRecord, sample_type: int = 0) -> bytes:
    """The PERF_RECORD_THROTTLE/UNTHROTTLE the kernel writes (trailer as in `encode_lost`)."""
    st = int(check_sample_type(sample_type))
    body = (
        _U64.pack(_u(record.time, 64, "time"))
        + _U64.pack(_u(record.id, 64, "id"))
        + _U64.pack(_u(record.stream_id, 64, "stream_id"))
    )
    if record.sample_id is not None:
        body += _encode_sample_id(record.sample_id, st)
    type_ = PerfRecordType.THROTTLE if record.throttle else PerfRecordType.UNTHROTTLE
    return _frame(type_, 0, body)


def encode_record(record: Record, sample_type: int = 0) -> bytes:
    """Any record's bytes (OtherRecord: its header and body as given)."""
    match record:
        case Sample():
            return encode_sample(record, sample_type)
        case LostRecord():
            return encode_lost(record, sample_type)
        case ThrottleRecord():
            return encode_throttle(record, sample_type)
        case OtherRecord(type_, misc, body):
            return _frame(_u(type_, 32, "type"), misc, bytes(body))
    raise TypeError(f"record must be a perf record, got {type(record).__name__}")
