"""The supervisor's end of a seccomp listener: receive a notification, answer it.

Theory of operation
-------------------
Every notification is answered exactly once, in one of four ways: a value, an errno, "continue"
(the kernel runs the call itself: a file the simulator does not own), or a new fd installed in
the caller whose number is the value (`reply_fd`: ADDFD with SECCOMP_ADDFD_FLAG_SEND, so the
install and the reply are one step; before 5.14, ADDFD then the value). An answer to a task that
is gone, or that a fatal signal took out of its wait, fails with ENOENT: `Gone` is raised, so
that the caller can undo what it had prepared for the reply. `replace_fd` swaps the file behind
one of the caller's fds (ADDFD with SETFD) before the reply.
"""

from __future__ import annotations

import errno
import fcntl
import os

import attrs

from kernelsim.exec.seccomp import (
    SECCOMP_ADDFD_FLAG_SEND,
    SECCOMP_ADDFD_FLAG_SETFD,
    SECCOMP_IOCTL_NOTIF_ADDFD,
    SECCOMP_IOCTL_NOTIF_RECV,
    SECCOMP_IOCTL_NOTIF_SEND,
    SECCOMP_NOTIF,
    SECCOMP_NOTIF_ADDFD,
    SECCOMP_NOTIF_RESP,
    SECCOMP_USER_NOTIF_FLAG_CONTINUE,
)


class Gone(Exception):
    """The notifying task no longer waits for this answer (it exited or was killed)."""


@attrs.frozen
class Notification:
    """One intercepted system call."""

    id: int
    pid: int
    """The calling thread, in the supervisor's pid namespace."""
    nr: int
    args: tuple[int, int, int, int, int, int]


class Listener:
    """A seccomp listener fd owned by the supervisor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._recv = bytearray(SECCOMP_NOTIF.size)
        self._zero = bytes(SECCOMP_NOTIF.size)
        self._send_flag = SECCOMP_ADDFD_FLAG_SEND
        """Cleared when the kernel turns SECCOMP_ADDFD_FLAG_SEND down (before 5.14)."""

    def receive(self) -> Notification | None:
        """The next notification; None when the task went away before it could be read."""
        buf = self._recv
        buf[:] = self._zero  # the kernel wants a zeroed struct
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINTR):
                return None
            raise
        notif_id, pid, _flags, nr, _arch, _ip, *args = SECCOMP_NOTIF.unpack(buf)
        return Notification(notif_id, pid, nr, tuple(args))

    def _send(self, notif_id: int, value: int, error: int, flags: int) -> None:
        resp = bytearray(SECCOMP_NOTIF_RESP.pack(notif_id, value, error, flags))
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, resp, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise Gone from None
            raise

    def reply_value(self, notif_id: int, value: int) -> None:
        self._send(notif_id, value, 0, 0)

    def reply_error(self, notif_id: int, code: int) -> None:
        self._send(notif_id, 0, -code, 0)

    def reply_continue(self, notif_id: int) -> None:
        self._send(notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def _addfd(self, notif_id: int, flags: int, srcfd: int, newfd: int, newfd_flags: int) -> int:
        request = bytearray(SECCOMP_NOTIF_ADDFD.pack(notif_id, flags, srcfd, newfd, newfd_flags))
        try:
            return int(fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ADDFD, request, True))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise Gone from None
            raise

    def reply_fd(self, notif_id: int, srcfd: int, cloexec: bool) -> int:
        """Install `srcfd`'s file in the caller at its lowest free fd and answer with that fd."""
        newfd_flags = os.O_CLOEXEC if cloexec else 0
        if self._send_flag:
            try:
                return self._addfd(notif_id, self._send_flag, srcfd, 0, newfd_flags)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._send_flag = 0
        newfd = self._addfd(notif_id, 0, srcfd, 0, newfd_flags)
        self.reply_value(notif_id, newfd)
        return newfd

    def replace_fd(self, notif_id: int, srcfd: int, newfd: int, cloexec: bool) -> None:
        """Make the caller's fd `newfd` refer to `srcfd`'s file (dup2 in the caller)."""
        newfd_flags = os.O_CLOEXEC if cloexec else 0
        self._addfd(notif_id, SECCOMP_ADDFD_FLAG_SETFD, srcfd, newfd, newfd_flags)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
