"""Answers to a traced program's intercepted system calls, from a simulated kernel.

Theory of operation
-------------------
`SyscallServer.answer(notification)` turns one intercepted call into an `Answer`; the session
applies it through the listener and then tells the server whether it reached the program
(`delivered`) or not (`undelivered`), so that what the answer carried is committed or undone.
Which handler answers is data (`HANDLERS`, by system call name). Every handler first sets the
caller: the kernel's user memory and fd table then act on the calling thread's process.

* bpf(cmd, uattr, size): size beyond a page is E2BIG (the kernel's first rule, before any
  copy); else `size` bytes of the attr are read from the caller (EFAULT when they cannot be)
  and the backend runs the call on that image; the bytes it changed in the image are written
  back to the caller, and pointed-to memory is read and written in the caller directly
  (`kernel.memory` is the caller's). A new fd is installed with the reply.
* perf_event_open(attr, pid, cpu, group_fd, flags): the attr image is the caller's bytes up to
  the size its header gives (as far as they are readable: the simulator then meets the EFAULT,
  or the E2BIG with the size written back, where the kernel does).
* ioctl and mmap on a simulated fd: the backend's; other fds continue. A mapping the simulator
  allows continues too (the program maps the memfd itself), and the simulator's own mapping of
  the same pages stands for it until the program's file is gone. A perf event's ring is
  created at its first mmap: the program's fd is switched to a file of the ring's memfd first.
* epoll_ctl on a simulated fd: `kernelsim.exec.readiness`; other fds continue.
* open, openat, statfs: `kernelsim.exec.overlay`.

Bad input gets the kernel's errno; a failure of the simulator itself (a bug) is reported on
stderr and answered with ENOSYS, never left unanswered.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import traceback
from collections.abc import Callable
from typing import Final

import attrs

from bpfsys.backend import Backend, Mapping
from kernelsim.errors import fail
from kernelsim.exec import overlay
from kernelsim.exec.listener import Notification
from kernelsim.exec.memory import RemoteMemory
from kernelsim.exec.remote_fds import PendingFile, RemoteFdTable
from kernelsim.exec.seccomp import EPOLL_CTL_DEL, Arch
from kernelsim.exec.tasks import Tasks
from kernelsim.kernel import Kernel
from kernelsim.perf.event import PerfEvent

PERF_ATTR_SIZE_VER0: Final = 64
EPOLL_NAME: Final = "anon_inode:[eventpoll]"


@attrs.frozen
class PlainFile:
    """A file of ours (no kernel object behind it) to put in the caller as the reply."""

    srcfd: int
    cloexec: bool


@attrs.frozen
class Answer:
    """How one notification is answered: `error`, `new_file`, `plain_file`, `proceed` or, when
    none of them, `value`."""

    value: int = 0
    error: int = 0
    proceed: bool = False
    """Let the kernel run the call itself (SECCOMP_USER_NOTIF_FLAG_CONTINUE)."""
    new_file: PendingFile | None = None
    """Reply with the fd of this file, installed in the caller."""
    plain_file: PlainFile | None = None
    """Reply with a new fd in the caller for this file; the session closes our fd of it."""
    replace: tuple[int, PendingFile] | None = None
    """Before continuing: make the caller's fd (first) refer to this file."""
    mapping: tuple[int, Mapping] | None = None
    """The simulator's mapping standing for the caller's mmap of the fd (first) once the
    answer is delivered."""


CONTINUE: Final = Answer(proceed=True)


def _s32(value: int) -> int:
    return ctypes.c_int32(value & 0xFFFFFFFF).value


def _changed_span(before: bytes, after: bytes | bytearray) -> tuple[int, int] | None:
    """[start, end) of the bytes that differ between two images of one length."""
    if before == after:
        return None
    diff = int.from_bytes(before, "little") ^ int.from_bytes(after, "little")
    start = ((diff & -diff).bit_length() - 1) // 8
    end = (diff.bit_length() + 7) // 8
    return start, end


