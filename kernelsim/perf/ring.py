"""The perf ring writer: records into a ring buffer exactly as the kernel's perf output path
writes them (sans-IO: any writable byte buffer will do).

Theory of operation
-------------------
A ring (the kernel's struct perf_buffer) is one user page (struct perf_event_mmap_page)
followed by 2^n data pages. `PerfRing` ports kernel/events/ring_buffer.c:

* `output(record, ...)` is perf_output_begin + copy + perf_output_end. The record goes at
  `head`; `head` only grows (or, for write_backward events, only shrinks) modulo 2^64, the
  position in the data area is head & (data_size - 1), and a record that runs past the end of
  the data area continues at its start. The new head is published in the user page's data_head.
* A writable mapping makes the consumer's data_tail count: a record that does not fit in
  CIRC_SPACE(head, tail) (the kernel never fills the last byte) is dropped and `lost` counts it.
  The next record that fits is preceded by PERF_RECORD_LOST with that count (the LOST record's
  size is part of the space check), and `lost` starts again from zero.
* A read-only mapping is overwrite mode: data_tail is not read, old data is overwritten.
* While paused (PAUSE_OUTPUT, or a ring without data pages) records are dropped; a paused ring
  with data pages counts them lost.
* Wakeups follow the kernel's counters: `wakeup` advances when `head` passes the watermark
  (wakeup_watermark, or half the data area) and, for samples, every `wakeup_events` samples;
  a record during which `wakeup` changed wakes the readers (`poll` becomes POLLIN; reading it
  with `take_poll` clears it, as perf_poll's atomic_xchg does).

The user page fields other than data_head/data_tail are filled by `init_user_page` and
`update_user_page` (perf_event_init_userpage / perf_event_update_userpage).
"""

from __future__ import annotations

import select
import struct
from collections.abc import Callable
from typing import Final

import attrs

from bpfsys.abi import DATA_HEAD_OFFSET, DATA_TAIL_OFFSET, PerfEventMmapPage

U64_MASK: Final = (1 << 64) - 1
USER_PAGE_SIZE_FIELD: Final = PerfEventMmapPage._reserved.offset
"""perf_event_mmap_page.size: offsetof(struct perf_event_mmap_page, __reserved) (96)."""
CAP_BIT0_IS_DEPRECATED: Final = 1 << 1
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_S64 = struct.Struct("<q")


def _field(name: str) -> int:
    offset: int = getattr(PerfEventMmapPage, name).offset
    return offset


@attrs.frozen
class OutputResult:
    """What one output did: whether the record was written, and whether readers were woken."""

    written: bool
    wakeup: bool


