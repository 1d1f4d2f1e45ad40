"""Memory that probe reads see: `kernel.subsystem(SimulatedMemory)`.

Theory of operation
-------------------
A program's probe reads (bpf_probe_read_user / _kernel and friends) reach memory outside the
program: the current task's user memory, or kernel memory. The simulator has neither, so a test
provides it: `map(address, data, user=True)` makes `data` readable at `address` as user memory
of whatever task is current (user=False: as kernel memory). Mappings are byte strings at fixed
addresses; a read crossing from one mapping into the next adjacent one continues there.

User memory falls back to the simulated process's own memory (read through kernel.memory, as
copy_from_user would) when the current task is this process, so a program run by
BPF_PROG_TEST_RUN reads the caller's buffers as on the live kernel.

Address rules (x86_64, 4-level paging), which decide the errno before any byte is read:

| read   | address                                      | result   |
|--------|----------------------------------------------|----------|
| user   | the range not below TASK_SIZE_MAX            | -EFAULT  |
| kernel | below TASK_SIZE_MAX + PAGE_SIZE, or not      | -ERANGE  |
|        | canonical (bits 63..47 not all equal)        |          |
| either | a byte no mapping (or fallback) provides     | -EFAULT  |
"""

from __future__ import annotations

import bisect
import os
from typing import TYPE_CHECKING, Final

from kernelsim.current import Current

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

TASK_SIZE_MAX: Final = (1 << 47) - 4096
"""The end of user space on x86_64 with 4-level page tables (TASK_SIZE of a 64-bit task)."""
VIRT_BITS: Final = 48
U64: Final = (1 << 64) - 1


def user_range_ok(address: int, size: int) -> bool:
    """access_ok: the whole range lies below TASK_SIZE_MAX."""
    return address <= TASK_SIZE_MAX and size <= TASK_SIZE_MAX - address


def kernel_address_ok(address: int, page_size: int) -> bool:
    """copy_from_kernel_nofault_allowed: above user space (and its guard page), canonical."""
    if address < TASK_SIZE_MAX + page_size:
        return False
    top = address >> (VIRT_BITS - 1)
    return top == (U64 >> (VIRT_BITS - 1))


class SimulatedMemory:
    """User and kernel memory for probe reads (module docstring)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._starts: dict[bool, list[int]] = {True: [], False: []}
        self._data: dict[bool, dict[int, bytes]] = {True: {}, False: {}}

    def map(self, address: int, data: bytes, *, user: bool) -> None:
        """Make `data` readable at `address` (replacing a mapping that starts there)."""
        if not 0 <= address <= U64 - len(data):
            raise ValueError(f"{len(data)} bytes do not fit at {address:#x}")
        starts = self._starts[user]
        if address not in self._data[user]:
            bisect.insort(starts, address)
        self._data[user][address] = bytes(data)

    def unmap(self, address: int, *, user: bool) -> None:
        """Forget the mapping that starts at `address`."""
        del self._data[user][address]
        self._starts[user].remove(address)

    def _piece(self, address: int, user: bool) -> bytes | None:
        """The mapped bytes from `address` to the end of its mapping (None: unmapped)."""
        starts = self._starts[user]
        index = bisect.bisect_right(starts, address) - 1
        if index < 0:
            return None
        start = starts[index]
        data = self._data[user][start]
        return data[address - start :] if address < start + len(data) else None

    def _fallback(self, address: int, size: int) -> bytes | None:
        if self.kernel.subsystem(Current).task.tgid != os.getpid():
            return None
        try:
            return self.kernel.memory.read(address, size)
        except OSError:
            return None

    def read(self, address: int, size: int, *, user: bool) -> bytes | None:
        """`size` bytes at `address`, or None when any of them is not readable."""
        out = bytearray()
        while len(out) < size:
            at = address + len(out)
            piece = self._piece(at, user)
            if piece is None:
                rest = self._fallback(at, size - len(out)) if user else None
                if rest is None:
                    return None
                out += rest
                break
            out += piece[: size - len(out)]
        return bytes(out)

    def read_string(self, address: int, limit: int, *, user: bool) -> tuple[bytes, bool]:
        """Up to `limit` bytes from `address`, stopping after a NUL: (the bytes read, whether
        the read stopped because a byte was not readable)."""
        out = bytearray()
        while len(out) < limit:
            byte = self.read(address + len(out), 1, user=user)
            if byte is None:
                return bytes(out), True
            out += byte
            if byte == b"\0":
                break
        return bytes(out), False
