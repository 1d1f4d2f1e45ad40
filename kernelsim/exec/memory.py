"""The traced program's memory, as the simulated kernel's copy_from_user / copy_to_user see it.

Theory of operation
-------------------
`RemoteMemory` is the `UserMemory` of whichever thread is being served (`pid`, set per call).
Reads go through /proc/<pid>/mem with pread (one system call, a fifth of what
process_vm_readv costs on the machine measured; the fd is opened once per thread and kept, a
few at most, and reopened once when a read fails, in case the pid now names another task);
writes through process_vm_writev, which, like the kernel's copy_to_user, refuses a
read-only page (a write through /proc/<pid>/mem would force it). Every failure is EFAULT: an
unmapped range, a short read, a task that is gone.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from typing import Final

from kernelsim.errors import fail
from kernelsim.usermem import ProcessMemory

_ADDR_END: Final = 1 << 64
OPEN_TASKS: Final = 16
"""/proc/<pid>/mem fds kept open (least recently used closed first)."""


class RemoteMemory(ProcessMemory):
    """The memory of task `pid` (module docstring)."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self._mem: OrderedDict[int, int] = OrderedDict()

    def _mem_fd(self, fresh: bool = False) -> int:
        """This task's /proc/<pid>/mem fd (`fresh`: reopened, as for a pid used again)."""
        pid = self.pid
        fd = self._mem.pop(pid, None)
        if fd is not None and fresh:
            os.close(fd)
            fd = None
        if fd is None:
            try:
                fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fail(errno.EFAULT, f"task {pid} is gone")
            if len(self._mem) >= OPEN_TASKS:
                os.close(self._mem.popitem(last=False)[1])
        self._mem[pid] = fd
        return fd

    def read(self, addr: int, size: int) -> bytes:
        """copy_from_user: `size` bytes at `addr`; EFAULT unless all of them are readable."""
        if size <= 0 or addr < 0 or addr + size > _ADDR_END:
            if size == 0:
                return b""
            fail(errno.EFAULT, f"bad user range {addr:#x}+{size}")
        for fresh in (False, True):  # a kept fd may be of an earlier task with this pid
            try:
                data = os.pread(self._mem_fd(fresh), size, addr)
            except (OSError, OverflowError):
                data = b""
            if len(data) == size:
                return data
        fail(errno.EFAULT, f"cannot read {size} bytes at {addr:#x}")

    def close(self) -> None:
        for fd in self._mem.values():
            os.close(fd)
        self._mem.clear()
