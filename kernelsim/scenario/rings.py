"""Mapped memory in a scenario: what changed, when, and what of it must match on a replay.

Theory of operation
-------------------
Snapshot rule: the recorder compares every live mapping with its previous snapshot *before* and
*after* each backend call, and at munmap, and writes a ``ring`` event for each one that changed:
``{"op": "ring", "mapping": "%mmap1", "when": "before" | "after", "bytes": [[offset, hex],
...]}`` -- the changed ranges, in 64-byte granules (the first snapshot, right after mmap, is the
change from zeros). "before" ranges hold what the consumer wrote and what the kernel produced
between two calls; "after" ranges what the call itself made the kernel write (a program run by
PROG_TEST_RUN emitting records). Replaying applies each range at the same point.

What must match (`ring_view`), per the mapping's kind (from its fd):

* ``perf``: ``data_head``, ``data_tail``, ``data_size`` and the records between tail and head,
  decoded with the event's sample_type: a sample's ``raw`` bytes, ``cpu``, ``period`` and
  callchain length; its ``time``, ``pid``, ``tid``, ``ip`` and ``addr`` are volatile, its ids
  (``id``, ``stream_id``, ``identifier``) and a PERF_RECORD_LOST's id are ``@perf`` symbols. The
  header page's self-monitoring words (lock, index, offset, times, capabilities) are not
  compared, nor the stale bytes outside [tail, head).
* ``ringbuf_consumer``: ``consumer_pos``.
* ``ringbuf_producer``: ``producer_pos`` and each record from the consumer position (of the
  consumer mapping of the same map, 0 when it is not mapped) to the producer position: length,
  BUSY and DISCARD bits, data.
* ``raw`` (anything else, e.g. an mmapable array): every byte.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from bpfsys.abi import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, DATA_HEAD_OFFSET
from bpfsys.perf_records import (
    LostRecord,
    OtherRecord,
    PerfRecordError,
    Sample,
    ThrottleRecord,
    decode_record,
)
from kernelsim.scenario.rules import volatile
from kernelsim.scenario.symbols import FdInfo, SymbolTable

GRANULE: Final = 64
RINGBUF_HEADER: Final = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<IHH")
_MAX_RECORDS: Final = 100_000


def changed_ranges(old: bytes, new: bytes) -> list[list[Any]]:
    """[offset, hex] of each run of GRANULE-byte blocks that differ between `old` and `new`
    (`old` shorter: missing bytes count as zero)."""
    if old == new:
        return []
    old = old.ljust(len(new), b"\0")
    ranges: list[list[Any]] = []
    start: int | None = None
    for offset in range(0, len(new), GRANULE):
        differs = old[offset : offset + GRANULE] != new[offset : offset + GRANULE]
        if differs and start is None:
            start = offset
        elif not differs and start is not None:
            ranges.append([start, new[start:offset].hex()])
            start = None
    if start is not None:
        ranges.append([start, new[start:].hex()])
    return ranges


class RangeError(ValueError):
    """A ring event whose ranges do not fit its mapping."""


def apply_ranges(target: Any, ranges: Any) -> None:
    """Write [offset, hex] ranges into a writable buffer (a mapping or a bytearray)."""
    if not isinstance(ranges, list):
        raise RangeError(f"bytes must be a list of [offset, hex], got {ranges!r}")
    view = memoryview(target).cast("B")
    try:
        for item in ranges:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not isinstance(item[0], int)
                or not isinstance(item[1], str)
            ):
                raise RangeError(f"a range must be [offset, hex], got {item!r}")
            data = bytes.fromhex(item[1])
            if item[0] < 0 or item[0] + len(data) > len(view):
                raise RangeError(f"range {item[0]}+{len(data)} is outside the mapping")
            view[item[0] : item[0] + len(data)] = data
    except ValueError as exc:
        if isinstance(exc, RangeError):
            raise
        raise RangeError(f"bad hex in ranges: {exc}") from None
    finally:
        view.release()


def _sample_json(record: Sample, symbols: SymbolTable) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "SAMPLE"}
    if record.raw is not None:
        out["raw"] = record.raw.hex()
    for name in ("cpu", "period"):
        value = getattr(record, name)
        if value is not None:
            out[name] = value
    for name in ("time", "pid", "tid", "ip", "addr"):
        value = getattr(record, name)
        if value is not None:
            out[name] = volatile(value)
    for name in ("id", "stream_id", "identifier"):
        value = getattr(record, name)
        if value is not None:
            out[name] = symbols.id_symbol("perf", value)
    if record.callchain is not None:
        out["callchain"] = volatile(len(record.callchain))
    return out


def _record_json(record: object, symbols: SymbolTable) -> dict[str, Any]:
    if isinstance(record, Sample):
        return _sample_json(record, symbols)
    if isinstance(record, LostRecord):
        return {"type": "LOST", "id": symbols.id_symbol("perf", record.id), "lost": record.lost}
    if isinstance(record, ThrottleRecord):
        kind = "THROTTLE" if record.throttle else "UNTHROTTLE"
        return {"type": kind, "id": symbols.id_symbol("perf", record.id)}
    assert isinstance(record, OtherRecord)
    return {"type": record.type, "misc": record.misc, "body": record.body.hex()}


def _wrapped(area: bytes, position: int, size: int) -> bytes:
    start = position % len(area)
    chunk = area[start : start + size]
    return chunk + area[: size - len(chunk)]


def perf_view(image: bytes, page_size: int, info: FdInfo | None, symbols: SymbolTable) -> Any:
    head = _U64.unpack_from(image, DATA_HEAD_OFFSET)[0]
    tail = _U64.unpack_from(image, DATA_HEAD_OFFSET + 8)[0]
    data_offset, data_size = (
        _U64.unpack_from(image, DATA_HEAD_OFFSET + 16)[0],
        _U64.unpack_from(image, DATA_HEAD_OFFSET + 24)[0],
    )
    if not data_offset or not data_size:
        data_offset, data_size = page_size, len(image) - page_size
    view: dict[str, Any] = {"data_head": head, "data_tail": tail, "data_size": data_size}
    area = image[data_offset : data_offset + data_size]
    records: list[dict[str, Any]] = []
    position = tail
    sample_type = info.sample_type if info is not None else 0
    sample_id_all = info.sample_id_all if info is not None else False
    if not area or head - tail > data_size:
        view["error"] = "data_head - data_tail is beyond the data area"
        return view
    while position < head and len(records) < _MAX_RECORDS:
        _, _, size = _HEADER.unpack(_wrapped(area, position, 8))
        if size < 8 or position + size > head:
            view["error"] = f"bad record size {size} at {position}"
            break
        try:
            record = decode_record(_wrapped(area, position, size), sample_type, sample_id_all)
        except PerfRecordError as exc:
            records.append({"error": str(exc)})
        else:
            records.append(_record_json(record, symbols))
        position += size
    view["records"] = records
    return view


def ringbuf_producer_view(image: bytes, page_size: int, consumer_pos: int) -> Any:
    producer = _U64.unpack_from(image, 0)[0]
    size = (len(image) - page_size) // 2
    view: dict[str, Any] = {"producer_pos": producer}
    if size <= 0 or producer - consumer_pos > size:
        view["error"] = "producer_pos - consumer_pos is beyond the data area"
        return view
    data = image[page_size : page_size + 2 * size]
    records: list[dict[str, Any]] = []
    position = consumer_pos
    while position < producer and len(records) < _MAX_RECORDS:
        length, _ = struct.unpack_from("<II", data, position % size)
        busy, discard = bool(length & BPF_RINGBUF_BUSY_BIT), bool(length & BPF_RINGBUF_DISCARD_BIT)
        length &= ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT) & 0xFFFF_FFFF
        start = position % size + RINGBUF_HEADER
        record: dict[str, Any] = {"len": length, "data": data[start : start + length].hex()}
        if busy:
            record["busy"] = True
        if discard:
            record["discard"] = True
        records.append(record)
        if busy:
            break
        position += (length + RINGBUF_HEADER + 7) // 8 * 8
    view["records"] = records
    return view


def ring_view(
    kind: str,
    image: bytes,
    page_size: int,
    info: FdInfo | None,
    symbols: SymbolTable,
    consumer_pos: int = 0,
) -> Any:
    """What of a mapping's bytes must match on a replay (module docstring)."""
    if kind == "perf" and len(image) > page_size:
        return perf_view(image, page_size, info, symbols)
    if kind == "ringbuf_consumer" and len(image) >= 8:
        return {"consumer_pos": _U64.unpack_from(image, 0)[0]}
    if kind == "ringbuf_producer" and len(image) > page_size:
        return ringbuf_producer_view(image, page_size, consumer_pos)
    return {"bytes": image.rstrip(b"\0").hex(), "len": len(image)}


def consumer_position(image: bytes) -> int:
    return int(_U64.unpack_from(image, 0)[0]) if len(image) >= 8 else 0


def u32(value: int) -> bytes:
    return _U32.pack(value)
