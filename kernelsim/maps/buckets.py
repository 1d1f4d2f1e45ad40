"""The kernel's hash table buckets (kernel/bpf/hashtab.c): where a key goes, and the order in
which GET_NEXT_KEY and the batch lookups meet the elements.

Theory of operation
-------------------
Rules, as Linux 6.18 applies them to HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH and
HASH_OF_MAPS:

1. hash = jhash2(the key's u32 words, hashrnd) when key_size % 4 == 0, else jhash(the key's bytes,
   hashrnd) (htab_map_hash); hashrnd is 0 with BPF_F_ZERO_SEED, else get_random_u32() at creation.
2. bucket = hash & (n_buckets - 1), n_buckets = roundup_pow_of_two(max_entries).
3. An inserted element is linked at the head of its bucket's list (hlist_nulls_add_head_rcu); a
   delete, an LRU eviction or a batch delete unlinks it.
4. An update that swaps in a new element (HASH preallocated or not, LRU_HASH, HASH_OF_MAPS
   before 6.16) links the new one at the head and unlinks the old one, so the key moves to the
   front of its bucket; an update in place (PERCPU_HASH, LRU_PERCPU_HASH, HASH_OF_MAPS since
   6.16, BPF_F_LOCK) leaves the order alone. (hash.py decides which; this module moves.)
5. Walks go bucket by bucket from bucket 0, each bucket from its head. GET_NEXT_KEY of a key in
   the map answers the next element of the key's bucket, else the head of the next non-empty
   bucket; of a key not in the map (or no key) the head of the first non-empty bucket.

| operation      | `BucketLists`                  | effect on the order                |
|----------------|--------------------------------|------------------------------------|
| insert         | `link(slot, bucket)`           | the slot becomes its bucket's head |
| delete / evict | `unlink(slot)`                 | its neighbours close up            |
| update (swap)  | `to_front(slot)`               | unlink, then link at the head      |
| walk           | `first()`, `after(slot)`,      | none                               |
|                | `next_bucket(i)`, `slots_in(b)`|                                    |

Representation: the lists are intrusive, as the kernel's hlists: per element slot the next slot
in its bucket (-1 at the end) and the slot's bucket, in u32/i32 arrays; per bucket the head slot
and a one-byte "non-empty" flag, in chunks of 4096 buckets made on first use, with one flag per
chunk. The next non-empty bucket is then at most two `bytearray.find` calls away, an element
costs 8 bytes of order, and a map of 2^27 buckets (the most) costs nothing until it holds
elements.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Final

from kernelsim.maps.jhash import jhash2_of_size, jhash_of_size
from kernelsim.maps.slots import SlotTable

CHUNK_SHIFT: Final = 12
"""log2 of the buckets per chunk."""
_CHUNK_MASK: Final = (1 << CHUNK_SHIFT) - 1
_END: Final = -1


def htab_map_hash(key_size: int, hashrnd: int) -> Callable[[bytes], int]:
    """htab_map_hash for keys of `key_size` bytes with seed `hashrnd`."""
    if key_size % 4 == 0:
        return jhash2_of_size(key_size, hashrnd)
    return jhash_of_size(key_size, hashrnd)


class BucketLists:
    """Element slots in `n_buckets` singly linked lists, each with its newest element first."""

    __slots__ = ("_bucket", "_chunk_used", "_chunks", "_next", "n_buckets")

    def __init__(self, n_buckets: int) -> None:
        self.n_buckets = n_buckets
        self._next = array("i")
        """slot -> the next slot in its bucket (_END at the end)."""
        self._bucket = array("I")
        """slot -> its bucket."""
        self._chunks: dict[int, tuple[array[int], bytearray]] = {}
        """chunk -> (bucket -> head slot, bucket -> 1 when non-empty), for the chunk's buckets."""
        self._chunk_used = bytearray(((n_buckets - 1) >> CHUNK_SHIFT) + 1)
        """chunk -> 1 when one of its buckets is non-empty."""

    def link(self, slot: int, bucket: int) -> None:
        """Make `slot` (in no list) the head of `bucket`."""
        chunk = self._chunks.get(bucket >> CHUNK_SHIFT)
        if chunk is None:
            chunk = self._new_chunk(bucket >> CHUNK_SHIFT)
        heads, nonempty = chunk
        pos = bucket & _CHUNK_MASK
        after = self._next
        if slot == len(after):
            after.append(heads[pos])
            self._bucket.append(bucket)
        else:
            after[slot] = heads[pos]
            self._bucket[slot] = bucket
        heads[pos] = slot
        nonempty[pos] = 1

    def _new_chunk(self, index: int) -> tuple[array[int], bytearray]:
        size = min(self.n_buckets, 1 << CHUNK_SHIFT)
        chunk = self._chunks[index] = (array("i", [_END]) * size, bytearray(size))
        self._chunk_used[index] = 1
        return chunk

    def unlink(self, slot: int) -> None:
        """Take `slot` out of its bucket's list."""
        bucket = self._bucket[slot]
        index = bucket >> CHUNK_SHIFT
        heads, nonempty = self._chunks[index]
        pos = bucket & _CHUNK_MASK
        after = self._next
        here = heads[pos]
        if here == slot:
            heads[pos] = after[slot]
            if after[slot] == _END:
                nonempty[pos] = 0
                if nonempty.find(1) < 0:
                    del self._chunks[index]
                    self._chunk_used[index] = 0
            return
        while after[here] != slot:
            here = after[here]
        after[here] = after[slot]

    def to_front(self, slot: int) -> None:
        """Move `slot` to the head of its bucket."""
        bucket = self._bucket[slot]
        heads = self._chunks[bucket >> CHUNK_SHIFT][0]
        if heads[bucket & _CHUNK_MASK] != slot:
            self.unlink(slot)
            self.link(slot, bucket)

    def next_bucket(self, start: int) -> int:
        """The first non-empty bucket at or after `start`; -1 when there is none."""
        if start >= self.n_buckets:
            return -1
        used = self._chunk_used
        index = start >> CHUNK_SHIFT
        pos = start & _CHUNK_MASK
        while True:
            if used[index]:
                found = self._chunks[index][1].find(1, pos)
                if found >= 0:
                    return (index << CHUNK_SHIFT) | found
            index = used.find(1, index + 1)
            if index < 0:
                return -1
            pos = 0

    def head(self, bucket: int) -> int:
        """The head slot of non-empty `bucket`."""
        return self._chunks[bucket >> CHUNK_SHIFT][0][bucket & _CHUNK_MASK]

    def after(self, slot: int) -> int:
        """The slot after `slot` in walk order; -1 past the last one."""
        following = self._next[slot]
        if following != _END:
            return following
        bucket = self.next_bucket(self._bucket[slot] + 1)
        return _END if bucket < 0 else self.head(bucket)

    def first(self) -> int:
        """The first slot in walk order; -1 when every bucket is empty."""
        bucket = self.next_bucket(0)
        return _END if bucket < 0 else self.head(bucket)

    def slots_in(self, bucket: int) -> list[int]:
        """The slots of `bucket`, head first."""
        chunk = self._chunks.get(bucket >> CHUNK_SHIFT)
        slots: list[int] = []
        if chunk is None:
            return slots
        after = self._next
        slot = chunk[0][bucket & _CHUNK_MASK]
        while slot != _END:
            slots.append(slot)
            slot = after[slot]
        return slots


