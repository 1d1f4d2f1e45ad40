"""XSKMAP: AF_XDP sockets of this process for bpf_redirect_map.

Theory of operation
-------------------
Creation (xsk_map_alloc, after the CAP_NET_ADMIN check): max_entries 0, key_size or value_size
other than 4, or flags outside NUMA_NODE | RDONLY | WRONLY: EINVAL.

Update, check by check (xsk_map_update_elem): flags above BPF_EXIST: EINVAL; index >=
max_entries: E2BIG; the fd (a signed 32-bit number): not open EBADF, not a socket ENOTSOCK, not
an AF_XDP socket EOPNOTSUPP (bound or not); the socket already in that slot: 0; BPF_NOEXIST on a
used slot: EEXIST; BPF_EXIST on an empty one: ENOENT. Lookup from user space is always
EOPNOTSUPP; delete empties a slot (0 also when empty; EINVAL out of range); GET_NEXT_KEY walks
indexes as an array does. memlock is sizeof(struct xsk_map) + 8 per slot + 32 per stored socket.
"""

from __future__ import annotations

import errno
from typing import Any, Final

from bpfsys.abi import MapFlag, MapType, UpdateFlag
from kernelsim.errors import fail
from kernelsim.kernel import Kernel
from kernelsim.maps.base import BpfMap, MapParams, check_size, index_after, key_index
from kernelsim.maps.host_files import AF_XDP, HostSocket, HostSockets, socket_facts

XSK_MAP_SIZE: Final = 304
"""sizeof(struct xsk_map), measured through fdinfo memlock on 6.18 x86_64."""
XSK_MAP_NODE_SIZE: Final = 32
"""sizeof(struct xsk_map_node): one per stored socket, counted in memlock."""
CREATE_FLAGS: Final = MapFlag.NUMA_NODE | MapFlag.RDONLY | MapFlag.WRONLY


class XskMap(BpfMap):
    """XSKMAP: index -> AF_XDP socket."""

    map_types = (MapType.XSKMAP,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socks: dict[int, HostSocket] = {}

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        if (
            not params.max_entries
            or params.key_size != 4
            or params.value_size != 4
            or params.map_flags & ~int(CREATE_FLAGS)
        ):
            fail(errno.EINVAL, "bad attributes for XSKMAP")
        check_size(8 * params.max_entries, "socket table")

    def lookup(self, key: bytes) -> bytes:
        fail(errno.EOPNOTSUPP, "XSKMAP has no syscall lookup")

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        index = key_index(key)
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        if index >= self.max_entries:
            fail(errno.E2BIG, f"index {index} out of range")
        fd = int.from_bytes(value, "little", signed=True)
        facts = socket_facts(fd)
        if facts.family != AF_XDP:
            fail(errno.EOPNOTSUPP, f"fd {fd} is not an AF_XDP socket")
        old = self.socks.get(index)
        if old is not None and old.facts.ino == facts.ino:
            return
        if old is not None and flags == UpdateFlag.NOEXIST:
            fail(errno.EEXIST, "slot in use (BPF_NOEXIST)")
        if old is None and flags == UpdateFlag.EXIST:
            fail(errno.ENOENT, "empty slot (BPF_EXIST)")
        self.socks[index] = self.kernel.subsystem(HostSockets).get(facts)
        if old is not None:
            old.put()

    def delete(self, key: bytes) -> None:
        index = key_index(key)
        if index >= self.max_entries:
            fail(errno.EINVAL, f"index {index} out of range")
        old = self.socks.pop(index, None)
        if old is not None:
            old.put()

    def get_next_key(self, key: bytes | None) -> bytes:
        return index_after(key, self.max_entries)

    def mem_usage(self) -> int:
        return XSK_MAP_SIZE + 8 * self.max_entries + XSK_MAP_NODE_SIZE * len(self.socks)

    def release(self) -> None:
        for sock in self.socks.values():
            sock.put()
        self.socks = {}
