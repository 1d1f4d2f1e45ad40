"""Learning when a traced program's last reference to one of its simulated files is gone.

Theory of operation
-------------------
The file a traced program holds for a simulated object is an open file description of a
memfd that the supervisor opened for it (through /proc/self/fd/N, so that it is an ordinary
opened file, not a pseudo file: those send no fsnotify events since 6.14) and then closed on its
own side. The program's fds (dup, fork, SCM_RIGHTS) and its mappings all share that one file,
and the kernel releases it when the last of them is gone, in every process. inotify reports that
release as IN_CLOSE_WRITE or IN_CLOSE_NOWRITE on the memfd's inode. So each release event is
exactly "one file of this inode is gone", with no scanning of /proc and no reference held by
the supervisor. `CloseWatcher` owns the inotify fd; `watch(fd)` watches the inode of one of this
process's fds, `releases()` reads the pending events as watch descriptors (one per released
file; IN_IGNORED, the inode's end, is not one).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import sys
import termios
from typing import Final

IN_CLOSE_WRITE: Final = 0x00000008
IN_CLOSE_NOWRITE: Final = 0x00000010
IN_NONBLOCK: Final = os.O_NONBLOCK
IN_CLOEXEC: Final = os.O_CLOEXEC
_EVENT: Final = struct.Struct("iIII")
"""struct inotify_event { int wd; __u32 mask, cookie, len; char name[]; }"""


class CloseWatcher:
    """An inotify instance watching simulated files' inodes for releases."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self.fd: int = fd
        self._pending = bytearray(4)

    def watch(self, fd: int) -> int:
        """Watch the inode of this process's `fd` for releases; the watch descriptor."""
        path = f"/proc/self/fd/{fd}".encode()
        wd = self._libc.inotify_add_watch(self.fd, path, IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_add_watch: {os.strerror(code)}")
        return int(wd)

    def unwatch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # fails only for a watch already gone

    def releases(self) -> list[int]:
        """The watch descriptors of the files released since the last call, in order."""
        found: list[int] = []
        fcntl.ioctl(self.fd, termios.FIONREAD, self._pending, True)
        if not int.from_bytes(self._pending, sys.byteorder):  # nothing queued: no read at all
            return found
        while True:
            try:
                data = os.read(self.fd, 64 * _EVENT.size)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, name_len = _EVENT.unpack_from(data, offset)
                if mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE):
                    found.append(wd)
                offset += _EVENT.size + name_len

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
