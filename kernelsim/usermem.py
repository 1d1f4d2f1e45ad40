"""User memory as the kernel sees it: copy_from_user / copy_to_user, EFAULT for a bogus pointer.

Theory of operation
-------------------
A pointer in a `bpf_attr` is an address in the calling process. The simulator never
dereferences it with ctypes (a bogus address would crash the interpreter); it hands the address
to a system call, and the real kernel's copy_from_user / copy_to_user do the access, failing
cleanly with EFAULT on an unmapped or protected range (a write needs a writable page). A NULL
pointer with length 0 is an empty read, as in the kernel.

`ProcessMemory(pid)` reaches the memory of process `pid` (this process by default):

- this process: through a private 64 KiB staging file (a memfd, also mapped into this process).
  Reading `n` bytes at `addr` is pwritev(stage, {addr, n}, 0): the kernel copies from the
  caller's memory into the file, and the bytes are then taken from the mapping; writing puts the
  bytes into the mapping and preadv(stage, {addr, n}, 0) has the kernel copy them out to the
  caller's memory, refusing read-only pages. One system call through ctypes with ready-made
  arguments: about a third less than a process_vm_readv, whose page pinning dominates. A short
  copy is EFAULT. The stage is made at import (so the process's fd count does not change later)
  and again in a forked child, which must not share its parent's.
- other processes, and copies larger than the stage: process_vm_readv/_writev.

`read_many(ranges)` copies several ranges in one system call (a key and a value); the module's
`read_many(memory, ranges)` does it for any `UserMemory`. One lock per process keeps threads
from sharing the stage or the iovecs at the same time.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
from collections.abc import Sequence
from typing import Final, Protocol

from kernelsim.errors import fail

_PAGE = os.sysconf("SC_PAGE_SIZE")
_ADDR_END = 1 << 64
STAGE_SIZE: Final = 64 << 10
"""The largest copy made through the staging file."""
MAX_RANGES: Final = 4
"""The most ranges one `read_many` call copies in one system call."""


class UserMemory(Protocol):
    """Access to a process's memory; every failure is EFAULT."""

    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...

    def read_cstring(self, addr: int, max_len: int) -> tuple[bytes, bool]: ...


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None)  # the count transferred is all we need, not errno
# No argtypes: the arguments go in as ready ctypes objects (converting Python ints on each call
# is a large part of a ctypes call's cost).
_preadv = _libc.preadv
_pwritev = _libc.pwritev
_process_vm_readv = _libc.process_vm_readv
_process_vm_writev = _libc.process_vm_writev
for _fn in (_preadv, _pwritev, _process_vm_readv, _process_vm_writev):
    _fn.restype = ctypes.c_ssize_t
_COUNTS: Final = tuple(ctypes.c_int(n) for n in range(MAX_RANGES + 1))
_OFFSET_0: Final = ctypes.c_long(0)


class _OwnProcess:
    """This process's pid, its staging file and mapping, and the lock every copy holds."""

    pid = -1
    fd = -1
    fd_arg = _COUNTS[0]
    stage = mmap.mmap(-1, 1)
    lock = threading.Lock()

    @classmethod
    def start(cls) -> None:
        if cls.fd >= 0:  # a forked child lets go of its parent's stage
            os.close(cls.fd)
        cls.pid = os.getpid()
        cls.fd = os.memfd_create("kernelsim-usermem", os.MFD_CLOEXEC)
        os.ftruncate(cls.fd, STAGE_SIZE)
        cls.fd_arg = ctypes.c_int(cls.fd)
        cls.stage = mmap.mmap(cls.fd, STAGE_SIZE)
        cls.lock = threading.Lock()


_OwnProcess.start()
os.register_at_fork(after_in_child=_OwnProcess.start)


def _bad_range(addr: int, size: int) -> bool:
    return size < 0 or addr < 0 or addr + size > _ADDR_END


