"""The traced tasks as the supervisor reaches them: pidfds, and copies of their files.

Theory of operation
-------------------
A notification names the calling thread. `Tasks.getfd(tid, fd)` is pidfd_getfd(2) on the
thread's process (its thread-group leader's pidfd, opened once and kept): a new fd of this
process for the same open file, as the kernel's own fdget would see it; EBADF when the caller
has no such fd. `Tasks.tgid(tid)` reads the process id of a thread from /proc.
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
        self._tgids: dict[int, int] = {}
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long

    def tgid(self, tid: int) -> int:
        """The process (thread group) of thread `tid`."""
        found = self._tgids.get(tid)
        if found is None:
            try:
                with open(f"/proc/{tid}/status", "rb") as status:
                    for line in status:
                        if line.startswith(b"Tgid:"):
                            found = int(line.split()[1])
                            break
            except OSError:
                fail(errno.ESRCH, f"task {tid} is gone")
            if found is None:
                fail(errno.ESRCH, f"task {tid} has no Tgid")
            self._tgids[tid] = found
        return found

    def pidfd(self, tid: int) -> int:
        tgid = self.tgid(tid)
        pidfd = self._pidfds.get(tgid)
        if pidfd is None:
            pidfd = self._pidfds[tgid] = os.pidfd_open(tgid)
        return pidfd

    def getfd(self, tid: int, fd: int) -> int:
        """pidfd_getfd: a new fd of this process for the file behind `fd` in `tid`'s process
        (close it); EBADF when there is no such fd."""
        if fd < 0:
            fail(errno.EBADF, f"fd {fd}")
        got = self._syscall(
            ctypes.c_long(self._arch.pidfd_getfd),
            ctypes.c_long(self.pidfd(tid)),
            ctypes.c_long(fd),
            ctypes.c_long(0),
        )
        if got < 0:
            code = ctypes.get_errno()
            fail(code, f"pidfd_getfd({tid}, {fd}): {os.strerror(code)}")
        return int(got)

    def forget(self, tgid: int) -> None:
        """Drop what is kept for a process that exited."""
        pidfd = self._pidfds.pop(tgid, None)
        if pidfd is not None:
            os.close(pidfd)
        for tid in [t for t, g in self._tgids.items() if g == tgid]:
            del self._tgids[tid]

    def close(self) -> None:
        for tgid in list(self._pidfds):
            self.forget(tgid)
