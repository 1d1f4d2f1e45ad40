"""Hash maps: HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH and HASH_OF_MAPS.

Theory of operation
-------------------
Creation (htab_map_alloc_check, then htab_map_alloc), in this order:
1. BPF_F_ZERO_SEED without CAP_SYS_ADMIN: EPERM;
2. flags outside NO_PREALLOC | NO_COMMON_LRU | NUMA_NODE | ZERO_SEED | the access flags, or
   RDONLY_PROG with WRONLY_PROG: EINVAL; NO_COMMON_LRU on a non-LRU map: EINVAL;
3. an LRU map without preallocation: ENOTSUPP; a NUMA node for a per-CPU value or per-CPU LRU:
   EINVAL; max_entries, key_size or value_size 0: EINVAL;
4. key_size + value_size >= KMALLOC_MAX_SIZE - sizeof(htab_elem): E2BIG; a per-CPU slot above
   PCPU_MIN_UNIT_SIZE: E2BIG;
5. (alloc) NO_COMMON_LRU rounds max_entries up to a multiple of the possible CPUs; more than 2^28
   buckets (roundup_pow_of_two(max_entries)): E2BIG.

Elements (the `HtabSlotTable` keeps them in slots and in the kernel's buckets; see buckets.py):

| update flags | key present        | key absent, room          | key absent, full |
|--------------|--------------------|---------------------------|------------------|
| BPF_ANY      | replace            | insert                    | E2BIG            |
| BPF_NOEXIST  | EEXIST             | insert                    | E2BIG            |
| BPF_EXIST    | replace            | ENOENT                    | ENOENT           |
| anything else| EINVAL             | EINVAL                    | EINVAL           |

A replace writes the value in place; for HASH and LRU_HASH (whose kernel update swaps in a new
element) it also moves the key to the front of its bucket, as for HASH_OF_MAPS before 6.16
(profile behaviour `fd_htab_update_in_place`); the per-CPU types keep its place. The bucket
seed (hashrnd) is 0 with BPF_F_ZERO_SEED, else drawn from the kernel's seeded random source at
creation.

LRU maps never answer E2BIG: an update on a full LRU map first evicts the least recently used
element (the kernel pops a free element before it looks at the key, so even an update that then
fails or replaces an existing key evicts one; LRU_PERCPU_HASH skips that for BPF_EXIST). Updates
and lookups from programs make an element the most recently used; syscall lookups do not. The
kernel's LRU is a two-list clock with per-CPU free lists that evicts in batches (measured on
6.18: a 100-entry LRU_HASH holds 78 after 103 inserts); the simulator keeps a plain LRU list.

GET_NEXT_KEY goes in the kernel's bucket order; a key not in the map restarts from the first key.
The batch walk (`bucket_from`) hands out whole buckets: the token (in_batch/out_batch) is a u32
bucket index, n_buckets (roundup_pow_of_two(max_entries)) at the end.
"""

from __future__ import annotations

import errno
from collections import OrderedDict
from typing import TYPE_CHECKING, ClassVar, Final, cast

from bpfsys.abi import BpfCmd, MapFlag, MapType, UpdateFlag
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.maps.base import (
    ACCESS_MASK,
    KMALLOC_MAX_SIZE,
    NUMA_NO_NODE,
    PCPU_MIN_UNIT_SIZE,
    BpfMap,
    MapParams,
    check_size,
    disallowed_flags,
    flags_access_ok,
    round_up,
    roundup_pow_of_two,
)
from kernelsim.maps.buckets import HtabSlotTable, htab_map_hash
from kernelsim.maps.map_in_map import MapOfMaps
from kernelsim.maps.slots import ValueSlab

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

# Sizes of the kernel's structures, measured through fdinfo memlock on 6.18 x86_64.
HTAB_SIZE: Final = 832
"""sizeof(struct bpf_htab)."""
BUCKET_SIZE: Final = 16
HTAB_ELEM_SIZE: Final = 48
"""sizeof(struct htab_elem) before the key."""
LLIST_NODE_SIZE: Final = 8
HASHTAB_MAP_LOCK_COUNT: Final = 8
MAX_BUCKETS: Final = 0xFFFFFFFF // BUCKET_SIZE

