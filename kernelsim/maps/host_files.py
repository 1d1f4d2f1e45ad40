"""Files of this process that simulated maps refer to: sockets and cgroup v2 directories.

Theory of operation
-------------------
Some map types store files the simulator does not create: sockets (SOCKMAP, SOCKHASH, XSKMAP)
and cgroups (CGROUP_ARRAY). Their values are fds of this process, so the simulated kernel looks
at the real file behind the fd, the way the kernel's sockfd_lookup / cgroup_get_from_fd do:

| fd                                     | socket lookup   | cgroup lookup             |
|----------------------------------------|-----------------|---------------------------|
| not open (or negative)                 | EBADF           | EBADF                     |
| open, not a socket (a file, a map fd)  | ENOTSOCK        | EBADF                     |
| a socket                               | `SocketFacts`   | EBADF                     |
| a directory of a cgroup2 mount         | ENOTSOCK        | its (st_dev, st_ino)      |

`SocketFacts` is what the sockmap rules need of a socket: family, type, protocol, the TCP state
(from TCP_INFO), whether it is bound (a UDP socket is hashed once bound) or connected, and its
socket cookie (SO_COOKIE: the same cookie the live kernel reports for that socket). Every fact
comes from getsockopt/getsockname on a duplicate of the fd, never from memory addresses.

A socket stored in a map is a `HostSocket`: one object per socket (by inode) and kernel, shared
by every map holding it, with one reference per map entry; it carries the socket's psock: the
programs it got from the sock maps it is in (`PSOCK_SLOTS`, rules in kernelsim.maps.sockmap),
dropped with the last entry.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
from typing import TYPE_CHECKING, Final

import attrs

from kernelsim.errors import fail
from kernelsim.objects import KernelObject, ObjectRegistry

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.prog.program import BpfProgram

AF_XDP: Final = 44
SO_COOKIE: Final = 57
CGROUP2_SUPER_MAGIC: Final = 0x63677270
TCP_ESTABLISHED: Final = 1
TCP_LISTEN: Final = 10
_INET: Final = (socket.AF_INET, socket.AF_INET6)
PSOCK_SLOTS: Final = ("msg_parser", "stream_parser", "stream_verdict", "skb_verdict")
"""The programs a socket's psock can run, by the sock map attach point that sets them."""


@attrs.frozen
class SocketFacts:
    """What the simulated kernel knows of one socket of this process."""

    ino: int
    family: int
    type: int
    protocol: int
    tcp_state: int
    """The TCP state (TCP_INFO's tcpi_state) of a TCP socket; 0 for the others."""
    bound: bool
    """A local address is set (for UDP: the socket is hashed)."""
    connected: bool
    cookie: int


def _fd_stat(fd: int) -> os.stat_result:
    """fstat of a user fd number: EBADF unless it is open."""
    if not 0 <= fd <= 0x7FFFFFFF:
        fail(errno.EBADF, f"fd {fd} is not an open fd")
    try:
        return os.fstat(fd)
    except OSError:
        fail(errno.EBADF, f"fd {fd} is not an open fd")


def socket_facts(fd: int) -> SocketFacts:
    """sockfd_lookup: the socket behind `fd` (EBADF not open, ENOTSOCK not a socket)."""
    st = _fd_stat(fd)
    if not stat.S_ISSOCK(st.st_mode):
        fail(errno.ENOTSOCK, f"fd {fd} is not a socket")
    with _wrap(fd, socket.AF_UNIX) as raw:  # any family: only getsockopt is used
        family = raw.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        kind = raw.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        proto = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        cookie = int.from_bytes(raw.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
        tcp_state = 0
        if family in _INET and proto == socket.IPPROTO_TCP:
            tcp_state = raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    bound = connected = False
    if family in (*_INET, socket.AF_UNIX):  # families whose addresses Python can decode
        with _wrap(fd, family, kind) as sock:
            bound = family in _INET and bool(sock.getsockname()[1])
            connected = _connected(sock)
    return SocketFacts(st.st_ino, family, kind, proto, tcp_state, bound, connected, cookie)


def _wrap(fd: int, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket object over a duplicate of `fd` (closing it leaves `fd` open)."""
    return socket.socket(family, kind, 0, fileno=os.dup(fd))


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


_libc = ctypes.CDLL(None, use_errno=True)
_fstatfs = _libc.fstatfs
_fstatfs.argtypes = [ctypes.c_int, ctypes.POINTER(_Statfs)]
_fstatfs.restype = ctypes.c_int


def cgroup_dir(fd: int) -> tuple[int, int]:
    """cgroup_get_from_fd: (st_dev, st_ino) of the cgroup2 directory behind `fd`; EBADF for any
    other fd (a cgroup v1 directory, a file inside a cgroup, a socket, a simulated object)."""
    st = _fd_stat(fd)
    buf = _Statfs()
    if (
        not stat.S_ISDIR(st.st_mode)
        or _fstatfs(fd, ctypes.byref(buf)) != 0
        or buf.f_type != CGROUP2_SUPER_MAGIC
    ):
        fail(errno.EBADF, f"fd {fd} is not a cgroup2 directory")
    return st.st_dev, st.st_ino


class HostCgroup(KernelObject):
    """A cgroup2 directory of this process held by a cgroup array slot."""

    def __init__(self, registry: ObjectRegistry, identity: tuple[int, int]) -> None:
        super().__init__(registry)
        self.identity = identity


class HostSocket(KernelObject):
    """A socket of this process held by sock map or xsk map entries (one reference each)."""

    def __init__(self, table: HostSockets, facts: SocketFacts) -> None:
        super().__init__(table.registry)
        self.table = table
        self.facts = facts
        self.psock: dict[str, BpfProgram] = {}
        """The psock's programs by PSOCK_SLOTS name (set while the socket is in a sock map)."""
        self.verdict_running = False
        """A stream parser or verdict program receives the socket's data (the psock's
        saved_data_ready is set)."""

    @property
    def is_tcp(self) -> bool:
        return self.facts.type == socket.SOCK_STREAM and self.facts.family in (
            socket.AF_INET,
            socket.AF_INET6,
        )

    def set_program(self, slot: str, prog: BpfProgram) -> None:
        """psock_set_prog: `prog` (a new reference) replaces the psock's program in `slot`."""
        prog.hold()
        old = self.psock.get(slot)
        self.psock[slot] = prog
        if old is not None:
            old.put()

    def clear_programs(self, *slots: str) -> None:
        for slot in slots:
            old = self.psock.pop(slot, None)
            if old is not None:
                old.put()

    def release(self) -> None:
        self.clear_programs(*PSOCK_SLOTS)
        self.table.forget(self)


class HostSockets:
    """The kernel's `HostSocket` per socket inode (a kernel subsystem)."""

    def __init__(self, kernel: Kernel) -> None:
        self.registry = kernel.objects
        self._by_ino: dict[int, HostSocket] = {}

    def get(self, facts: SocketFacts) -> HostSocket:
        """The socket's object with a new reference for the caller."""
        sock = self._by_ino.get(facts.ino)
        if sock is None:
            sock = self._by_ino[facts.ino] = HostSocket(self, facts)
        else:
            sock.hold()
        return sock

    def forget(self, sock: HostSocket) -> None:
        if self._by_ino.get(sock.facts.ino) is sock:
            del self._by_ino[sock.facts.ino]
