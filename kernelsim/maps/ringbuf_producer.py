"""The BPF ring buffer producer (kernel/bpf/ringbuf.c, 6.10 and later), sans-IO.

Theory of operation
-------------------
The producer works on memory its owner hands it (views of the ring's shared pages); it does no
I/O and knows nothing of fds, programs or wakeup delivery. The memory is laid out as the
consumer maps it:

* the consumer page: ``consumer_pos`` (u64) at offset 0, written by the consumer;
* the producer page: ``producer_pos`` (u64) at 0 and ``pending_pos`` (u64) at 8, written here;
* the data area of `size` bytes (a power of two) and, right after it, a second copy of it: the
  kernel maps the data pages twice so a record wrapping the end reads contiguously; the
  simulator's memory holds the two copies and every write lands in both.

A record is an 8-byte header (u32 ``len`` with bit 31 BUSY and bit 30 DISCARD, u32 ``pg_off``:
the record's page from the start of struct bpf_ringbuf, `data_pgoff` + offset // page size)
and ``len`` data bytes, taking round_up(len + 8, 8) bytes. Positions are free-running u64.

Rules (__bpf_ringbuf_reserve, bpf_ringbuf_commit):

1. reserve(len): a record larger than the data area (or len above RINGBUF_MAX_RECORD_SZ) is
   refused. ``pending_pos`` first moves over the committed records in front of it (stopping
   at the first BUSY one) and is stored; then the reservation is refused when the new
   producer position would be more than size - 1 bytes past ``consumer_pos`` or past
   ``pending_pos``. Otherwise the header (len | BUSY, pg_off) is written, then
   ``producer_pos`` moves: the record is RESERVED.
2. commit(position, discard, flags): the header's BUSY bit is cleared (DISCARD set for a
   discard): the record is COMMITTED or DISCARDED. Data written into a reservation reaches
   the ring before its header changes, so a consumer never sees a committed record without its
   bytes.
3. wakeup after a commit (`WAKEUP_RULES`, first match wins): BPF_RB_FORCE_WAKEUP wakes;
   BPF_RB_NO_WAKEUP does not; otherwise the consumer is woken when it has caught up with this
   record (``consumer_pos & mask`` is the record's offset).
4. output(data, flags): flags other than NO_WAKEUP | FORCE_WAKEUP are -EINVAL; a refused
   reservation is -EAGAIN; else reserve, copy, commit: 0.
5. query(flags): AVAIL_DATA (producer_pos - consumer_pos), RING_SIZE, CONS_POS, PROD_POS;
   any other value 0.
"""

from __future__ import annotations

import enum
import errno
import struct
from collections.abc import Callable
from typing import Final

from bpfsys.abi import (
    BPF_RB_AVAIL_DATA,
    BPF_RB_CONS_POS,
    BPF_RB_FORCE_WAKEUP,
    BPF_RB_NO_WAKEUP,
    BPF_RB_PROD_POS,
    BPF_RB_RING_SIZE,
    BPF_RINGBUF_BUSY_BIT,
    BPF_RINGBUF_DISCARD_BIT,
    BPF_RINGBUF_HDR_SZ,
)

RINGBUF_MAX_RECORD_SZ: Final = 0xFFFFFFFF // 4
"""UINT_MAX / 4: the largest length a reservation may ask for."""
OUTPUT_FLAGS: Final = BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP
U64_MASK: Final = (1 << 64) - 1
_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<II")


class RecordState(enum.Enum):
    """What a record's header says about it."""

    RESERVED = "reserved"  # BUSY set
    COMMITTED = "committed"
    DISCARDED = "discarded"


COMMIT_TRANSITIONS: Final[dict[tuple[RecordState, bool], RecordState]] = {
    (RecordState.RESERVED, False): RecordState.COMMITTED,
    (RecordState.RESERVED, True): RecordState.DISCARDED,
}
"""(state, discard) -> the state a commit leaves the record in; only a reservation commits."""

WAKEUP_RULES: Final[tuple[tuple[Callable[[int, bool], bool], bool], ...]] = (
    (lambda flags, caught_up: bool(flags & BPF_RB_FORCE_WAKEUP), True),
    (lambda flags, caught_up: bool(flags & BPF_RB_NO_WAKEUP), False),
    (lambda flags, caught_up: caught_up, True),
    (lambda flags, caught_up: True, False),
)
"""(condition on (commit flags, consumer caught up with the record), wake?) in order."""


def record_size(length: int) -> int:
    """round_up(length + BPF_RINGBUF_HDR_SZ, 8)."""
    return (length + BPF_RINGBUF_HDR_SZ + 7) & ~7


def wakes(flags: int, caught_up: bool) -> bool:
    """Whether a commit with `flags` wakes the consumer (WAKEUP_RULES)."""
    return next(wake for condition, wake in WAKEUP_RULES if condition(flags, caught_up))


def header_state(header: int) -> RecordState:
    if header & BPF_RINGBUF_BUSY_BIT:
        return RecordState.RESERVED
    return RecordState.DISCARDED if header & BPF_RINGBUF_DISCARD_BIT else RecordState.COMMITTED