HASH_BATCH: Final = frozenset(
    {
        BpfCmd.MAP_LOOKUP_BATCH,
        BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH,
        BpfCmd.MAP_UPDATE_BATCH,
        BpfCmd.MAP_DELETE_BATCH,
    }
)
CREATE_FLAGS: Final = (
    MapFlag.NO_PREALLOC
    | MapFlag.NO_COMMON_LRU
    | MapFlag.NUMA_NODE
    | MapFlag.ZERO_SEED
    | ACCESS_MASK
)
PERCPU_TYPES: Final = (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
LRU_TYPES: Final = (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)


def effective_max_entries(params: MapParams, cpus: int) -> int:
    """max_entries as the map keeps it: per-CPU LRU lists get an equal share each."""
    if not params.map_flags & MapFlag.NO_COMMON_LRU:
        return params.max_entries
    rounded = round_up(params.max_entries, cpus)
    return rounded if rounded <= 0xFFFFFFFF else params.max_entries // cpus * cpus


class HashTableMap(BpfMap):
    """What every hash map shares: the slot table, creation checks, iteration, memory usage and
    the bucket walk of the batch commands."""

    batch_commands = HASH_BATCH
    lru: ClassVar[bool] = False

    def init_storage(self) -> None:
        super().init_storage()
        self.n_buckets = roundup_pow_of_two(self.max_entries)
        self.hashrnd = (
            0 if self.map_flags & MapFlag.ZERO_SEED else self.kernel.random.getrandbits(32)
        )
        self.table = HtabSlotTable(
            htab_map_hash(self.key_size, self.hashrnd), self.n_buckets, ordered=self.lru
        )
        self.prealloc = not self.map_flags & MapFlag.NO_PREALLOC
        self.replace_moves_to_front = not self.percpu
        """Whether replacing a key's value moves it to the front of its bucket (the kernel swaps
        in a new element) rather than leaving it in place (per-CPU maps)."""

    @classmethod
    def check_attr(cls, params: MapParams, kernel: Kernel) -> None:
        flags = params.map_flags
        lru = params.map_type in LRU_TYPES
        percpu = params.map_type in PERCPU_TYPES
        if flags & MapFlag.ZERO_SEED and not kernel.capable_sys_admin():
            fail(errno.EPERM, "BPF_F_ZERO_SEED needs CAP_SYS_ADMIN")
        if disallowed_flags(flags, CREATE_FLAGS, kernel) or not flags_access_ok(flags):
            fail(errno.EINVAL, f"flags {flags:#x} not allowed for {params.map_type.name}")
        if not lru and flags & MapFlag.NO_COMMON_LRU:
            fail(errno.EINVAL, "BPF_F_NO_COMMON_LRU needs an LRU map")
        if lru and flags & MapFlag.NO_PREALLOC:
            fail(ENOTSUPP, "LRU maps are always preallocated")
        if params.numa_node != NUMA_NO_NODE and (percpu or flags & MapFlag.NO_COMMON_LRU):
            fail(errno.EINVAL, "a NUMA node for per-CPU memory")
        if not (params.max_entries and params.key_size and params.value_size):
            fail(errno.EINVAL, "max_entries, key_size and value_size must be non-zero")
        if params.key_size + params.value_size >= KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE:
            fail(errno.E2BIG, "key and value exceed an element's kmalloc limit")
        if percpu and round_up(params.value_size, 8) > PCPU_MIN_UNIT_SIZE:
            fail(errno.E2BIG, "per-CPU value larger than PCPU_MIN_UNIT_SIZE")

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        max_entries = effective_max_entries(params, kernel.config.cpus)
        if max_entries > 1 << 31 or roundup_pow_of_two(max_entries) > MAX_BUCKETS:
            fail(errno.E2BIG, f"{max_entries} entries need too many buckets")
        if not params.map_flags & MapFlag.NO_PREALLOC:
            elem = HTAB_ELEM_SIZE + round_up(params.key_size, 8) + round_up(params.value_size, 8)
            check_size(elem * max_entries, "preallocated elements")

    @classmethod
    def create(cls, kernel: Kernel, params: MapParams) -> BpfMap:
        return cls(
            kernel,
            kernel.objects,
            params.map_type,
            params.key_size,
            params.value_size,
            effective_max_entries(params, kernel.config.cpus),
            params.map_flags,
            params.name,
            numa_node=params.numa_node,
        )

    # -- shared operations -------------------------------------------------------------------------
    def get_next_key(self, key: bytes | None) -> bytes:
        found = self.table.key_after(key)
        if found is None:
            fail(errno.ENOENT, "no key after the given one")
        return found

    def value_at(self, slot: int) -> bytes:
        """The syscall image of the value in `slot` (batch lookups)."""
        raise NotImplementedError

    def bucket_from(self, start: int) -> tuple[int, list[int]]:
        """The batch walk's next step: the first non-empty bucket at or after bucket `start` and
        its slots, head first; (n_buckets, []) when the rest of the buckets are empty."""
        buckets = self.table.buckets
        bucket = buckets.next_bucket(start)
        if bucket < 0:
            return self.n_buckets, []
        return bucket, buckets.slots_in(bucket)

    def mem_usage(self) -> int:
        cpus = self.kernel.config.cpus
        percpu = self.percpu
        elem_size = HTAB_ELEM_SIZE + round_up(self.key_size, 8) + (8 if percpu else self.slot_size)
        usage = HTAB_SIZE + BUCKET_SIZE * self.n_buckets + 4 * cpus * HASHTAB_MAP_LOCK_COUNT
        if self.prealloc:
            entries = self.max_entries
            if not (percpu or self.lru or self.map_type == MapType.HASH_OF_MAPS):
                entries += cpus  # the extra elements updates swap in
            usage += elem_size * entries
            if percpu:
                usage += self.slot_size * cpus * entries
            elif not self.lru:
                usage += 8 * cpus
        else:
            count = len(self.table)
            usage += (elem_size + LLIST_NODE_SIZE) * count
            if percpu:
                usage += (LLIST_NODE_SIZE + 8 + self.slot_size * cpus) * count
        return usage


class HashMap(HashTableMap):
    """HASH and PERCPU_HASH: fixed-size values in a slab, one slot per element."""

    map_types = (MapType.HASH, MapType.PERCPU_HASH)

    def init_storage(self) -> None:
        super().init_storage()
        self.values = ValueSlab(self.syscall_value_size, self.max_entries)

    def lookup(self, key: bytes) -> bytes:
        slot = self.table.index.get(key)
        if slot is None:
            fail(errno.ENOENT, "no such key")
        return self.values.get(slot)

    def value_at(self, slot: int) -> bytes:
        return self.values.get(slot)

    def _check_update(self, present: bool, flags: int) -> None:
        """The flag checks of an update (htab_map_update_elem, check_flags)."""
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        if present and flags == UpdateFlag.NOEXIST:
            fail(errno.EEXIST, "key exists (BPF_NOEXIST)")
        if not present and flags == UpdateFlag.EXIST:
            fail(errno.ENOENT, "no such key (BPF_EXIST)")

    def _slot_for(self, key: bytes, flags: int) -> int:
        """The slot an update writes: the key's (moved to the front of its bucket when the
        kernel swaps elements), or a new one (E2BIG when full)."""
        table = self.table
        slot = table.index.get(key)
        self._check_update(slot is not None, flags)
        if slot is None:
            if len(table) >= self.max_entries:
                fail(errno.E2BIG, f"map full ({self.max_entries} entries)")
            slot = table.add(key)
        elif self.replace_moves_to_front:
            table.to_front(slot)
        return slot

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        self.values.set(self._slot_for(key, flags), value)

    def delete(self, key: bytes) -> None:
        if self.table.remove(key) is None:
            fail(errno.ENOENT, "no such key")

    def lookup_and_delete(self, key: bytes, flags: int) -> bytes:
        slot = self.table.index.get(key)
        if slot is None:
            fail(errno.ENOENT, "no such key")
        value = self.values.get(slot)
        self.table.remove(key)
        return value

    def value_view(self, key: bytes, cpu: int) -> memoryview | None:
        slot = self.table.index.get(key)
        if slot is None:
            return None
        return self.values.view(slot, cpu * self.slot_size if self.percpu else 0, self.value_size)

    def update_from_prog(self, key: bytes, value: bytes, flags: int, cpu: int) -> None:
        if not self.percpu:
            self.update(key, value, flags)
            return
        is_new = key not in self.table.index
        slot = self._slot_for(key, flags)
        if is_new:
            self.values.fill(slot, value, cpu * self.slot_size)
        else:
            self.values.set(slot, value, cpu * self.slot_size)


class LruHashMap(HashMap):
    """LRU_HASH and LRU_PERCPU_HASH: a full map evicts its least recently used element."""

    map_types = (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
    lru = True

    def _evict_if_full(self, flags: int) -> None:
        """The kernel pops a free element before looking at the key: on a full map that evicts
        (LRU_PERCPU_HASH only pops for a possible insert, i.e. not for BPF_EXIST)."""
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        table = self.table
        if len(table) >= self.max_entries and not (self.percpu and flags == UpdateFlag.EXIST):
            oldest = next(iter(table.index))
            table.remove(oldest)

    def _slot_for(self, key: bytes, flags: int) -> int:
        self._evict_if_full(flags)
        slot = super()._slot_for(key, flags)
        self._touch(key)
        return slot

    def _touch(self, key: bytes) -> None:
        cast("OrderedDict[bytes, int]", self.table.index).move_to_end(key)

    def value_view(self, key: bytes, cpu: int) -> memoryview | None:
        view = super().value_view(key, cpu)
        if view is not None:
            self._touch(key)
        return view


class HashOfMaps(MapOfMaps, HashTableMap):
    """HASH_OF_MAPS: values are maps fitting the inner map template (fd in, map id out)."""

    map_types = (MapType.HASH_OF_MAPS,)

    def init_storage(self) -> None:
        super().init_storage()
        self.replace_moves_to_front = not self.kernel.profile.has_behaviour(
            "fd_htab_update_in_place"
        )
        self.inner: list[BpfMap | None] = []
        """The stored map of each slot."""

    @classmethod
    def check_attr(cls, params: MapParams, kernel: Kernel) -> None:
        if params.value_size != 4:
            fail(errno.EINVAL, "a map of maps stores 4-byte fds")
        super().check_attr(params, kernel)

    def inner_map(self, key: bytes) -> BpfMap | None:
        """The map stored under `key` (what a program's lookup returns)."""
        slot = self.table.index.get(key)
        return None if slot is None else self.inner[slot]

    def lookup(self, key: bytes) -> bytes:
        inner = self.inner_map(key)
        if inner is None:
            fail(errno.ENOENT, "no such key")
        return inner.id.to_bytes(4, "little")

    def value_at(self, slot: int) -> bytes:
        inner = self.inner[slot]
        assert inner is not None
        return inner.id.to_bytes(4, "little")

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        new = self.template.admit(self.kernel, int.from_bytes(value, "little"))
        table = self.table
        slot = table.index.get(key)
        try:
            if flags > UpdateFlag.EXIST:
                fail(errno.EINVAL, f"unknown update flags {flags:#x}")
            if slot is not None and flags == UpdateFlag.NOEXIST:
                fail(errno.EEXIST, "key exists (BPF_NOEXIST)")
            if slot is None and flags == UpdateFlag.EXIST:
                fail(errno.ENOENT, "no such key (BPF_EXIST)")
            if slot is None and len(table) >= self.max_entries:
                fail(errno.E2BIG, f"map full ({self.max_entries} entries)")
        except OSError:
            new.put()
            raise
        if slot is None:
            slot = table.add(key)
            self.inner.extend([None] * (slot + 1 - len(self.inner)))
        elif self.replace_moves_to_front:
            table.to_front(slot)
        old, self.inner[slot] = self.inner[slot], new
        if old is not None:
            old.put()

    def delete(self, key: bytes) -> None:
        slot = self.table.remove(key)
        if slot is None:
            fail(errno.ENOENT, "no such key")
        old, self.inner[slot] = self.inner[slot], None
        if old is not None:
            old.put()

    def release(self) -> None:
        for inner in self.inner:
            if inner is not None:
                inner.put()
        self.inner = []
