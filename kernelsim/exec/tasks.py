"""The traced tasks as the supervisor reaches them: pidfds, and copies of their files.

Theory of operation
-------------------
A notification names the calling thread. `Tasks.getfd(tid, fd)` is pidfd_getfd(2) on the
thread's process (its thread-group leader's pidfd, opened once and kept, and reopened once when
it names a process that is gone, in case the pid was used again): a new fd of this process for
the same open file, as the kernel's own fdget would see it; EBADF when the caller has no such
fd. `Tasks.tgid(tid)` reads the process id of a thread from /proc.
"""

from __future__ import annotations

import ctypes
import errno
import os

from kernelsim.errors import fail
from kernelsim.exec.seccomp import Arch


class Tasks:
    """pidfds of the traced processes, by thread id."""

    def __init__(self, arch: Arch) -> None:
        self._arch = arch
        self._pidfds: dict[int, int] = {}
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long

    def tgid(self, tid: int) -> int:
        """The process (thread group) of thread `tid`."""
        try:
            with open(f"/proc/{tid}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"Tgid:"):
                        return int(line.split()[1])
        except OSError:
            pass
        fail(errno.ESRCH, f"task {tid} is gone")

    def pidfd(self, tid: int, fresh: bool = False) -> int:
        """A pidfd of `tid`'s process (`fresh`: reopened, as for a pid used again)."""
        tgid = self.tgid(tid)
        pidfd = self._pidfds.pop(tgid, None)
        if pidfd is not None and fresh:
            os.close(pidfd)
            pidfd = None
        if pidfd is None:
            pidfd = os.pidfd_open(tgid)
        self._pidfds[tgid] = pidfd
        return pidfd

    def getfd(self, tid: int, fd: int) -> int:
        """pidfd_getfd: a new fd of this process for the file behind `fd` in `tid`'s process
        (close it); EBADF when there is no such fd."""
        if fd < 0:
            fail(errno.EBADF, f"fd {fd}")
        code = errno.ESRCH
        for fresh in (False, True):  # a kept pidfd may be of an earlier process with this pid
            got = self._syscall(
                ctypes.c_long(self._arch.pidfd_getfd),
                ctypes.c_long(self.pidfd(tid, fresh)),
                ctypes.c_long(fd),
                ctypes.c_long(0),
            )
            if got >= 0:
                return int(got)
            code = ctypes.get_errno()
            if code != errno.ESRCH:
                break
        fail(code, f"pidfd_getfd({tid}, {fd}): {os.strerror(code)}")

    def close(self) -> None:
        for pidfd in self._pidfds.values():
            os.close(pidfd)
        self._pidfds.clear()
