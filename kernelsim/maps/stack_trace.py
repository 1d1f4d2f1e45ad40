"""STACK_TRACE maps: call stacks recorded by bpf_get_stackid, read and deleted from user space.

Theory of operation
-------------------
Creation (stack_map_alloc; everything is checked after the CAP_BPF check): flags outside
NUMA_NODE | RDONLY | WRONLY | STACK_BUILD_ID, max_entries 0, key_size other than 4, or a
value_size below 8 or not a multiple of 8: EINVAL; with BPF_F_STACK_BUILD_ID the value_size must
be a multiple of sizeof(struct bpf_stack_build_id) (32); more frames than perf_event_max_stack
(127) per value: EINVAL; max_entries above 2^31: E2BIG; more memory than the machine has: ENOMEM.

The map has n_buckets = roundup_pow_of_two(max_entries) stack ids; each holds one stack or none.

| operation          | id < n_buckets, stack there    | id < n_buckets, empty | id >= n_buckets |
|--------------------|--------------------------------|-----------------------|-----------------|
| lookup             | the frames, zero-padded        | ENOENT                | ENOENT          |
| lookup_and_delete  | the same, and empties the id   | ENOENT                | ENOENT          |
|                    | (6.18; ENOTSUPP before)        |                       |                 |
| delete             | empties the id                 | ENOENT                | E2BIG           |
| update             | EINVAL                         | EINVAL                | EINVAL          |
| get_next_key       | the next id holding a stack (from 0 when the key is NULL, empty or out of  |
|                    | range); ENOENT after the last                                               |

`get_stackid` is the map's side of bpf_get_stackid: the frames' jhash2 (seed 0) picks the id;
an id holding another stack is EEXIST unless BPF_F_REUSE_STACKID replaces it; BPF_F_FAST_STACK_CMP
trusts a matching hash; storing needs a free element of max_entries (ENOMEM when all hold stacks,
even to replace one).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any, Final

from bpfsys.abi import MapFlag, MapType
from kernelsim.errors import fail
from kernelsim.kernel import Kernel
from kernelsim.maps.base import BpfMap, MapParams, check_size, key_index, roundup_pow_of_two
from kernelsim.maps.jhash import jhash2

PERF_EVENT_MAX_STACK: Final = 127
"""The default of sysctl kernel.perf_event_max_stack."""
BUILD_ID_SIZE: Final = 32
"""sizeof(struct bpf_stack_build_id)."""
STACK_MAP_SIZE: Final = 320
"""sizeof(struct bpf_stack_map), measured through fdinfo memlock on 6.18 x86_64."""
BUCKET_SIZE: Final = 16
"""sizeof(struct stack_map_bucket) before its frames."""
CREATE_FLAGS: Final = MapFlag.NUMA_NODE | MapFlag.RDONLY | MapFlag.WRONLY | MapFlag.STACK_BUILD_ID
SKIP_FIELD_MASK: Final = 0xFF
USER_STACK: Final = 1 << 8
FAST_STACK_CMP: Final = 1 << 9
REUSE_STACKID: Final = 1 << 10


class StackTraceMap(BpfMap):
    """STACK_TRACE: stack id -> (hash, frames)."""

    map_types = (MapType.STACK_TRACE,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_buckets = roundup_pow_of_two(self.max_entries)
        self.stacks: dict[int, tuple[int, bytes]] = {}
        """stack id -> (jhash2 of the frames, the frames' bytes)."""

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        value_size = params.value_size
        if (
            params.map_flags & ~int(CREATE_FLAGS)
            or not params.max_entries
            or params.key_size != 4
            or value_size < 8
            or value_size % 8
        ):
            fail(errno.EINVAL, "bad attributes for STACK_TRACE")
        frame = BUILD_ID_SIZE if params.map_flags & MapFlag.STACK_BUILD_ID else 8
        if value_size % frame or value_size // frame > PERF_EVENT_MAX_STACK:
            fail(errno.EINVAL, f"value_size {value_size} is not 1..127 frames of {frame} bytes")
        if params.max_entries > 1 << 31:
            fail(errno.E2BIG, "more than 2^31 stack ids")
        n_buckets = roundup_pow_of_two(params.max_entries)
        check_size(STACK_MAP_SIZE + 8 * n_buckets, "stack id table")
        check_size(params.max_entries * (BUCKET_SIZE + value_size), "preallocated stacks")

    def lookup(self, key: bytes) -> bytes:
        stack = self.stacks.get(key_index(key))
        if stack is None:
            fail(errno.ENOENT, "no stack under this id")
        return stack[1].ljust(self.value_size, b"\0")

    def lookup_and_delete(self, key: bytes, flags: int) -> bytes:
        value = self.lookup(key)
        del self.stacks[key_index(key)]
        return value

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        fail(errno.EINVAL, "stacks are only stored by bpf_get_stackid")

    def delete(self, key: bytes) -> None:
        stack_id = key_index(key)
        if stack_id >= self.n_buckets:
            fail(errno.E2BIG, f"stack id {stack_id} out of range")
        if self.stacks.pop(stack_id, None) is None:
            fail(errno.ENOENT, "no stack under this id")

    def get_next_key(self, key: bytes | None) -> bytes:
        start = 0
        if key is not None and key_index(key) in self.stacks:
            start = key_index(key) + 1
        later = [stack_id for stack_id in self.stacks if stack_id >= start]
        if not later:
            fail(errno.ENOENT, "no stack id after the given one")
        return min(later).to_bytes(4, "little")

    def get_stackid(self, ips: Sequence[int], flags: int) -> int:
        """bpf_get_stackid with the call chain `ips` (innermost first): the stack id, or a
        negative errno."""
        if flags & ~(SKIP_FIELD_MASK | USER_STACK | FAST_STACK_CMP | REUSE_STACKID):
            return -errno.EINVAL
        skip = flags & SKIP_FIELD_MASK
        if len(ips) <= skip:
            return -errno.EFAULT
        depth = min(self.value_size // 8 + skip, PERF_EVENT_MAX_STACK)
        frames = b"".join(ip.to_bytes(8, "little") for ip in ips[skip:depth])
        digest = jhash2(frames, 0)
        stack_id = digest & (self.n_buckets - 1)
        stored = self.stacks.get(stack_id)
        if (
            stored is not None
            and stored[0] == digest
            and (flags & FAST_STACK_CMP or stored[1] == frames)
        ):
            return stack_id
        if stored is not None and not flags & REUSE_STACKID:
            return -errno.EEXIST
        if len(self.stacks) >= self.max_entries:  # the free list is empty
            return -errno.ENOMEM
        self.stacks[stack_id] = (digest, frames)
        return stack_id

    def mem_usage(self) -> int:
        return (
            STACK_MAP_SIZE + 8 * self.n_buckets + self.max_entries * (BUCKET_SIZE + self.value_size)
        )
