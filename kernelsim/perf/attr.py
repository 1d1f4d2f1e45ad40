"""perf_copy_attr: reading and checking a `struct perf_event_attr` from the caller.

Theory of operation
-------------------
The kernel reads `size` first (0 means PERF_ATTR_SIZE_VER0); a size below VER0 or above the
page size, or a larger-than-known attr whose extra bytes are not all zero, is E2BIG, and the
kernel then writes its own sizeof(struct perf_event_attr) (`Profile.perf_attr_size`) into the
caller's `size`. The known prefix is copied into a zeroed attr (short attrs read as zeros).
Then, in the kernel's order, each field is checked against what this kernel version knows:
reserved flag bits, `__reserved_2` and the unknown bits of the aux-action word, sample_type and
read_format bits beyond PERF_SAMPLE_MAX / PERF_FORMAT_MAX, branch sample bits, the x86 register
masks, the user stack size, and the flag combinations (inherit_thread without inherit,
remove_on_exec with enable_on_exec, sigtrap without remove_on_exec) are EINVAL; branch sampling
of the kernel's privilege levels needs perf_allow_kernel (EACCES).

The attr comes from a buffer handed to perf_event_open (`BufferAttr`) or from a pointer in user
memory for PERF_EVENT_IOC_MODIFY_ATTRIBUTES (`UserAttr`); reading beyond either is EFAULT.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import struct
from typing import TYPE_CHECKING, Final, Protocol

from bpfsys.abi import (
    PERF_ATTR_SIZE_VER0,
    PerfAttrFlag,
    PerfEventAttr,
    ReadFormat,
    SampleType,
)
from bpfsys.kversion import KernelVersion, since
from kernelsim.errors import fail

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.usermem import UserMemory

_SIZE_OFFSET: Final = PerfEventAttr.size.offset

# enum perf_branch_sample_type_shift: the number of branch bits each release knew.
_BRANCH_BITS_SINCE: Final = (
    ("2.6", 11),  # USER .. COND
    ("4.1", 12),  # CALL_STACK
    ("4.2", 13),  # IND_JUMP
    ("4.4", 14),  # CALL
    ("4.14", 17),  # NO_FLAGS, NO_CYCLES, TYPE_SAVE
    ("5.7", 18),  # HW_INDEX
    ("6.1", 19),  # PRIV_SAVE
    ("6.8", 20),  # COUNTERS
)
BRANCH_PLM_ALL: Final = 0b111
"""PERF_SAMPLE_BRANCH_USER | KERNEL | HV: privilege levels, not branch types."""
BRANCH_PERM_PLM: Final = 0b110
"""PERF_SAMPLE_BRANCH_KERNEL | HV: the levels that need perf_allow_kernel."""

# The aux-action word (where __reserved_3 was): aux_start_paused, aux_pause, aux_resume.
AUX_START_PAUSED: Final = 1 << 0
AUX_PAUSE: Final = 1 << 1
AUX_RESUME: Final = 1 << 2
_AUX_ACTION_SINCE: Final = "6.13"

# x86_64 perf registers (arch/x86/include/uapi/asm/perf_regs.h).
X86_REG_NOSUPPORT: Final = 0xF << 12  # DS, ES, FS, GS
X86_REG_RESERVED: Final = ((1 << 32) - 1) & ~((1 << 24) - 1)
X86_REG_EXTENDED: Final = ~((1 << 32) - 1) & ((1 << 64) - 1)  # XMM registers: PMU capability
USHRT_MAX: Final = 0xFFFF


def branch_known_mask(version: KernelVersion) -> int:
    """The branch_sample_type bits `version` knew (below PERF_SAMPLE_BRANCH_MAX)."""
    bits = max(count for added, count in _BRANCH_BITS_SINCE if since(added) <= version)
    return (1 << bits) - 1


def aux_action_known(version: KernelVersion) -> int:
    """The aux-action bits `version` knew (none before 6.13: the word was reserved)."""
    if since(_AUX_ACTION_SINCE) <= version:
        return AUX_START_PAUSED | AUX_PAUSE | AUX_RESUME
    return 0


class AttrSource(Protocol):
    """Where an attr is read from and its `size` written back to."""

    def read(self, offset: int, size: int) -> bytes: ...

    def write_size(self, size: int) -> None: ...


class BufferAttr:
    """The attr buffer given to perf_event_open."""

    def __init__(self, view: memoryview) -> None:
        self.view = view

    def read(self, offset: int, size: int) -> bytes:
        if offset + size > len(self.view):
            fail(errno.EFAULT, f"attr buffer of {len(self.view)} bytes, {offset + size} read")
        return bytes(self.view[offset : offset + size])

    def write_size(self, size: int) -> None:
        if len(self.view) >= _SIZE_OFFSET + 4:
            self.view[_SIZE_OFFSET : _SIZE_OFFSET + 4] = struct.pack("<I", size)


class UserAttr:
    """An attr in user memory at `addr` (PERF_EVENT_IOC_MODIFY_ATTRIBUTES)."""

    def __init__(self, memory: UserMemory, addr: int) -> None:
        self.memory = memory
        self.addr = addr

    def read(self, offset: int, size: int) -> bytes:
        return self.memory.read(self.addr + offset, size)

    def write_size(self, size: int) -> None:
        with contextlib.suppress(OSError):  # put_user's failure is ignored: E2BIG all the same
            self.memory.write(self.addr + _SIZE_OFFSET, struct.pack("<I", size))


def perf_allow_kernel(kernel: Kernel) -> None:
    """EACCES for profiling the kernel where perf_event_paranoid > 1 and not CAP_PERFMON."""
    if kernel.sysctl["perf_event_paranoid"] > 1 and not kernel.perfmon_capable():
        fail(errno.EACCES, "kernel profiling needs CAP_PERFMON (perf_event_paranoid > 1)")


def perf_reg_validate(mask: int) -> None:
    """x86_64 perf_reg_validate: EINVAL for no register or DS/ES/FS/GS/reserved ones."""
    if not mask or mask & (X86_REG_NOSUPPORT | X86_REG_RESERVED):
        fail(errno.EINVAL, f"register mask {mask:#x} names no register or unsupported ones")


def _size_error(kernel: Kernel, source: AttrSource, why: str) -> None:
    source.write_size(kernel.profile.perf_attr_size)
    fail(errno.E2BIG, why)


def read_attr(kernel: Kernel, source: AttrSource) -> PerfEventAttr:
    """The attr as the kernel copies it (size rules of the module docstring), unchecked."""
    (size,) = struct.unpack("<I", source.read(_SIZE_OFFSET, 4))
    known = kernel.profile.perf_attr_size
    if size == 0:
        size = PERF_ATTR_SIZE_VER0
    if size < PERF_ATTR_SIZE_VER0 or size > kernel.config.page_size:
        _size_error(kernel, source, f"attr size {size} out of range")
    data = source.read(0, size)
    if size > known and any(data[known:]):
        _size_error(kernel, source, f"non-zero bytes beyond this kernel's {known}-byte attr")
    image = bytearray(ctypes.sizeof(PerfEventAttr))
    image[: min(size, known)] = data[: min(size, known)]
    attr = PerfEventAttr.from_buffer_copy(image)
    attr.size = size
    return attr


def copy_attr(kernel: Kernel, source: AttrSource) -> PerfEventAttr:
    """perf_copy_attr: the attr, checked (errors of the module docstring)."""
    attr = read_attr(kernel, source)
    profile = kernel.profile
    version = kernel.config.version
    if attr.flags & ~profile.known_flags(PerfAttrFlag):
        fail(errno.EINVAL, f"reserved attr flag bits {attr.flags:#x}")
    if attr._reserved_2 or attr._reserved_3 & ~aux_action_known(version):
        fail(errno.EINVAL, "reserved attr fields are not zero")
    if attr.sample_type & ~profile.known_flags(SampleType):
        fail(errno.EINVAL, f"unknown sample_type bits {attr.sample_type:#x}")
    if attr.read_format & ~profile.known_flags(ReadFormat):
        fail(errno.EINVAL, f"unknown read_format bits {attr.read_format:#x}")
    if attr.sample_type & SampleType.BRANCH_STACK:
        mask = attr.branch_sample_type
        if mask & ~branch_known_mask(version):
            fail(errno.EINVAL, f"unknown branch_sample_type bits {mask:#x}")
        if not mask & ~BRANCH_PLM_ALL:
            fail(errno.EINVAL, "branch_sample_type has privilege levels but no branch type")
        if mask & BRANCH_PERM_PLM:
            perf_allow_kernel(kernel)
    if attr.sample_type & SampleType.REGS_USER:
        perf_reg_validate(attr.sample_regs_user)
    if attr.sample_type & SampleType.STACK_USER:
        stack = attr.sample_stack_user
        if stack >= USHRT_MAX or stack % 8:
            fail(errno.EINVAL, f"sample_stack_user {stack} too big or not 8-byte aligned")
    if attr.sample_type & SampleType.REGS_INTR:
        perf_reg_validate(attr.sample_regs_intr)
    if attr.sample_type & SampleType.WEIGHT and attr.sample_type & SampleType.WEIGHT_STRUCT:
        fail(errno.EINVAL, "PERF_SAMPLE_WEIGHT and PERF_SAMPLE_WEIGHT_STRUCT together")
    flags = attr.flags
    if flags & PerfAttrFlag.INHERIT_THREAD and not flags & PerfAttrFlag.INHERIT:
        fail(errno.EINVAL, "inherit_thread without inherit")
    if flags & PerfAttrFlag.REMOVE_ON_EXEC and flags & PerfAttrFlag.ENABLE_ON_EXEC:
        fail(errno.EINVAL, "remove_on_exec with enable_on_exec")
    if flags & PerfAttrFlag.SIGTRAP and not flags & PerfAttrFlag.REMOVE_ON_EXEC:
        fail(errno.EINVAL, "sigtrap without remove_on_exec")
    return attr


def has_flag(attr: PerfEventAttr, flag: PerfAttrFlag) -> bool:
    """Whether the attr bit field `flag` is set."""
    return bool(attr.flags & flag)


def is_sampling(attr: PerfEventAttr) -> bool:
    """is_sampling_event: a non-zero sample_period (or sample_freq)."""
    return bool(attr.sample_period != 0)
