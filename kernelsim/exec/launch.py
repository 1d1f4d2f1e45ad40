"""Start a program under the filter, with its listener in the supervisor's hands.

Theory of operation
-------------------
`launch(argv)` forks. The child installs the filter (`kernelsim.exec.filter.install`), sends the
listener fd to the parent over a socketpair (SCM_RIGHTS), proves that its calls reach the
parent, waits for the parent's go and execs the program. The proof is two probe calls made
through the filter before exec:

* `bpf(PROBE_CMD, NULL, 0)`: the parent answers it by installing a memfd in the child with
  ADDFD (SEND where the kernel has it), so the probe shows both that bpf() reaches the
  supervisor (an outer seccomp profile that denies bpf, as a container's default one does,
  answers it first: the child sees that profile's errno instead) and that the kernel can put a
  file into the caller (SECCOMP_IOCTL_NOTIF_ADDFD, 5.9);
* `perf_event_open(NULL, ...)`: answered with PROBE_VALUE, for the same reason.

Whatever fails on the way is an `ExecRefused` with the reason, raised in the parent after the
child has exited; nothing of the program has run by then. The child speaks to the parent in
one-letter messages: "L" (listener attached), "P" (probes passed), "E<reason>" (gave up).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from kernelsim.exec.filter import assemble, install
from kernelsim.exec.listener import Listener
from kernelsim.exec.seccomp import Arch, native_arch

PROBE_CMD: Final = 0x7EC5EC
"""The bpf command number of the probe (no kernel has it)."""
PROBE_VALUE: Final = 0x5EC
PROBE_TIMEOUT_MS: Final = 10_000
EXIT_REFUSED: Final = 126


class ExecRefused(Exception):
    """The program cannot be run against the simulator here; the message says why."""


@attrs.frozen
class Launched:
    """A child that is about to exec under the filter."""

    pid: int
    listener: Listener
    wait_killable: bool
    """Whether the filter has SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19)."""
    go: socket.socket
    """Send b"G" to let the child exec (`start`)."""

    def start(self) -> None:
        """Let the child exec the program."""
        with contextlib.closing(self.go):
            self.go.sendall(b"G")


def _child(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    stdio: Sequence[int | None],
    user: tuple[int, int] | None,
    sock: socket.socket,
) -> None:
    """The child's side: never returns."""
    code = EXIT_REFUSED
    try:
        for number in (signal.SIGPIPE, signal.SIGXFSZ):  # as Python found them
            signal.signal(number, signal.SIG_DFL)
        for target, fd in enumerate(stdio):
            if fd is not None:
                os.dup2(fd, target)
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
        arch = native_arch()
        installed = install(arch, assemble(arch))
        tag = b"LK" if installed.wait_killable else b"L-"
        socket.send_fds(sock, [tag], [installed.listener])
        os.close(installed.listener)
        _probe(arch)
        sock.sendall(b"P")
        if sock.recv(1) != b"G":
            os._exit(code)
        sock.close()
        code = 127
        if env is None:
            os.execvp(argv[0], list(argv))
        os.execvpe(argv[0], list(argv), dict(env))
    except BaseException as exc:  # the child must exit, whatever happened
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        with contextlib.suppress(OSError):
            sock.sendall(b"E" + reason.encode(errors="replace"))
        if code == 127:
            print(f"kernelsim exec: {argv[0]}: {exc}", file=sys.stderr)
    os._exit(code)


def _probe(arch: Arch) -> None:
    """The two probe calls (module docstring); OSError with the reason when one fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    fd = syscall(ctypes.c_long(arch.bpf), ctypes.c_long(PROBE_CMD), None, ctypes.c_long(0))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"bpf() did not reach the supervisor ({os.strerror(code)}): an "
                      "outer seccomp profile answers it (run with --security-opt "
                      "seccomp=unconfined or a profile that allows bpf)")  # fmt: skip
    os.close(fd)
    value = syscall(
        ctypes.c_long(arch.perf_event_open),
        None,
        ctypes.c_long(-1),
        ctypes.c_long(-1),
        ctypes.c_long(-1),
        ctypes.c_long(0),
    )
    if value != PROBE_VALUE:
        code = ctypes.get_errno()
        raise OSError(code, "perf_event_open() did not reach the supervisor "
                      f"({os.strerror(code)}): an outer seccomp profile answers it")  # fmt: skip


def _wait_message(sock: socket.socket, listener: Listener, child: _Child) -> bytes:
    """The child's next message, answering its probe calls meanwhile."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(listener.fd, select.POLLIN)
    while True:
        ready = poller.poll(PROBE_TIMEOUT_MS)
        if not ready:
            raise ExecRefused("the child did not start within 10 s")
        for fd, _ in ready:
            if fd == sock.fileno():
                data = sock.recv(4096)
                if not data:
                    raise ExecRefused(f"the child exited before exec ({child.status()})")
                return data
            _answer_probe(listener)


def _answer_probe(listener: Listener) -> None:
    arch = native_arch()
    notification = listener.receive()
    if notification is None:
        return
    if notification.nr == arch.bpf and notification.args[0] == PROBE_CMD:
        memfd = os.memfd_create("kernelsim-probe", os.MFD_CLOEXEC)
        try:
            listener.reply_fd(notification.id, memfd, cloexec=True)
        except OSError as exc:
            listener.reply_error(notification.id, errno.ENOSYS)
            if exc.errno in (errno.EINVAL, errno.ENOTTY):
                raise ExecRefused(
                    "this kernel cannot install fds in a traced process "
                    "(SECCOMP_IOCTL_NOTIF_ADDFD, Linux 5.9)"
                ) from None
            raise
        finally:
            os.close(memfd)
    elif notification.nr == arch.perf_event_open:
        listener.reply_value(notification.id, PROBE_VALUE)
    else:  # a call of the launcher itself (an open while reporting an error): let it run
        listener.reply_continue(notification.id)


class _Child:
    """The forked child, reaped at most once."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.reaped = False

    def status(self) -> str:
        """Wait for the child to end; how it ended."""
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"

    def kill(self) -> None:
        if not self.reaped:
            os.kill(self.pid, signal.SIGKILL)
            self.status()


def launch(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdio: Sequence[int | None] = (None, None, None),
    user: tuple[int, int] | None = None,
) -> Launched:
    """Fork a child that will exec `argv` under the filter (module docstring), with `env`
    (None: this process's), the fds in `stdio` as its stdin, stdout and stderr (None: this
    process's) and, when `user` is given, as that (uid, gid) without supplementary groups."""
    try:
        native_arch()
    except KeyError:
        raise ExecRefused(f"kernelsim exec does not support {os.uname().machine}") from None
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits
        parent_sock.close()
        _child(argv, env, stdio, user, child_sock)
    child_sock.close()
    child = _Child(pid)
    listener: Listener | None = None
    try:
        msg, fds, _, _ = socket.recv_fds(parent_sock, 4096, 1)
        if not msg.startswith(b"L") or not fds:
            reason = msg[1:].decode(errors="replace") if msg else "no listener"
            raise ExecRefused(f"cannot install the seccomp filter: {reason} ({child.status()})")
        listener = Listener(fds[0])
        reply = _wait_message(parent_sock, listener, child)
        if reply != b"P":
            child.status()
            raise ExecRefused(reply[1:].decode(errors="replace"))
    except BaseException:
        parent_sock.close()
        if listener is not None:
            listener.close()
        child.kill()
        raise
    return Launched(pid, listener, msg == b"LK", parent_sock)