class SyscallServer:
    """Answers intercepted calls with `backend` (a SimBackend over `kernel`, or a wrapper)."""

    def __init__(
        self, kernel: Kernel, backend: Backend, fds: RemoteFdTable, tasks: Tasks, arch: Arch
    ) -> None:
        self.kernel = kernel
        self.backend = backend
        self.fds = fds
        self.tasks = tasks
        self.memory = RemoteMemory(kernel.config.pid)
        kernel.memory = self.memory
        kernel.fds = fds
        names = arch.intercepted()
        names[arch.ioctl] = "ioctl"
        names[arch.mmap] = "mmap"
        self._handlers: dict[int, Callable[[SyscallServer, Notification], Answer]] = {
            nr: HANDLERS[name] for nr, name in names.items()
        }
        self._open_nr = arch.open
        self.internal_errors = 0
        """Calls answered ENOSYS because the simulator failed (a bug; reported on stderr)."""

    # -- the entry point -------------------------------------------------------------------------
    def answer(self, notification: Notification) -> Answer:
        """The answer to one notification (module docstring)."""
        handler = self._handlers.get(notification.nr)
        if handler is None:
            return CONTINUE
        self.memory.pid = notification.pid
        self.fds.serving(notification.pid)
        try:
            return handler(self, notification)
        except OSError as exc:
            self.fds.drop_parked()
            return Answer(error=exc.errno or errno.EINVAL)
        except Exception:  # a simulator bug must not leave the program hanging
            self.fds.drop_parked()
            self.internal_errors += 1
            print("kernelsim exec: internal error, answered ENOSYS:", file=sys.stderr)
            traceback.print_exc()
            return Answer(error=errno.ENOSYS)

    def delivered(self, answer: Answer) -> None:
        """The answer reached the program: its new file is the program's, the simulator's
        mapping stands for the program's."""
        if answer.new_file is not None:
            self.fds.installed(answer.new_file)
        if answer.mapping is not None:
            fd, mapping = answer.mapping
            try:
                self.fds.keep_mapping(fd, mapping)
            except OSError:  # the program closed the fd at once (another thread)
                mapping.close()

    def undelivered(self, answer: Answer) -> None:
        """The program went away before the answer: undo what it carried."""
        if answer.new_file is not None:
            self.fds.abandoned(answer.new_file)
        if answer.mapping is not None:
            answer.mapping[1].close()

    # -- helpers ---------------------------------------------------------------------------------
    def _result(self, result: int) -> Answer:
        """A handler's result: a new fd's placeholder becomes the file to install."""
        pending = self.fds.take(result)
        self.fds.drop_parked()
        return Answer(value=result) if pending is None else Answer(new_file=pending)

    def _run(self, addr: int, image: bytearray, call: Callable[[], int]) -> int:
        """`call` on the caller's attr `image` read from `addr`; what it changed in the image
        goes back to the caller, whether it succeeded or failed (as the kernel's writes to the
        attr precede its errors: a failed write then is the kernel's ignored put_user)."""
        before = bytes(image)
        try:
            result = call()
        except OSError:
            with contextlib.suppress(OSError):
                self._write_back(addr, before, image)
            raise
        self._write_back(addr, before, image)
        return result

    def _write_back(self, addr: int, before: bytes, after: bytearray) -> None:
        span = _changed_span(before, after)
        if span is not None:
            start, end = span
            self.memory.write(addr + start, bytes(after[start:end]))

    def _path(self, addr: int) -> str | None:
        """The absolute path at `addr` in the caller, or None (relative, unreadable)."""
        try:
            raw, terminated = self.memory.read_cstring(addr, overlay.PATH_MAX)
        except OSError:
            return None
        if not terminated or not raw.startswith(b"/"):
            return None
        return raw.decode("utf-8", "surrogateescape")

    # -- bpf, perf_event_open --------------------------------------------------------------------
    def _bpf(self, n: Notification) -> Answer:
        cmd, addr, size = _s32(n.args[0]), n.args[1], n.args[2] & 0xFFFFFFFF
        if size > self.kernel.config.page_size:
            fail(errno.E2BIG, f"attr size {size} exceeds a page")
        image = bytearray(self.memory.read(addr, size))
        return self._result(self._run(addr, image, lambda: self.backend.bpf(cmd, image, size)))

    def _perf_attr_image(self, addr: int) -> bytearray:
        try:
            head = self.memory.read(addr, 8)
        except OSError:
            return bytearray()
        size = int.from_bytes(head[4:8], "little") or PERF_ATTR_SIZE_VER0
        if not len(head) < size <= self.kernel.config.page_size:
            return bytearray(head)
        try:
            return bytearray(self.memory.read(addr, size))
        except OSError:
            return bytearray(head)

    def _perf_event_open(self, n: Notification) -> Answer:
        addr = n.args[0]
        image = self._perf_attr_image(addr)
        pid, cpu, group_fd, flags = n.args[1:5]
        return self._result(
            self._run(
                addr, image, lambda: self.backend.perf_event_open(image, pid, cpu, group_fd, flags)
            )
        )

    # -- ioctl, mmap -----------------------------------------------------------------------------
    def _ioctl(self, n: Notification) -> Answer:
        fd = _s32(n.args[0])
        if self.fds.lookup(fd) is None:
            return CONTINUE
        return Answer(value=self.backend.ioctl(fd, n.args[1], n.args[2]))

    def _mmap(self, n: Notification) -> Answer:
        _addr, length, prot, flags, fd, offset = n.args
        fd = _s32(fd)
        obj = self.fds.lookup(fd)
        if obj is None:
            return CONTINUE
        mapping = self.backend.mmap(fd, length, prot, flags, offset)
        replace = None
        if isinstance(obj, PerfEvent) and obj.rb is not None:
            ring = obj.rb.fileno()
            if os.stat(f"/proc/{n.pid}/fd/{fd}").st_ino != os.fstat(ring).st_ino:
                srcfd = self.fds.open_file(obj, os.O_RDWR, backing=ring)
                obj.hold()
                replace = (fd, PendingFile(obj, srcfd, _cloexec(n.pid, fd)))
        return Answer(proceed=True, replace=replace, mapping=(fd, mapping))

    # -- epoll_ctl -------------------------------------------------------------------------------
    def _epoll_ctl(self, n: Notification) -> Answer:
        epfd, op, fd, event_addr = _s32(n.args[0]), _s32(n.args[1]), _s32(n.args[2]), n.args[3]
        obj = self.fds.lookup(fd)
        if obj is None:
            return CONTINUE
        events = data = 0
        if op != EPOLL_CTL_DEL:
            layout = self.fds.readiness.event_layout
            events, data = layout.unpack(self.memory.read(event_addr, layout.size))
        epoll = self.tasks.getfd(n.pid, epfd)
        try:
            if epfd == fd or os.readlink(f"/proc/self/fd/{epoll}") != EPOLL_NAME:
                fail(errno.EINVAL, f"fd {epfd} is not an epoll fd, or is the target")
            st = os.fstat(epoll)
            key = ((st.st_dev, st.st_ino), fd)
            self.fds.readiness.control(epoll, key, op, obj, events, data)
        finally:
            os.close(epoll)
        return Answer(value=0)

    # -- open, openat, statfs --------------------------------------------------------------------
    def _open(self, n: Notification) -> Answer:
        if n.nr == self._open_nr:
            addr, flags = n.args[0], n.args[1]
        else:
            addr, flags = n.args[1], n.args[2]
        raw = self._path(addr)
        if raw is None:
            return CONTINUE
        tgid = self.tasks.tgid(n.pid)
        path = overlay.simulated_path(self.kernel, raw, (tgid, n.pid))
        if path is None:
            return CONTINUE
        memfd = overlay.open_snapshot(self.kernel, path, flags)
        return Answer(plain_file=PlainFile(memfd, bool(flags & os.O_CLOEXEC)))

    def _statfs(self, n: Notification) -> Answer:
        raw = self._path(n.args[0])
        if raw is None:
            return CONTINUE
        answer = overlay.bpffs_statfs(self.kernel, raw)
        if answer is None:
            return CONTINUE
        self.memory.write(n.args[1], answer)
        return Answer(value=0)


def _cloexec(pid: int, fd: int) -> bool:
    """Whether the caller's `fd` is close-on-exec (its fdinfo flags)."""
    with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as info:
        for line in info:
            if line.startswith(b"flags:"):
                return bool(int(line.split()[1], 8) & os.O_CLOEXEC)
    return True


HANDLERS: Final[dict[str, Callable[[SyscallServer, Notification], Answer]]] = {
    "bpf": SyscallServer._bpf,
    "perf_event_open": SyscallServer._perf_event_open,
    "ioctl": SyscallServer._ioctl,
    "mmap": SyscallServer._mmap,
    "epoll_ctl": SyscallServer._epoll_ctl,
    "openat": SyscallServer._open,
    "open": SyscallServer._open,
    "statfs": SyscallServer._statfs,
}
"""System call name -> its handler."""
