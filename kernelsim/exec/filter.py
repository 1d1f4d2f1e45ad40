"""The classic-BPF seccomp filter that sends a program's bpf and perf system calls to the
supervisor, and its installation.

Theory of operation
-------------------
Rules, in the order the filter applies them:

1. a system call of another architecture (a 32-bit or x32 call from an x86_64 program) fails
   with ENOSYS: its numbers mean other calls, and letting it through would reach the live
   kernel's bpf();
2. `bpf`, `perf_event_open` and `epoll_ctl` go to the supervisor (`epoll_ctl` so that a
   simulated fd can be waited on), and so do `openat`, `open` and `statfs` (the simulated
   sysfs, tracefs, procfs and bpffs files; everything else the supervisor lets continue);
3. `ioctl` goes to the supervisor when its command's _IOC_TYPE is the perf type '$'; any other
   ioctl never leaves the kernel;
4. `mmap` goes to the supervisor when it maps a file (MAP_ANONYMOUS clear);
5. everything else is allowed.

`assemble(arch)` is pure: it returns the filter as `struct sock_filter` records, with jumps
resolved from labels (`RULES` is the data it is built from). `install(program)` sets
no_new_privs and loads the filter with a new listener, preferring WAIT_KILLABLE_RECV; it runs in
the child, between fork and exec.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final

import attrs

from kernelsim.exec.seccomp import (
    BPF_ALU_AND_K,
    BPF_ALU_RSH_K,
    BPF_JMP_JEQ_K,
    BPF_JMP_JGE_K,
    BPF_JMP_JSET_K,
    BPF_LD_W_ABS,
    BPF_RET_K,
    DATA_ARCH_OFFSET,
    DATA_ARGS_OFFSET,
    DATA_NR_OFFSET,
    MAP_ANONYMOUS,
    PERF_IOC_TYPE,
    PR_SET_NO_NEW_PRIVS,
    SECCOMP_FILTER_FLAG_NEW_LISTENER,
    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_USER_NOTIF,
    SECCOMP_SET_MODE_FILTER,
    SOCK_FILTER,
    X32_SYSCALL_BIT,
    Arch,
)

NOTIFY: Final = "notify"
ALLOW: Final = "allow"
FOREIGN: Final = "foreign"
IOCTL_TYPE: Final = "ioctl_type"
MMAP_FLAGS: Final = "mmap_flags"

RULES: Final[tuple[tuple[str, str], ...]] = (
    ("bpf", NOTIFY),
    ("perf_event_open", NOTIFY),
    ("epoll_ctl", NOTIFY),
    ("openat", NOTIFY),
    ("open", NOTIFY),
    ("statfs", NOTIFY),
    ("ioctl", IOCTL_TYPE),
    ("mmap", MMAP_FLAGS),
)
"""System call name -> where the filter sends it (a verdict label or a check's label)."""

VERDICTS: Final = {
    NOTIFY: SECCOMP_RET_USER_NOTIF,
    ALLOW: SECCOMP_RET_ALLOW,
    FOREIGN: SECCOMP_RET_ERRNO | errno.ENOSYS,
}


def _arg_low(index: int) -> int:
    """The offset of the low 32 bits of args[index] (little-endian)."""
    return DATA_ARGS_OFFSET + 8 * index


@attrs.frozen
class _Insn:
    code: int
    k: int = 0
    jt: str | None = None
    """Label jumped to when the condition holds (None: the next instruction)."""
    jf: str | None = None
    label: str | None = None


def _program(arch: Arch) -> list[_Insn]:
    insns = [
        _Insn(BPF_LD_W_ABS, DATA_ARCH_OFFSET),
        _Insn(BPF_JMP_JEQ_K, arch.audit_arch, jf=FOREIGN),
        _Insn(BPF_LD_W_ABS, DATA_NR_OFFSET),
        _Insn(BPF_JMP_JGE_K, X32_SYSCALL_BIT, jt=FOREIGN),
    ]
    for name, target in RULES:
        nr = getattr(arch, name)
        if nr is not None:
            insns.append(_Insn(BPF_JMP_JEQ_K, nr, jt=target))
    insns += [
        _Insn(BPF_RET_K, VERDICTS[ALLOW]),
        # ioctl: _IOC_TYPE(cmd) == '$'
        _Insn(BPF_LD_W_ABS, _arg_low(1), label=IOCTL_TYPE),
        _Insn(BPF_ALU_RSH_K, 8),
        _Insn(BPF_ALU_AND_K, 0xFF),
        _Insn(BPF_JMP_JEQ_K, PERF_IOC_TYPE, jt=NOTIFY, jf=ALLOW),
        # mmap: a file mapping (MAP_ANONYMOUS clear in flags, args[3])
        _Insn(BPF_LD_W_ABS, _arg_low(3), label=MMAP_FLAGS),
        _Insn(BPF_JMP_JSET_K, MAP_ANONYMOUS, jt=ALLOW, jf=NOTIFY),
    ]
    insns += [_Insn(BPF_RET_K, value, label=label) for label, value in VERDICTS.items()]
    return insns


def assemble(arch: Arch) -> bytes:
    """The filter for `arch` as struct sock_filter records (module docstring)."""
    insns = _program(arch)
    where = {insn.label: index for index, insn in enumerate(insns) if insn.label is not None}

    def offset(index: int, label: str | None) -> int:
        if label is None:
            return 0
        jump = where[label] - index - 1
        if not 0 <= jump <= 0xFF:
            raise ValueError(f"jump to {label} out of range")
        return jump

    return b"".join(
        SOCK_FILTER.pack(insn.code, offset(i, insn.jt), offset(i, insn.jf), insn.k)
        for i, insn in enumerate(insns)
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@attrs.frozen
class Installed:
    """A loaded filter: its listener fd and whether the waits are killable only."""

    listener: int
    wait_killable: bool


def install(arch: Arch, program: bytes) -> Installed:
    """Set no_new_privs and load `program` with a new listener (OSError on failure)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code)}")
    records = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // SOCK_FILTER.size, ctypes.addressof(records))
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    for wait_killable in (True, False):
        if not wait_killable:
            flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        fd = syscall(
            ctypes.c_long(arch.seccomp),
            ctypes.c_long(SECCOMP_SET_MODE_FILTER),
            ctypes.c_long(flags),
            ctypes.byref(fprog),
        )
        if fd >= 0:
            return Installed(int(fd), wait_killable)
        code = ctypes.get_errno()
        if code != errno.EINVAL:
            break
    raise OSError(code, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(code)}")
