"""User memory as the kernel sees it: copy_from_user / copy_to_user through process_vm_*v.

Theory of operation
-------------------
A pointer in a `bpf_attr` is an address in the calling process. The simulator never
dereferences it with ctypes (a bogus address would crash the interpreter); it reads and writes
through process_vm_readv/process_vm_writev on the process's own pid, which fail cleanly with
EFAULT on an unmapped or protected range. A NULL pointer with length 0 is an empty read, as in
the kernel. `LocalMemory` is this process; a remote variant (another pid) fits the same
`UserMemory` protocol.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import ClassVar, Protocol

from kernelsim.errors import fail

_PAGE = os.sysconf("SC_PAGE_SIZE")
_ADDR_END = 1 << 64


class UserMemory(Protocol):
    """Access to a process's memory; every failure is EFAULT."""

    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...

    def read_cstring(self, addr: int, max_len: int) -> tuple[bytes, bool]: ...


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class ProcessMemory:
    """The memory of process `pid` (this process by default) through process_vm_readv/writev.

    Each copy goes through one scratch buffer and one pair of iovecs made once (a bpf() call
    copies keys and values this way, so the per-copy cost matters); a lock keeps threads from
    sharing them at the same time."""

    _SCRATCH: ClassVar[int] = 4096

    def __init__(self, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        libc = ctypes.CDLL(None)  # the count transferred is all we need, not errno
        self._readv = libc.process_vm_readv
        self._writev = libc.process_vm_writev
        for fn in (self._readv, self._writev):
            # No argtypes: the iovec pointers go in as ready c_void_p objects (converting the
            # arguments on each call is most of a ctypes call's cost).
            fn.restype = ctypes.c_ssize_t
        self._lock = threading.Lock()
        self._local = _Iovec()
        self._remote = _Iovec()
        self._local_ptr = ctypes.c_void_p(ctypes.addressof(self._local))
        self._remote_ptr = ctypes.c_void_p(ctypes.addressof(self._remote))
        self._scratch = ctypes.create_string_buffer(self._SCRATCH)
        self._scratch_size = self._SCRATCH
        self._scratch_addr = ctypes.addressof(self._scratch)
        self._local.iov_base = self._scratch_addr

    def _scratch_for(self, size: int) -> int:
        """The scratch buffer's address, grown to hold `size` bytes (lock held)."""
        if size > self._scratch_size:
            self._scratch = ctypes.create_string_buffer(size)
            self._scratch_size = size
            self._scratch_addr = ctypes.addressof(self._scratch)
            self._local.iov_base = self._scratch_addr
        return self._scratch_addr

    def read(self, addr: int, size: int) -> bytes:
        """copy_from_user: `size` bytes at `addr`; EFAULT unless all of them are readable."""
        if size <= 0 or addr < 0 or addr + size > _ADDR_END:
            if size == 0:
                return b""
            fail(errno.EFAULT, f"bad user range {addr:#x}+{size}")
        with self._lock:
            scratch = self._scratch_for(size)
            self._local.iov_len = size
            remote = self._remote
            remote.iov_base = addr
            remote.iov_len = size
            if self._readv(self.pid, self._local_ptr, 1, self._remote_ptr, 1, 0) != size:
                fail(errno.EFAULT, f"cannot read {size} bytes at {addr:#x}")
            return ctypes.string_at(scratch, size)

    def write(self, addr: int, data: bytes) -> None:
        """copy_to_user: all of `data` at `addr`; EFAULT unless all of it is writable."""
        size = len(data)
        if size <= 0 or addr < 0 or addr + size > _ADDR_END:
            if size == 0:
                return
            fail(errno.EFAULT, f"bad user range {addr:#x}+{size}")
        with self._lock:
            ctypes.memmove(self._scratch_for(size), data, size)
            self._local.iov_len = size
            remote = self._remote
            remote.iov_base = addr
            remote.iov_len = size
            if self._writev(self.pid, self._local_ptr, 1, self._remote_ptr, 1, 0) != size:
                fail(errno.EFAULT, f"cannot write {size} bytes at {addr:#x}")

    def read_cstring(self, addr: int, max_len: int) -> tuple[bytes, bool]:
        """strncpy_from_user: (the bytes before the NUL, whether a NUL came within `max_len`).

        Reads page by page, so a string that ends just before an unmapped page is fine.
        """
        out = bytearray()
        while len(out) < max_len:
            chunk = min(_PAGE - (addr + len(out)) % _PAGE, max_len - len(out))
            data = self.read(addr + len(out), chunk)
            nul = data.find(b"\0")
            if nul >= 0:
                out += data[:nul]
                return bytes(out), True
            out += data
        return bytes(out), False
