"""Spoiled perf ring writes: the kernel-side half of fault injection.

Theory of operation
-------------------
`hook_ring(ring, decide)` puts a shim in front of one simulated `PerfRing`'s `output` (the
writer behind perf_output and bpf_perf_event_output). For each record written into a forward
ring the shim asks `decide()` for a `RingFault` and applies it; write_backward rings are not
asked. What each fault does to the ring (bytes and counters, as `RingFault` documents):

=======  ====================================================================================
DROP     nothing is written; ``lost`` and ``lost_total`` grow by one, as for a full ring
TORN     written; the user page's data_head is published ``cut`` bytes short of the record's
         end, ``cut`` = half the record rounded down to 8 (at least 8), so the header stays
         visible; the ring's own head is right and the next write publishes it
SHORT    written; the header's u16 size is set to 8
=======  ====================================================================================

Records shorter than 16 bytes (none the kernel writes as samples) are written untouched by
TORN and SHORT.

The shim is an instance attribute over the bound method, passing the writer's keyword
options through unchanged: `kernelsim.perf.ring` has no hook of its own yet (a `fault` callback
consulted by `PerfRing.output` would replace this shim).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from bpfsys.abi import DATA_HEAD_OFFSET
from kernelsim.faults.plan import RingFault
from kernelsim.perf.ring import U64_MASK, OutputResult, PerfRing

__all__ = ["hook_ring", "spoil_record"]

HEADER_SIZE: Final = 8
SIZE_FIELD: Final = 6
"""Offset of the u16 size in struct perf_event_header."""
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")


def spoil_record(ring: PerfRing, record_size: int, fault: RingFault) -> None:
    """Apply TORN or SHORT to the record of `record_size` bytes just written at the end of
    `ring` (forward: it ends at ring.head)."""
    if fault is RingFault.DROP:
        raise ValueError("DROP happens instead of a write, not after one")
    if record_size < 2 * HEADER_SIZE:
        return
    start = (ring.head - record_size) & U64_MASK
    if fault is RingFault.TORN:
        cut = max(HEADER_SIZE, record_size // 2 // 8 * 8)
        _U64.pack_into(ring.memory, DATA_HEAD_OFFSET, (ring.head - cut) & U64_MASK)
    else:
        offset = ring.page_size + (start & (ring.data_size - 1))
        _U16.pack_into(ring.memory, offset + SIZE_FIELD, HEADER_SIZE)


def hook_ring(ring: PerfRing, decide: Callable[[], RingFault | None]) -> None:
    """Route `ring`'s writes through `decide` (module docstring)."""
    write = ring.output

    def output(record: bytes, **options: Any) -> OutputResult:
        fault = None if options.get("backward", False) else decide()
        if fault is RingFault.DROP:
            ring.lost += 1
            ring.lost_total += 1
            return OutputResult(written=False, wakeup=False)
        result = write(record, **options)
        if fault is not None and result.written:
            spoil_record(ring, len(record), fault)
        return result

    setattr(ring, "output", output)  # noqa: B010 -- an instance attribute over the method