class PerfRing:
    """A perf ring over `memory`: one user page and `nr_pages` data pages of `page_size`."""

    def __init__(
        self,
        memory: memoryview,
        page_size: int,
        nr_pages: int,
        *,
        overwrite: bool,
        watermark: int = 0,
    ) -> None:
        if nr_pages & (nr_pages - 1):
            raise ValueError(f"nr_pages must be 0 or a power of two, got {nr_pages}")
        if len(memory) < (1 + nr_pages) * page_size:
            raise ValueError("memory smaller than the ring")
        self.memory = memory
        self.page_size = page_size
        self.nr_pages = nr_pages
        self.data_size = nr_pages * page_size
        self.overwrite = overwrite
        data_size = self.data_size
        self.watermark = min(data_size, watermark) if watermark else data_size // 2
        self.head = 0
        self.lost = 0
        """Records dropped since the last PERF_RECORD_LOST (rb->lost)."""
        self.lost_total = 0
        """Records dropped over the ring's life (event->lost_samples)."""
        self.paused = nr_pages == 0
        self.wakeup = 0
        self.events = 0
        self.poll = 0

    # -- the user page ------------------------------------------------------------------------
    @property
    def data_tail(self) -> int:
        return int(_U64.unpack_from(self.memory, DATA_TAIL_OFFSET)[0])

    def init_user_page(self) -> None:
        """perf_event_init_userpage."""
        caps = _field("capabilities")
        _U64.pack_into(self.memory, caps, CAP_BIT0_IS_DEPRECATED)
        _U32.pack_into(self.memory, _field("size"), USER_PAGE_SIZE_FIELD)
        _U64.pack_into(self.memory, _field("data_offset"), self.page_size)
        _U64.pack_into(self.memory, _field("data_size"), self.data_size)

    def update_user_page(self, count: int, time_enabled: int, time_running: int) -> None:
        """perf_event_update_userpage: the seqlock-protected counter and time fields."""
        lock = _field("lock")
        _U32.pack_into(self.memory, lock, (_U32.unpack_from(self.memory, lock)[0] + 1) & 0xFFFFFFFF)
        _U32.pack_into(self.memory, _field("index"), 0)
        _S64.pack_into(self.memory, _field("offset"), count)
        _U64.pack_into(self.memory, _field("time_enabled"), time_enabled & U64_MASK)
        _U64.pack_into(self.memory, _field("time_running"), time_running & U64_MASK)
        _U32.pack_into(self.memory, lock, (_U32.unpack_from(self.memory, lock)[0] + 1) & 0xFFFFFFFF)

    # -- output ---------------------------------------------------------------------------------
    def _has_space(self, head: int, tail: int, size: int, backward: bool) -> bool:
        mask = self.data_size - 1
        if backward:
            return ((head - (tail + 1)) & mask) >= size
        return ((tail - (head + 1)) & mask) >= size

    def _copy(self, offset: int, data: bytes) -> None:
        pos = offset & (self.data_size - 1)
        first = min(len(data), self.data_size - pos)
        base = self.page_size
        self.memory[base + pos : base + pos + first] = data[:first]
        rest = len(data) - first
        if rest:
            self.memory[base : base + rest] = data[first:]

    def output(
        self,
        record: bytes,
        *,
        lost_record: Callable[[int], bytes],
        sample: bool = True,
        wakeup_events: int = 0,
        backward: bool = False,
        skip: tuple[int, int] = (0, 0),
    ) -> OutputResult:
        """Write `record` (a whole record, header included, a multiple of 8 bytes).

        `lost_record(count)` makes the PERF_RECORD_LOST that goes first after drops (its size
        must not depend on `count`); `sample` and `wakeup_events` drive the sample wakeups
        (0: none, as for attr.watermark events); the record's bytes [skip[0], skip[1]) are
        left as the ring had them (__output_skip: the RAW padding).
        """
        if self.paused:
            if self.nr_pages:
                self.lost += 1
                self.lost_total += 1
            return OutputResult(False, False)
        have_lost = self.lost
        lost_bytes = lost_record(have_lost) if have_lost else b""
        size = len(record) + len(lost_bytes)
        handle_wakeup = self.wakeup
        head = self.head
        if not self.overwrite and not self._has_space(head, self.data_tail, size, backward):
            self.lost += 1
            self.lost_total += 1
            return OutputResult(False, self._put_handle(handle_wakeup))
        head = (head - size if backward else head + size) & U64_MASK
        self.head = head
        offset = head if backward else (head - size) & U64_MASK
        published = (-head & U64_MASK) if backward else head
        if (published - self.wakeup) & U64_MASK > self.watermark:
            self.wakeup = (self.wakeup + self.watermark) & U64_MASK
        if have_lost:
            self._copy(offset, lost_bytes)
            self.lost = 0
        start = offset + len(lost_bytes)
        self._copy(start, record[: skip[0]])
        self._copy(start + skip[1], record[skip[1] :])
        if sample and wakeup_events:
            self.events += 1
            if self.events >= wakeup_events:
                self.events -= wakeup_events
                self.wakeup = (self.wakeup + 1) & U64_MASK
        return OutputResult(True, self._put_handle(handle_wakeup))

    def _put_handle(self, handle_wakeup: int) -> bool:
        """perf_output_put_handle: publish data_head; wake readers if `wakeup` moved."""
        _U64.pack_into(self.memory, DATA_HEAD_OFFSET, self.head)
        if handle_wakeup != self.wakeup:
            self.poll = select.POLLIN
            return True
        return False

    def take_poll(self) -> int:
        """perf_poll's atomic_xchg(&rb->poll, 0)."""
        events, self.poll = self.poll, 0
        return events
