"""The shared memory behind a perf ring: a memfd mapped by both the kernel side and the caller.

Theory of operation
-------------------
`RingBuffer` is the kernel's perf_buffer as memory: a memfd of (1 + nr_pages) pages, mapped
read-write once for the simulated kernel (the `PerfRing` writer works on that mapping) and
mapped again for each mmap(2) of the event with the protection asked for, as a Python
`mmap.mmap` of the same memfd, so the caller reads what the writer wrote and the writer reads
the caller's data_tail. The ring is writable (data_tail honoured) when its first mapping asked
for PROT_WRITE, overwrite mode otherwise, as rb_alloc decides from VM_WRITE.

The caller's mappings are tracked through weak references: a mapping that was closed (munmap)
or collected no longer counts, and the buffer learns it when it next asks `mapped()`, which is
before every operation whose outcome depends on it; nothing the caller can observe happens in
between. The events writing into the buffer (its owner and the ones redirected to it with
SET_OUTPUT) are `events`; `release()` frees the kernel side once none is left.
"""

from __future__ import annotations

import mmap
import os
import weakref
from typing import TYPE_CHECKING

from kernelsim.perf.ring import PerfRing

if TYPE_CHECKING:
    from kernelsim.perf.event import PerfEvent


class RingBuffer:
    """A perf ring's memory and writer, shared by the events that output into it."""

    def __init__(
        self, owner: PerfEvent, page_size: int, nr_pages: int, *, writable: bool, watermark: int
    ) -> None:
        self.owner = owner
        """The event whose mmap made the buffer (the only one that may map it)."""
        self.page_size = page_size
        self.nr_pages = nr_pages
        self.length = (1 + nr_pages) * page_size
        self._fd = os.memfd_create("perf_event_ring", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, self.length)
            self._kernel_map = mmap.mmap(self._fd, self.length, flags=mmap.MAP_SHARED)
        except OSError:
            os.close(self._fd)
            raise
        self._view = memoryview(self._kernel_map)
        self.ring = PerfRing(
            self._view, page_size, nr_pages, overwrite=not writable, watermark=watermark
        )
        self.ring.init_user_page()
        self._mappings: list[weakref.ref[mmap.mmap]] = []
        self.events: list[PerfEvent] = []

    def map(self, length: int, prot: int) -> mmap.mmap:
        """A new mapping of the buffer for the caller, of `length` bytes with `prot`."""
        mapping = mmap.mmap(self._fd, length, flags=mmap.MAP_SHARED, prot=prot)
        self._mappings.append(weakref.ref(mapping))
        return mapping

    def mapped(self) -> bool:
        """Whether any of the caller's mappings is still mapped (rb->mmap_count > 0)."""
        self._mappings = [ref for ref in self._mappings if _is_open(ref)]
        return bool(self._mappings)

    def fileno(self) -> int:
        """The ring's memfd (kernelsim exec gives a traced program a file of it to map)."""
        return self._fd

    @property
    def released(self) -> bool:
        return self._fd < 0

    def release(self) -> None:
        """Free the kernel side (the caller's mappings stay valid on their own)."""
        if self._fd < 0:
            return
        self._view.release()
        self._kernel_map.close()
        os.close(self._fd)
        self._fd = -1


def _is_open(ref: weakref.ref[mmap.mmap]) -> bool:
    mapping = ref()
    return mapping is not None and not mapping.closed
