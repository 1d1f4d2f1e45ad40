"""`SimBackend`: the bpfsys `Backend` protocol served by a simulated `Kernel`.

The same raw ABI as `LiveBackend`: attr images whose pointers are addresses in this process,
ioctl numbers, mmap arguments. Each call is handed to the kernel subsystem that owns it; every
failure is an `OSError` with the kernel's errno, as from the live kernel.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Sequence

from bpfsys.backend import Mapping, WritableBuffer, poll_readable
from kernelsim.dispatch import bpf_syscall, bytes_view
from kernelsim.errors import fail
from kernelsim.kernel import Kernel


class SimBackend:
    """A Backend over `kernel` (a new default `Kernel()` when none is given)."""

    def __init__(self, kernel: Kernel | None = None) -> None:
        self.kernel = Kernel() if kernel is None else kernel

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        return bpf_syscall(self.kernel, cmd, bytes_view(attr), size)

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        from kernelsim.perf.syscall import perf_event_open

        return perf_event_open(self.kernel, bytes_view(attr), pid, cpu, group_fd, flags)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        obj = self.kernel.fds.lookup(fd)
        if obj is None:
            fail(errno.EBADF, f"fd {fd} is not an open simulated fd")
        return obj.ioctl(fd, request, arg)

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping:
        obj = self.kernel.fds.lookup(fd)
        if obj is None:
            fail(errno.EBADF, f"fd {fd} is not an open simulated fd")
        mode = self.kernel.fds.mode(fd)
        if mode == os.O_WRONLY or (
            mode == os.O_RDONLY and flags & mmap.MAP_SHARED and prot & mmap.PROT_WRITE
        ):
            fail(errno.EACCES, f"fd {fd} was not opened for this mapping's access")
        return obj.mmap(length, prot, flags, offset)

    def munmap(self, mapping: Mapping) -> None:
        try:
            mapping.close()
        except BufferError as exc:
            raise OSError(errno.EBUSY, f"mapping still in use: {exc}") from None

    def close(self, fd: int) -> None:
        self.kernel.fds.close(fd)

    def read_file(self, path: str) -> bytes:
        return self.kernel.vfs.read(path)

    def write_file(self, path: str, data: bytes) -> None:
        self.kernel.vfs.write(path, data)

    def poll(self, fds: Sequence[int], timeout_ms: int) -> list[int]:
        objects = [self.kernel.fds.lookup(fd) for fd in fds]
        for fd, obj in zip(fds, objects, strict=True):
            if obj is None:
                fail(errno.EBADF, f"fd {fd} is not an open simulated fd")
        for obj in objects:
            assert obj is not None
            obj.prepare_poll()
        return poll_readable(fds, timeout_ms)
