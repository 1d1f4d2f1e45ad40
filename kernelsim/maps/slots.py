"""Element storage for hash maps: keys in numbered slots, values in chunked bytearrays.

Theory of operation
-------------------
A hash map's elements live in slots 0..max_entries-1, as the kernel's preallocated elements do.
`SlotTable` maps each key to its slot (a dict; an OrderedDict kept in recency order for LRU maps)
and remembers which slots are in use (one byte per slot, scanned with `bytearray.find`), so that
`key_after` walks the keys in slot order. A freed slot is reused first (last freed, first reused).
The hash maps use `buckets.HtabSlotTable`, which keeps the same slots in the kernel's bucket lists
and walks them in the kernel's order instead. `ValueSlab` keeps one fixed-size value per slot in
bytearray chunks allocated on first use, so a 1M-entry map costs one dict entry, one key object,
one slot number and the value bytes per element, and `view(slot)` is a writable memoryview that
aliases the stored value.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

CHUNK_BYTES: Final = 64 << 10
"""The size of one value chunk (values larger than this get a chunk each)."""


class SlotTable:
    """key -> slot, with the used slots in order."""

    __slots__ = ("_free", "_keys", "_used", "index")

    def __init__(self, ordered: bool = False) -> None:
        self.index: dict[bytes, int] = OrderedDict() if ordered else {}
        """key -> slot (for LRU maps, least recently used first)."""
        self._keys: list[bytes | None] = []
        self._used = bytearray()
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.index)

    def add(self, key: bytes) -> int:
        """Put `key` (not present) in a free slot; return the slot."""
        free = self._free
        if free:
            slot = free.pop()
            self._keys[slot] = key
            self._used[slot] = 1
        else:
            slot = len(self._keys)
            self._keys.append(key)
            self._used.append(1)
        self.index[key] = slot
        return slot

    def remove(self, key: bytes) -> int | None:
        """Free the slot of `key`; return it (None when absent)."""
        slot = self.index.pop(key, None)
        if slot is not None:
            self._keys[slot] = None
            self._used[slot] = 0
            self._free.append(slot)
        return slot

    def key_at(self, slot: int) -> bytes:
        """The key in used slot `slot`."""
        key = self._keys[slot]
        assert key is not None
        return key

    def key_after(self, key: bytes | None) -> bytes | None:
        """The key in the next used slot after `key`'s; the first key when `key` is None or
        absent; None past the last one."""
        slot = None if key is None else self.index.get(key)
        found = self._used.find(1, 0 if slot is None else slot + 1)
        return None if found < 0 else self._keys[found]


class ValueSlab:
    """One `stride`-byte value per slot, in zero-initialised chunks."""

    __slots__ = ("_chunks", "per_chunk", "stride")

    def __init__(self, stride: int, capacity: int) -> None:
        self.stride = stride
        self.per_chunk = max(1, min(capacity, CHUNK_BYTES // max(stride, 1)))
        self._chunks: list[bytearray] = []

    def _chunk(self, slot: int) -> tuple[bytearray, int]:
        index, pos = divmod(slot, self.per_chunk)
        chunks = self._chunks
        while len(chunks) <= index:
            chunks.append(bytearray(self.per_chunk * self.stride))
        return chunks[index], pos * self.stride

    def get(self, slot: int) -> bytes:
        chunk, start = self._chunk(slot)
        return bytes(chunk[start : start + self.stride])

    def set(self, slot: int, data: bytes, offset: int = 0) -> None:
        """Write `data` into slot `slot` at `offset`."""
        chunk, start = self._chunk(slot)
        start += offset
        chunk[start : start + len(data)] = data

    def fill(self, slot: int, data: bytes, offset: int) -> None:
        """Zero slot `slot`, then write `data` at `offset` (a per-CPU value set from a program
        on one CPU)."""
        chunk, start = self._chunk(slot)
        chunk[start : start + self.stride] = bytes(self.stride)
        start += offset
        chunk[start : start + len(data)] = data

    def view(self, slot: int, offset: int, size: int) -> memoryview:
        """A writable view of `size` bytes at `offset` in slot `slot`."""
        chunk, start = self._chunk(slot)
        start += offset
        return memoryview(chunk)[start : start + size]
