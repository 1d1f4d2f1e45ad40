"""perf_event_output: a sample into an event's ring (the test hook and bpf_perf_event_output).

Theory of operation
-------------------
`perf_output(kernel, event_or_fd, raw, ...)` does what the kernel's perf_event_output does for
a PERF_RECORD_SAMPLE carrying `raw` (the data of bpf_perf_event_output): it lays the sample out
per the event's sample_type, in perf_output_sample's order, and writes it into the ring the
event outputs to (its own, or the one SET_OUTPUT chose). The fields the simulator has values
for come from the call (ip, pid/tid, cpu, callchain) and the kernel (time: the virtual clock;
id/stream_id/identifier: the event id; period: the event's sample period; read values: the
event's count and enabled time); the fields it has none for (branch stack, registers, user
stack, weight, data source, transaction, physical address, cgroup, page sizes, aux) are written
as the kernel writes them when empty. The RAW padding is skipped, not written: the ring keeps
its old bytes there, as after the kernel's __output_skip. It returns what perf_event_output
returns: 0 when written, -ENOSPC when the event has no ring or the ring dropped it (full or
paused), -E2BIG for a sample too big for a record. A write that crossed a wakeup point wakes
the ring's readers.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from bpfsys.abi import PerfAttrFlag, ReadFormat, SampleType
from bpfsys.perf_records import (
    HEADER_SIZE,
    MAX_RECORD_SIZE,
    SAMPLE_ID_TYPE,
    SUPPORTED_SAMPLE_TYPE,
    LostRecord,
    PerfRecordError,
    Sample,
    SampleId,
    encode_lost,
    encode_sample,
    raw_padded_size,
)
from kernelsim.perf.attr import has_flag
from kernelsim.perf.event import PerfEvent

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

PERF_RECORD_MISC_KERNEL: Final = 1
PERF_RECORD_MISC_USER: Final = 2
BRANCH_HW_INDEX: Final = 1 << 17
"""PERF_SAMPLE_BRANCH_HW_INDEX: the branch stack carries hw_idx."""
_BEFORE_READ: Final = (
    SampleType.IDENTIFIER,
    SampleType.IP,
    SampleType.TID,
    SampleType.TIME,
    SampleType.ADDR,
    SampleType.ID,
    SampleType.STREAM_ID,
    SampleType.CPU,
    SampleType.PERIOD,
)
"""The 8-byte sample fields perf_output_sample writes before PERF_SAMPLE_READ."""
_EMPTY_AFTER_RAW: Final = (
    SampleType.REGS_USER,  # abi PERF_SAMPLE_REGS_ABI_NONE
    SampleType.STACK_USER,  # size 0
    SampleType.WEIGHT | SampleType.WEIGHT_STRUCT,
    SampleType.DATA_SRC,
    SampleType.TRANSACTION,
    SampleType.REGS_INTR,  # abi PERF_SAMPLE_REGS_ABI_NONE
    SampleType.PHYS_ADDR,
    SampleType.CGROUP,
    SampleType.DATA_PAGE_SIZE,
    SampleType.CODE_PAGE_SIZE,
    SampleType.AUX,  # size 0
)
"""The fields after RAW (and BRANCH_STACK) that are one zero u64 when the kernel has nothing."""
_U64 = struct.Struct("<Q")


def read_values(event: PerfEvent) -> bytes:
    """perf_output_read: the event's (or its group's) count, times, ids and lost counts."""
    fmt = event.attr.read_format
    enabled = event.enabled_time()
    values: list[int] = []

    def one(member: PerfEvent) -> None:
        values.append(member.count)
        if fmt & ReadFormat.ID:
            values.append(member.id)
        if fmt & ReadFormat.LOST:
            values.append(member.lost_samples)

    if fmt & ReadFormat.GROUP:
        leader = event.group_leader
        values.append(1 + len(leader.siblings))
        values += [enabled] * (bool(fmt & ReadFormat.TOTAL_TIME_ENABLED))
        values += [enabled] * (bool(fmt & ReadFormat.TOTAL_TIME_RUNNING))
        for member in (leader, *leader.siblings):
            one(member)
    else:
        values.append(event.count)
        values += [enabled] * (bool(fmt & ReadFormat.TOTAL_TIME_ENABLED))
        values += [enabled] * (bool(fmt & ReadFormat.TOTAL_TIME_RUNNING))
        if fmt & ReadFormat.ID:
            values.append(event.id)
        if fmt & ReadFormat.LOST:
            values.append(event.lost_samples)
    return b"".join(_U64.pack(v & ((1 << 64) - 1)) for v in values)


def sample_record(event: PerfEvent, sample: Sample) -> bytes:
    """The PERF_RECORD_SAMPLE the kernel writes for `sample` on `event` (PerfRecordError when
    it does not fit in a record)."""
    sample_type = event.attr.sample_type
    record = bytearray(encode_sample(sample, sample_type & SUPPORTED_SAMPLE_TYPE))
    if sample_type & SampleType.READ:
        at = HEADER_SIZE + 8 * sum(1 for bit in _BEFORE_READ if sample_type & bit)
        record[at:at] = read_values(event)
    if sample_type & SampleType.BRANCH_STACK:
        record += _U64.pack(0)
        if event.attr.branch_sample_type & BRANCH_HW_INDEX:
            record += _U64.pack(0)
    for bits in _EMPTY_AFTER_RAW:
        if sample_type & bits:
            record += _U64.pack(0)
    if len(record) > MAX_RECORD_SIZE:
        raise PerfRecordError(f"a {len(record)}-byte sample does not fit in a record")
    struct.pack_into("<H", record, 6, len(record))
    return bytes(record)


def perf_output(
    kernel: Kernel,
    target: PerfEvent | int,
    raw: bytes,
    *,
    cpu: int | None = None,
    pid: int | None = None,
    tid: int | None = None,
    ip: int = 0,
    addr: int = 0,
    callchain: Sequence[int] = (),
    misc: int = PERF_RECORD_MISC_KERNEL,
) -> int:
    """Write a sample carrying `raw` into the ring of `target` (an event or its fd); 0 or the
    kernel's negative errno (module docstring). `cpu` defaults to the event's CPU (0 for a task
    event), `pid`/`tid` to the simulated task."""
    event = target if isinstance(target, PerfEvent) else kernel.fds.get(target, PerfEvent)
    rb = event.ring_buffer()
    if rb is None:
        return -errno.ENOSPC
    this_cpu = cpu if cpu is not None else max(event.cpu, 0)
    this_pid = kernel.config.pid if pid is None else pid
    this_tid = this_pid if tid is None else tid
    now = kernel.now_ns
    sample = Sample(
        misc=misc,
        identifier=event.id,
        ip=ip,
        pid=this_pid,
        tid=this_tid,
        time=now,
        addr=addr,
        id=event.id,
        stream_id=event.id,
        cpu=this_cpu,
        period=event.sample_period,
        callchain=tuple(callchain),
        raw=bytes(raw),
    )
    try:
        record = sample_record(event, sample)
    except PerfRecordError:
        return -errno.E2BIG
    sample_id = None
    if has_flag(event.attr, PerfAttrFlag.SAMPLE_ID_ALL):
        sample_id = SampleId(this_pid, this_tid, now, event.id, event.id, this_cpu, event.id)
    watermark_mode = has_flag(event.attr, PerfAttrFlag.WATERMARK)
    skip = raw_padding(event, record, len(raw))
    lost_before = rb.ring.lost_total
    result = rb.ring.output(
        record,
        lost_record=lambda count: _lost_record(event, sample_id, count),
        wakeup_events=0 if watermark_mode else event.attr.wakeup_events,
        backward=event.write_backward,
        skip=skip,
    )
    event.lost_samples += rb.ring.lost_total - lost_before
    if result.wakeup:
        event.wake_up()
    return 0 if result.written else -errno.ENOSPC


def raw_padding(event: PerfEvent, record: bytes, length: int) -> tuple[int, int]:
    """Where in `record` the RAW data's padding is (the kernel skips it, leaving the ring's old
    bytes); (0, 0) without PERF_SAMPLE_RAW."""
    sample_type = event.attr.sample_type
    if not sample_type & SampleType.RAW:
        return (0, 0)
    after = sum(8 for bits in _EMPTY_AFTER_RAW if sample_type & bits)
    if sample_type & SampleType.BRANCH_STACK:
        after += 16 if event.attr.branch_sample_type & BRANCH_HW_INDEX else 8
    end = len(record) - after
    return (end - (raw_padded_size(length) - length), end)


def _lost_record(event: PerfEvent, sample_id: SampleId | None, count: int) -> bytes:
    sample_type = event.attr.sample_type & SAMPLE_ID_TYPE
    return encode_lost(LostRecord(event.id, count, sample_id), sample_type)
