"""RINGBUF maps: creation checks and the object holding the ring's memory.

Theory of operation
-------------------
Creation (ringbuf_map_alloc): flags other than BPF_F_NUMA_NODE, a key or value size, or a
max_entries that is not a power-of-two multiple of the page size: EINVAL. No element command works
on a ring buffer (ENOTSUPP for each).

Memory: a memfd laid out as the kernel's vmalloc area from the consumer page on: the consumer
page, the producer page, the data area and a second copy of it (the kernel maps the data pages
twice; the simulator keeps two copies, written together by the producer). So an mmap(2) of the
map fd at offset o maps memfd bytes [o, o + length) -- what the same mmap of a live ring buffer
shows. The simulated kernel maps the whole memfd read-write once for its producer
(`RingbufProducer`, kernelsim.maps.ringbuf_producer).

mmap (bpf_map_mmap, then ringbuf_map_mmap_kern), measured on 6.18:

| request                                                         | errno  |
|-----------------------------------------------------------------|--------|
| length 0, or an offset that is not page-aligned                 | EINVAL |
| PROT_EXEC (the anon inode's noexec mount)                       | EPERM  |
| not MAP_SHARED                                                  | EINVAL |
| PROT_WRITE on a frozen map                                      | EPERM  |
| PROT_WRITE other than exactly the consumer page (offset 0)      | EPERM  |
| beyond consumer + producer page + twice the data area           | EINVAL |

A writable mapping keeps FREEZE away (EBUSY) while it lives. Readiness (ringbuf_map_poll_kern):
the map fd polls readable while producer_pos != consumer_pos; `prepare_poll` recomputes that
before each SimBackend.poll, and a commit whose wakeup rule fires (BPF_RB_FORCE_WAKEUP, or the
consumer caught up with the record) makes the fd readable for waiters at once.

`ringbuf_output(kernel, map_or_fd, data, flags)` is bpf_ringbuf_output for tests (no program).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import weakref
from typing import TYPE_CHECKING, Final

from bpfsys.abi import MapFlag, MapType
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.maps.base import BpfMap, MapParams, check_size, round_up
from kernelsim.maps.ringbuf_producer import RingbufProducer

if TYPE_CHECKING:
    from bpfsys.backend import Mapping
    from kernelsim.kernel import Kernel

RINGBUF_MAP_SIZE: Final = 4408
"""The fixed part of ringbuf_map_mem_usage, measured through fdinfo memlock on 6.18 x86_64."""
META_PAGES: Final = 2
"""The consumer and producer pages before the data pages."""
RINGBUF_PGOFF: Final = 1
"""Pages of struct bpf_ringbuf before the consumer page (never mapped): record headers count
their pg_off from the start of the struct, so the first data page is page 3."""


class RingbufMap(BpfMap):
    """RINGBUF: a memfd of two meta pages and the data area twice, with its producer."""

    map_types = (MapType.RINGBUF,)

    def init_storage(self) -> None:
        super().init_storage()
        self.data_size = self.max_entries
        page = self.kernel.config.page_size
        self.memfd = os.memfd_create("bpf-ringbuf", os.MFD_CLOEXEC)
        self.area_size = META_PAGES * page + 2 * self.max_entries
        """Bytes a mapping may reach from offset 0 (consumer, producer, data twice)."""
        try:
            os.ftruncate(self.memfd, self.area_size)
            self._kernel_map = mmap.mmap(self.memfd, self.area_size, flags=mmap.MAP_SHARED)
        except OSError:
            os.close(self.memfd)
            raise
        area = memoryview(self._kernel_map)
        self.producer = RingbufProducer(
            area[:page],
            area[page : 2 * page],
            area[2 * page :],
            self.max_entries,
            page_size=page,
            data_pgoff=RINGBUF_PGOFF + META_PAGES,
        )
        area.release()
        self._writable_maps: list[weakref.ref[mmap.mmap]] = []

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

    # -- mmap (module docstring) -----------------------------------------------------------------
    def mmap(self, length: int, prot: int, flags: int, offset: int) -> Mapping:
        page = self.kernel.config.page_size
        if length <= 0 or offset < 0 or offset % page:
            fail(errno.EINVAL, f"bad mapping range {offset}+{length}")
        if prot & mmap.PROT_EXEC:
            fail(errno.EPERM, "bpf map fds live on a noexec mount")
        if flags & (mmap.MAP_SHARED | mmap.MAP_PRIVATE) != mmap.MAP_SHARED:
            fail(errno.EINVAL, "bpf maps are mapped MAP_SHARED only")
        writable = bool(prot & mmap.PROT_WRITE)
        if writable and self.frozen:
            fail(errno.EPERM, "a frozen map cannot be mapped writable")
        if writable and (offset or round_up(length, page) != page):
            fail(errno.EPERM, "only the consumer page may be mapped writable")
        if offset + round_up(length, page) > self.area_size:
            fail(errno.EINVAL, "mapping beyond the ring buffer")
        mapping = mmap.mmap(self.memfd, length, flags=mmap.MAP_SHARED, prot=prot, offset=offset)
        if writable:
            self._writable_maps.append(weakref.ref(mapping))
        return mapping

    @property
    def writable_mappings(self) -> int:
        alive = [ref for ref in self._writable_maps if (m := ref()) is not None and not m.closed]
        self._writable_maps = alive
        return len(alive)

    # -- the producer's side effects --------------------------------------------------------------
    def wake(self) -> None:
        """irq_work -> wake_up_all: waiters on the map fd see it readable."""
        self.kernel.fds.set_ready(self)

    def prepare_poll(self) -> None:
        """ringbuf_map_poll_kern: readable while data is available."""
        if self.producer.available():
            self.kernel.fds.set_ready(self)
        else:
            self.kernel.fds.clear_ready(self)

    def output(self, data: bytes, flags: int) -> int:
        """bpf_ringbuf_output: 0, -EINVAL (flags) or -EAGAIN (no room); wakes as it says."""
        result, wake = self.producer.output(data, flags)
        if wake:
            self.wake()
        return result

    def commit(self, position: int, data: bytes, *, discard: bool, flags: int) -> None:
        """bpf_ringbuf_submit / discard of the reservation at `position` holding `data`."""
        self.producer.fill(position, data)
        if self.producer.commit(position, discard=discard, flags=flags):
            self.wake()

    def release(self) -> None:
        self.producer.release()
        with contextlib.suppress(BufferError):  # a program run may still hold a view
            self._kernel_map.close()
        os.close(self.memfd)


def ringbuf_output(kernel: Kernel, target: RingbufMap | int, data: bytes, flags: int = 0) -> int:
    """bpf_ringbuf_output into `target` (a RINGBUF map or its fd) without a program: 0, -EINVAL
    for flags other than BPF_RB_NO_WAKEUP / BPF_RB_FORCE_WAKEUP, -EAGAIN when it does not fit."""
    ring = target if isinstance(target, RingbufMap) else kernel.fds.get(target, RingbufMap)
    return ring.output(bytes(data), flags)
