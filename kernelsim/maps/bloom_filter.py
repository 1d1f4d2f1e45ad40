"""BLOOM_FILTER maps: set membership with false positives, no keys.

Theory of operation
-------------------
Creation: value_size above KMALLOC_MAX_SIZE is E2BIG (before the privilege checks); then
key_size other than 0, value_size 0, max_entries 0, flags outside NUMA_NODE | ZERO_SEED | the
access flags, RDONLY_PROG with WRONLY_PROG, or map_extra beyond its low 4 bits: EINVAL.
map_extra's low 4 bits are the number of hash functions (0: 5). The bit array has
max_entries * hashes / 5 * 7 bits (about n*k/ln 2) rounded up to a power of two, at least 64;
past 2^31 bits it is 2^32 bits.

| command                  | answer                                                         |
|--------------------------|----------------------------------------------------------------|
| UPDATE_ELEM (push value) | sets the value's bits; flags other than BPF_ANY: EINVAL        |
| LOOKUP_ELEM (peek value) | 0 when every bit is set (maybe present), ENOENT otherwise      |
| DELETE_ELEM, GET_NEXT    | EOPNOTSUPP                                                     |

Each bit is jhash2 (jhash when value_size is not a multiple of 4) of the value with seed
hash_seed + i, masked by the bit array size. hash_seed is 0 with BPF_F_ZERO_SEED, otherwise drawn
from the kernel's seeded random source, so a zero-seed filter matches the live kernel bit for bit.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from bpfsys.abi import MapFlag, MapType, UpdateFlag
from kernelsim.errors import fail
from kernelsim.maps.base import (
    ACCESS_MASK,
    KMALLOC_MAX_SIZE,
    BpfMap,
    MapParams,
    check_size,
    disallowed_flags,
    flags_access_ok,
    round_up,
    roundup_pow_of_two,
)
from kernelsim.maps.jhash import jhash, jhash2

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

BLOOM_SIZE: Final = 312
"""sizeof(struct bpf_bloom_filter), measured through fdinfo memlock on 6.18 x86_64."""
CREATE_FLAGS: Final = MapFlag.NUMA_NODE | MapFlag.ZERO_SEED | ACCESS_MASK
DEFAULT_HASHES: Final = 5
U32_MAX: Final = 0xFFFFFFFF


def bitset_geometry(max_entries: int, hashes: int) -> tuple[int, int]:
    """(bitset bytes, bit mask) of a filter, as bloom_map_alloc computes them."""
    nr_bits = max_entries * hashes
    if nr_bits > U32_MAX or nr_bits // 5 * 7 > U32_MAX or nr_bits // 5 * 7 > 1 << 31:
        return round_up((U32_MAX + 7) // 8, 8), U32_MAX
    nr_bits = nr_bits // 5 * 7
    nr_bits = 64 if nr_bits <= 64 else roundup_pow_of_two(nr_bits)
    return round_up(nr_bits // 8, 8), nr_bits - 1


class BloomFilterMap(BpfMap):
    """BLOOM_FILTER: push values, peek for (probable) membership."""

    map_types = (MapType.BLOOM_FILTER,)

    def init_storage(self) -> None:
        super().init_storage()
        self.hashes = self.map_extra & 0xF or DEFAULT_HASHES
        nbytes, self.mask = bitset_geometry(self.max_entries, self.hashes)
        self.bits = bytearray(nbytes)
        self.seed = 0 if self.map_flags & MapFlag.ZERO_SEED else self.kernel.random.getrandbits(32)

    @classmethod
    def check_attr(cls, params: MapParams, kernel: Kernel) -> None:
        if params.value_size > KMALLOC_MAX_SIZE:
            fail(errno.E2BIG, "value_size above KMALLOC_MAX_SIZE")

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        flags = params.map_flags
        if (
            params.key_size
            or not params.value_size
            or not params.max_entries
            or disallowed_flags(flags, CREATE_FLAGS, kernel)
            or not flags_access_ok(flags)
            or params.map_extra & ~0xF
        ):
            fail(errno.EINVAL, "bad attributes for BLOOM_FILTER")
        hashes = params.map_extra & 0xF or DEFAULT_HASHES
        check_size(bitset_geometry(params.max_entries, hashes)[0], "bloom filter bits")

    def _bits(self, value: bytes) -> list[int]:
        hash_fn = jhash2 if len(value) % 4 == 0 else jhash
        return [(hash_fn(value, (self.seed + i) & U32_MAX) & self.mask) for i in range(self.hashes)]

    def push(self, value: bytes, flags: int) -> None:
        """bpf_map_push_elem: add `value`."""
        if flags != UpdateFlag.ANY:
            fail(errno.EINVAL, "bloom filters take BPF_ANY only")
        for bit in self._bits(value):
            self.bits[bit >> 3] |= 1 << (bit & 7)

    def peek(self, value: bytes) -> None:
        """bpf_map_peek_elem: returns when `value` may be present, ENOENT when it is not."""
        bits = self.bits
        if not all(bits[bit >> 3] >> (bit & 7) & 1 for bit in self._bits(value)):
            fail(errno.ENOENT, "not in the filter")

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        self.push(value, flags)

    def delete(self, key: bytes) -> None:
        fail(errno.EOPNOTSUPP, "bloom filters cannot delete")

    def get_next_key(self, key: bytes | None) -> bytes:
        fail(errno.EOPNOTSUPP, "bloom filters have no keys")

    def mem_usage(self) -> int:
        return BLOOM_SIZE + len(self.bits)
