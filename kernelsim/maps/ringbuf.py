"""RINGBUF maps: creation checks and the object holding the ring's memory.

Theory of operation
-------------------
Creation (ringbuf_map_alloc): flags other than BPF_F_NUMA_NODE, a key or value size, or a
max_entries that is not a power-of-two multiple of the page size: EINVAL. No element command works
on a ring buffer (ENOTSUPP for each). The ring's memory is a memfd of two pages (the consumer and
the producer page) followed by max_entries data bytes, ready for a producer and for mmap; neither
the producer side (bpf_ringbuf_output/reserve) nor mapping the fd is modelled here yet (mapping
is ENOTSUPP until it is, see docs/fidelity/maps.md).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Final

from bpfsys.abi import MapFlag, MapType
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.maps.base import NUMA_NO_NODE, BpfMap, MapParams, check_size
from kernelsim.objects import ObjectRegistry

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

RINGBUF_MAP_SIZE: Final = 4408
"""The fixed part of ringbuf_map_mem_usage, measured through fdinfo memlock on 6.18 x86_64."""
META_PAGES: Final = 2
"""The consumer and producer pages before the data pages."""


class RingbufMap(BpfMap):
    """RINGBUF: a memfd of max_entries data bytes after two meta pages."""

    map_types = (MapType.RINGBUF,)

    def __init__(
        self,
        kernel: Kernel,
        registry: ObjectRegistry,
        map_type: MapType,
        key_size: int,
        value_size: int,
        max_entries: int,
        map_flags: int,
        name: bytes,
        *,
        numa_node: int = NUMA_NO_NODE,
        map_extra: int = 0,
    ) -> None:
        super().__init__(
            kernel,
            registry,
            map_type,
            key_size,
            value_size,
            max_entries,
            map_flags,
            name,
            numa_node=numa_node,
            map_extra=map_extra,
        )
        self.data_size = max_entries
        self.memfd = os.memfd_create("bpf-ringbuf", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, META_PAGES * kernel.config.page_size + max_entries)

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        size = params.max_entries
        if params.map_flags & ~int(MapFlag.NUMA_NODE):
            fail(errno.EINVAL, "ring buffers take BPF_F_NUMA_NODE only")
        if (
            params.key_size
            or params.value_size
            or size <= 0
            or size & (size - 1)
            or size % kernel.config.page_size
        ):
            fail(errno.EINVAL, "max_entries must be a power-of-two multiple of the page size")
        check_size(size, "ring buffer")

    def lookup(self, key: bytes) -> bytes:
        fail(ENOTSUPP, "ring buffers have no elements")

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        fail(ENOTSUPP, "ring buffers have no elements")

    def delete(self, key: bytes) -> None:
        fail(ENOTSUPP, "ring buffers have no elements")

    def get_next_key(self, key: bytes | None) -> bytes:
        fail(ENOTSUPP, "ring buffers have no elements")

    def mem_usage(self) -> int:
        page = self.kernel.config.page_size
        data_pages = self.data_size // page
        return (
            RINGBUF_MAP_SIZE + (META_PAGES + data_pages) * page + (META_PAGES + 2 * data_pages) * 8
        )

    def release(self) -> None:
        os.close(self.memfd)
