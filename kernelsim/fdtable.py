"""The simulated process's fds for kernel objects.

Theory of operation
-------------------
Each simulated fd is a real eventfd of this process, so its number is unique among the
process's fds, it shows in /proc/self/fd, and `select`/`selectors`/asyncio can wait on it. The
eventfd carries readiness: `set_ready(obj)` makes every fd of `obj` readable, `clear_ready(obj)`
drains them. Installing an fd hands it one reference of the object; closing the fd first tells the
object (`file_closed`), then drops that reference. Each fd has its own access mode (O_RDONLY,
O_WRONLY or O_RDWR, as the file's f_mode): a map fd opened read-only refuses writes.

`FileTable` is what the kernel needs of a table: `FdTable` is this process's; another process's
(`kernelsim.exec.remote_fds.RemoteFdTable`, fds of a program run by `kernelsim exec`) fits it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Protocol, TypeVar

from kernelsim.errors import fail
from kernelsim.objects import KernelObject

_Obj = TypeVar("_Obj", bound=KernelObject)


class FileTable(Protocol):
    """The calls the kernel's subsystems make on the caller's fd table (as `FdTable` has them)."""

    def install(self, obj: KernelObject, mode: int = os.O_RDWR) -> int: ...

    def install_new_ref(self, obj: KernelObject, mode: int = os.O_RDWR) -> int: ...

    def mode(self, fd: int) -> int: ...

    def get(self, fd: int, cls: type[_Obj], wrong_type: int = errno.EINVAL) -> _Obj: ...

    def lookup(self, fd: int) -> KernelObject | None: ...

    def close(self, fd: int) -> None: ...

    def set_ready(self, obj: KernelObject) -> None: ...

    def clear_ready(self, obj: KernelObject) -> None: ...

    def open_fds(self) -> list[int]: ...


class FdTable:
    """fd number -> kernel object, over real eventfds."""

    def __init__(self) -> None:
        self._files: dict[int, KernelObject] = {}
        self._modes: dict[int, int] = {}

    def install(self, obj: KernelObject, mode: int = os.O_RDWR) -> int:
        """A new fd for `obj` with access `mode`, taking over one reference the caller holds."""
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._files[fd] = obj
        self._modes[fd] = mode
        return fd

    def install_new_ref(self, obj: KernelObject, mode: int = os.O_RDWR) -> int:
        """A new fd for `obj` with a reference of its own (GET_FD_BY_ID, OBJ_GET)."""
        obj.hold()
        return self.install(obj, mode)

    def mode(self, fd: int) -> int:
        """The access mode of open `fd` (os.O_RDONLY, os.O_WRONLY or os.O_RDWR)."""
        return self._modes.get(fd, os.O_RDWR)

    def get(self, fd: int, cls: type[_Obj], wrong_type: int = errno.EINVAL) -> _Obj:
        """The object behind `fd`: EBADF for no such fd, `wrong_type` for another kind (also for
        an fd open in this process that is no simulated object, e.g. stdin)."""
        obj = self._files.get(fd)
        if obj is None:
            if fd < 0 or not _process_has_fd(fd):
                fail(errno.EBADF, f"fd {fd} is not an open fd")
            fail(wrong_type, f"fd {fd} is a file of this process, not a {cls.__name__}")
        if not isinstance(obj, cls):
            fail(wrong_type, f"fd {fd} is a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    def lookup(self, fd: int) -> KernelObject | None:
        return self._files.get(fd)

    def close(self, fd: int) -> None:
        """close(2): EBADF for an unknown fd; drops the fd's reference."""
        obj = self._files.pop(fd, None)
        if obj is None:
            fail(errno.EBADF, f"fd {fd} is not an open simulated fd")
        self._modes.pop(fd, None)
        os.close(fd)
        obj.file_closed(fd)
        obj.put()

    def fds_of(self, obj: KernelObject) -> list[int]:
        return [fd for fd, o in self._files.items() if o is obj]

    def set_ready(self, obj: KernelObject) -> None:
        """Make every fd of `obj` readable for select/poll."""
        for fd in self.fds_of(obj):
            os.eventfd_write(fd, 1)

    def clear_ready(self, obj: KernelObject) -> None:
        """Make every fd of `obj` not readable."""
        for fd in self.fds_of(obj):
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)

    def open_fds(self) -> list[int]:
        return sorted(self._files)


def _process_has_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except (OSError, OverflowError):
        return False
    return True