class ProcessMemory:
    """The memory of process `pid` (this process by default); see the module docstring."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        self._iov = (_Iovec * MAX_RANGES)()
        self._iovs = list(self._iov)
        self._iov0 = self._iovs[0]
        self._iov_ptr = ctypes.c_void_p(ctypes.addressof(self._iov))
        self._local = _Iovec()
        self._local_ptr = ctypes.c_void_p(ctypes.addressof(self._local))

    def read(self, addr: int, size: int) -> bytes:
        """copy_from_user: `size` bytes at `addr`; EFAULT unless all of them are readable."""
        if 0 < size <= STAGE_SIZE and 0 <= addr <= _ADDR_END - size:
            own = _OwnProcess
            if self.pid == own.pid:  # this process: through the stage
                with own.lock:
                    iov = self._iov0
                    iov.iov_base = addr
                    iov.iov_len = size
                    if _pwritev(own.fd_arg, self._iov_ptr, _COUNTS[1], _OFFSET_0) == size:
                        return own.stage[:size]
                fail(errno.EFAULT, f"cannot read {size} bytes at {addr:#x}")
        elif size <= 0 or _bad_range(addr, size):
            if size == 0:
                return b""
            fail(errno.EFAULT, f"bad user range {addr:#x}+{size}")
        out = bytearray(size)
        with _OwnProcess.lock:
            iov = self._iov0
            iov.iov_base = addr
            iov.iov_len = size
            local = self._local
            local.iov_base = ctypes.addressof((ctypes.c_char * size).from_buffer(out))
            local.iov_len = size
            done = _process_vm_readv(self.pid, self._local_ptr, 1, self._iov_ptr, 1, 0)
        if done != size:
            fail(errno.EFAULT, f"cannot read {size} bytes at {addr:#x}")
        return bytes(out)

    def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes at each (addr, size) of `ranges` (this process: in one system call);
        EFAULT unless all of them are readable. Empty ranges read nothing."""
        own = _OwnProcess
        if self.pid != own.pid or len(ranges) > MAX_RANGES:
            return [self.read(addr, size) for addr, size in ranges]
        total = count = 0
        with own.lock:
            iovs = self._iovs
            for addr, size in ranges:
                if size:
                    if not (size > 0 and 0 <= addr <= _ADDR_END - size):
                        fail(errno.EFAULT, f"bad user range {addr:#x}+{size}")
                    iov = iovs[count]
                    iov.iov_base = addr
                    iov.iov_len = size
                    total += size
                    count += 1
            data = None
            if total <= STAGE_SIZE:
                if _pwritev(own.fd_arg, self._iov_ptr, _COUNTS[count], _OFFSET_0) != total:
                    fail(errno.EFAULT, f"cannot read {ranges}")
                data = own.stage[:total]
        if data is None:  # too large for the stage
            return [self.read(addr, size) for addr, size in ranges]
        out: list[bytes] = []
        pos = 0
        for _, size in ranges:
            out.append(data[pos : pos + size])
            pos += size
        return out

    def write(self, addr: int, data: bytes) -> None:
        """copy_to_user: all of `data` at `addr`; EFAULT unless all of it is writable."""
        size = len(data)
        if 0 < size <= STAGE_SIZE and 0 <= addr <= _ADDR_END - size:
            own = _OwnProcess
            if self.pid == own.pid:  # this process: through the stage
                with own.lock:
                    own.stage[:size] = data
                    iov = self._iov0
                    iov.iov_base = addr
                    iov.iov_len = size
                    if _preadv(own.fd_arg, self._iov_ptr, _COUNTS[1], _OFFSET_0) == size:
                        return
                fail(errno.EFAULT, f"cannot write {size} bytes at {addr:#x}")
        elif size <= 0 or _bad_range(addr, size):
            if size == 0:
                return
            fail(errno.EFAULT, f"bad user range {addr:#x}+{size}")
        source = ctypes.create_string_buffer(bytes(data), size)
        with _OwnProcess.lock:
            iov = self._iov0
            iov.iov_base = addr
            iov.iov_len = size
            local = self._local
            local.iov_base = ctypes.addressof(source)
            local.iov_len = size
            done = _process_vm_writev(self.pid, self._local_ptr, 1, self._iov_ptr, 1, 0)
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


def read_many(memory: UserMemory, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """`memory.read` of each (addr, size) range, in one copy where `memory` can."""
    if isinstance(memory, ProcessMemory):
        return memory.read_many(ranges)
    return [memory.read(addr, size) for addr, size in ranges]