class RingbufProducer:
    """The kernel side of one BPF ring buffer over views of its memory (module docstring).

    `consumer` holds ``consumer_pos`` at 0; `producer` ``producer_pos`` and ``pending_pos``;
    `data` is 2 * `size` bytes (the data area and its copy); `data_pgoff` is the page of the
    data area counted from the start of struct bpf_ringbuf (what pg_off counts from).
    """

    def __init__(
        self,
        consumer: memoryview,
        producer: memoryview,
        data: memoryview,
        size: int,
        *,
        page_size: int,
        data_pgoff: int,
    ) -> None:
        if size < 8 or size & (size - 1) or len(data) < 2 * size:
            raise ValueError(f"a {size}-byte ring needs a power-of-two size and both copies")
        self.size = size
        self.mask = size - 1
        self.page_size = page_size
        self.data_pgoff = data_pgoff
        self._consumer = consumer[:8].cast("Q")
        self._positions = producer[:16].cast("Q")
        self._data = data

    # -- positions ------------------------------------------------------------------------------
    @property
    def consumer_pos(self) -> int:
        return int(self._consumer[0])

    @property
    def producer_pos(self) -> int:
        return int(self._positions[0])

    @property
    def pending_pos(self) -> int:
        return int(self._positions[1])

    def available(self) -> int:
        """producer_pos - consumer_pos: bytes reserved and not consumed (ringbuf_avail_data_sz)."""
        return (self.producer_pos - self.consumer_pos) & U64_MASK

    # -- memory ---------------------------------------------------------------------------------
    def _write(self, position: int, chunk: bytes) -> None:
        """Write `chunk` at ring position `position` into both copies (wrapping)."""
        size = self.size
        start = position & self.mask
        first = min(len(chunk), size - start)
        data = self._data
        data[start : start + first] = chunk[:first]
        data[size + start : size + start + first] = chunk[:first]
        rest = len(chunk) - first
        if rest:
            data[:rest] = chunk[first:]
            data[size : size + rest] = chunk[first:]

    def _header(self, position: int) -> int:
        return int(_U32.unpack_from(self._data, position & self.mask)[0])

    def _set_length_word(self, position: int, word: int) -> None:
        offset = position & self.mask
        packed = _U32.pack(word)
        self._data[self.size + offset : self.size + offset + 4] = packed  # the copy first
        self._data[offset : offset + 4] = packed

    def state(self, position: int) -> RecordState:
        return header_state(self._header(position))

    # -- the producer ---------------------------------------------------------------------------
    def reserve(self, length: int) -> int | None:
        """Reserve a record of `length` data bytes: its position, or None (rule 1)."""
        if length < 0 or length > RINGBUF_MAX_RECORD_SZ:
            return None
        total = record_size(length)
        if total > self.size:
            return None
        cons_pos = self.consumer_pos
        prod_pos = self.producer_pos
        pend_pos = self.pending_pos
        while pend_pos < prod_pos:
            header = self._header(pend_pos)
            if header & BPF_RINGBUF_BUSY_BIT:
                break
            pend_pos += record_size(header & ~BPF_RINGBUF_DISCARD_BIT & 0xFFFFFFFF)
        self._positions[1] = pend_pos
        new_prod_pos = prod_pos + total
        if (new_prod_pos - cons_pos) & U64_MASK > self.mask or new_prod_pos - pend_pos > self.mask:
            return None
        pg_off = self.data_pgoff + (prod_pos & self.mask) // self.page_size
        offset = prod_pos & self.mask
        packed = _HEADER.pack(length | BPF_RINGBUF_BUSY_BIT, pg_off)
        self._data[self.size + offset : self.size + offset + 8] = packed
        self._data[offset : offset + 8] = packed
        self._positions[0] = new_prod_pos & U64_MASK
        return prod_pos

    def fill(self, position: int, data: bytes) -> None:
        """Copy `data` into the reservation at `position` (before it is committed)."""
        length = self._header(position) & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)
        if len(data) > length:
            raise ValueError(f"{len(data)} bytes into a {length}-byte reservation")
        self._write(position + BPF_RINGBUF_HDR_SZ, data)

    def commit(self, position: int, *, discard: bool, flags: int) -> bool:
        """Submit or discard the reservation at `position` (rule 2); whether the consumer is to
        be woken (rule 3). ValueError for a position that holds no reservation."""
        header = self._header(position)
        new_state = COMMIT_TRANSITIONS.get((header_state(header), discard))
        if new_state is None:
            raise ValueError(f"no reservation at ring position {position}")
        word = header ^ BPF_RINGBUF_BUSY_BIT
        if new_state is RecordState.DISCARDED:
            word |= BPF_RINGBUF_DISCARD_BIT
        self._set_length_word(position, word)
        caught_up = self.consumer_pos & self.mask == position & self.mask
        return wakes(flags, caught_up)

    def output(self, data: bytes, flags: int) -> tuple[int, bool]:
        """bpf_ringbuf_output (rule 4): (0 or a negative errno, wake the consumer?)."""
        if flags & ~OUTPUT_FLAGS:
            return -errno.EINVAL, False
        position = self.reserve(len(data))
        if position is None:
            return -errno.EAGAIN, False
        self.fill(position, data)
        return 0, self.commit(position, discard=False, flags=flags)

    def query(self, flags: int) -> int:
        """bpf_ringbuf_query (rule 5)."""
        if flags == BPF_RB_AVAIL_DATA:
            return self.available()
        if flags == BPF_RB_RING_SIZE:
            return self.size
        if flags == BPF_RB_CONS_POS:
            return self.consumer_pos
        if flags == BPF_RB_PROD_POS:
            return self.producer_pos
        return 0

    def release(self) -> None:
        """Release the views (before the owner unmaps the memory)."""
        self._consumer.release()
        self._positions.release()
        self._data.release()
