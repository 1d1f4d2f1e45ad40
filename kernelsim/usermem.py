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
from typing import Protocol

from kernelsim.errors import fail

_PAGE = os.sysconf("SC_PAGE_SIZE")


class UserMemory(Protocol):
    """Access to a process's memory; every failure is EFAULT."""

    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...

    def read_cstring(self, addr: int, max_len: int) -> tuple[bytes, bool]: ...


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class ProcessMemory:
    """The memory of process `pid` (this process by default) through process_vm_readv/writev."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        libc = ctypes.CDLL(None, use_errno=True)
        self._readv = libc.process_vm_readv
        self._writev = libc.process_vm_writev
        for fn in (self._readv, self._writev):
            fn.restype = ctypes.c_ssize_t
            fn.argtypes = [
                ctypes.c_int,
                ctypes.POINTER(_Iovec),
                ctypes.c_ulong,
                ctypes.POINTER(_Iovec),
                ctypes.c_ulong,
                ctypes.c_ulong,
            ]

    @staticmethod
    def _check_range(addr: int, size: int) -> None:
        if size < 0 or addr < 0 or addr + size > 1 << 64:
            fail(errno.EFAULT, f"bad user range {addr:#x}+{size}")

    def read(self, addr: int, size: int) -> bytes:
        """copy_from_user: `size` bytes at `addr`; EFAULT unless all of them are readable."""
        self._check_range(addr, size)
        if size == 0:
            return b""
        buf = ctypes.create_string_buffer(size)
        local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), size)
        remote = _Iovec(addr, size)
        done = self._readv(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if done != size:
            fail(errno.EFAULT, f"cannot read {size} bytes at {addr:#x}")
        return buf.raw

    def write(self, addr: int, data: bytes) -> None:
        """copy_to_user: all of `data` at `addr`; EFAULT unless all of it is writable."""
        size = len(data)
        self._check_range(addr, size)
        if size == 0:
            return
        buf = ctypes.create_string_buffer(bytes(data), size)
        local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), size)
        remote = _Iovec(addr, size)
        done = self._writev(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if done != size:
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