class HtabSlotTable(SlotTable):
    """A `SlotTable` whose keys also sit in the kernel's buckets (rules 1-3): `key_after` walks
    in the kernel's order, and `to_front` is rule 4's swap."""

    __slots__ = ("_hash", "_mask", "buckets")

    def __init__(
        self, hash_key: Callable[[bytes], int], n_buckets: int, ordered: bool = False
    ) -> None:
        super().__init__(ordered)
        self._hash = hash_key
        self._mask = n_buckets - 1
        self.buckets = BucketLists(n_buckets)

    def add(self, key: bytes) -> int:
        slot = super().add(key)
        self.buckets.link(slot, self._hash(key) & self._mask)
        return slot

    def remove(self, key: bytes) -> int | None:
        slot = super().remove(key)
        if slot is not None:
            self.buckets.unlink(slot)
        return slot

    def to_front(self, slot: int) -> None:
        """The element in `slot` was replaced by a new one: it moves to its bucket's head."""
        self.buckets.to_front(slot)

    def key_after(self, key: bytes | None) -> bytes | None:
        """htab_map_get_next_key: the key after `key` in walk order, the first key when `key` is
        None or not in the map; None past the last one."""
        slot = None if key is None else self.index.get(key)
        buckets = self.buckets
        found = buckets.first() if slot is None else buckets.after(slot)
        return None if found < 0 else self.key_at(found)
