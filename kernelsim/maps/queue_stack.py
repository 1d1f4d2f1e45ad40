"""QUEUE and STACK maps: values without keys.

Theory of operation
-------------------
Creation: max_entries 0, key_size other than 0, value_size 0, flags outside NUMA_NODE | the
access flags, or RDONLY_PROG with WRONLY_PROG: EINVAL; value_size above KMALLOC_MAX_SIZE: E2BIG.

The syscall side passes a NULL key (a non-NULL key is EINVAL before the map sees it):

| command                 | queue (FIFO)           | stack (LIFO)           | empty  |
|-------------------------|------------------------|------------------------|--------|
| UPDATE_ELEM (push)      | append                 | append                 |        |
| LOOKUP_ELEM (peek)      | the oldest             | the newest             | ENOENT |
| LOOKUP_AND_DELETE (pop) | remove the oldest      | remove the newest      | ENOENT |
| DELETE_ELEM, GET_NEXT   | EINVAL                 | EINVAL                 |        |

A push on a full map is E2BIG, unless its flags are BPF_EXIST: then the oldest element is
overwritten (for both kinds). Push flags other than BPF_ANY and BPF_EXIST are EINVAL. Programs use
the same operations through bpf_map_push_elem / pop / peek (`push`, `pop`, `peek`).
"""

from __future__ import annotations

import errno
from collections import deque
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
)

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

QUEUE_STACK_SIZE: Final = 312
"""sizeof(struct bpf_queue_stack), measured through fdinfo memlock on 6.18 x86_64."""
CREATE_FLAGS: Final = MapFlag.NUMA_NODE | ACCESS_MASK


class QueueStackMap(BpfMap):
    """QUEUE (pop the oldest) and STACK (pop the newest)."""

    map_types = (MapType.QUEUE, MapType.STACK)

    def init_storage(self) -> None:
        super().init_storage()
        self.values: deque[bytes] = deque()
        """Oldest first."""
        self.lifo = self.map_type == MapType.STACK

    @classmethod
    def check_attr(cls, params: MapParams, kernel: Kernel) -> None:
        flags = params.map_flags
        if (
            not params.max_entries
            or params.key_size
            or not params.value_size
            or disallowed_flags(flags, CREATE_FLAGS, kernel)
            or not flags_access_ok(flags)
        ):
            fail(errno.EINVAL, f"bad attributes for {params.map_type.name}")
        if params.value_size > KMALLOC_MAX_SIZE:
            fail(errno.E2BIG, "value_size above KMALLOC_MAX_SIZE")

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        check_size((params.max_entries + 1) * params.value_size, "queue/stack elements")

    def push(self, value: bytes, flags: int) -> None:
        """bpf_map_push_elem."""
        if flags & UpdateFlag.NOEXIST or flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"bad push flags {flags:#x}")
        if len(self.values) >= self.max_entries:
            if flags != UpdateFlag.EXIST:
                fail(errno.E2BIG, "full (push with BPF_EXIST to overwrite the oldest)")
            self.values.popleft()
        self.values.append(bytes(value))

    def peek(self) -> bytes:
        """bpf_map_peek_elem."""
        if not self.values:
            fail(errno.ENOENT, "empty")
        return self.values[-1] if self.lifo else self.values[0]

    def pop(self) -> bytes:
        """bpf_map_pop_elem."""
        if not self.values:
            fail(errno.ENOENT, "empty")
        return self.values.pop() if self.lifo else self.values.popleft()

    def lookup(self, key: bytes) -> bytes:
        return self.peek()

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        self.push(value, flags)

    def lookup_and_delete(self, key: bytes, flags: int) -> bytes:
        return self.pop()

    def delete(self, key: bytes) -> None:
        fail(errno.EINVAL, "queue/stack elements are popped, not deleted")

    def get_next_key(self, key: bytes | None) -> bytes:
        fail(errno.EINVAL, "queue/stack maps have no keys")

    def mem_usage(self) -> int:
        return QUEUE_STACK_SIZE + (self.max_entries + 1) * self.value_size
