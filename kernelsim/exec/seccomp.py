"""The seccomp user-notification ABI (linux/seccomp.h) and the system calls exec intercepts.

Theory of operation
-------------------
Layouts are `struct.Struct` formats (a notification is unpacked and a reply packed on every
intercepted call, and `struct` does that several times faster than a ctypes mirror); the header
test (tests/test_exec_abi.py) compiles C against the installed headers and checks every size,
offset and constant here. `ARCHES` gives, for each supported machine, its AUDIT_ARCH value and
the numbers of the system calls the filter looks at; `native_arch()` is the one this process
runs on. Nothing here does I/O.
"""

from __future__ import annotations

import platform
import struct
from typing import Final

import attrs

# -- seccomp(2) operations and filter flags -------------------------------------------------------
SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: Final = 1 << 5
"""Since 5.19: once the supervisor has received a notification, only a fatal signal interrupts
the waiting task (so a signal never makes the call run twice)."""

# -- filter return values -------------------------------------------------------------------------
SECCOMP_RET_ERRNO: Final = 0x00050000
SECCOMP_RET_USER_NOTIF: Final = 0x7FC00000
SECCOMP_RET_ALLOW: Final = 0x7FFF0000

# -- replies and ADDFD ----------------------------------------------------------------------------
SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1
SECCOMP_ADDFD_FLAG_SETFD: Final = 1 << 0
SECCOMP_ADDFD_FLAG_SEND: Final = 1 << 1
"""Since 5.14: install the fd and reply with its number in one step."""


def _ioc(direction: int, number: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | number


_IOC_WRITE: Final = 1
_IOC_READ: Final = 2

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
SECCOMP_DATA: Final = struct.Struct("<iIQ6Q")
DATA_NR_OFFSET: Final = 0
DATA_ARCH_OFFSET: Final = 4
DATA_ARGS_OFFSET: Final = 16
# struct seccomp_notif { __u64 id; __u32 pid; __u32 flags; struct seccomp_data data; }
SECCOMP_NOTIF: Final = struct.Struct("<QII" + SECCOMP_DATA.format[1:])
# struct seccomp_notif_resp { __u64 id; __s64 val; __s32 error; __u32 flags; }
SECCOMP_NOTIF_RESP: Final = struct.Struct("<QqiI")
# struct seccomp_notif_addfd { __u64 id; __u32 flags; __u32 srcfd; __u32 newfd;
#                              __u32 newfd_flags; }
SECCOMP_NOTIF_ADDFD: Final = struct.Struct("<QIIII")

SECCOMP_IOCTL_NOTIF_RECV: Final = _ioc(_IOC_READ | _IOC_WRITE, 0, SECCOMP_NOTIF.size)
SECCOMP_IOCTL_NOTIF_SEND: Final = _ioc(_IOC_READ | _IOC_WRITE, 1, SECCOMP_NOTIF_RESP.size)
SECCOMP_IOCTL_NOTIF_ADDFD: Final = _ioc(_IOC_WRITE, 3, SECCOMP_NOTIF_ADDFD.size)

# -- classic BPF (linux/filter.h, linux/bpf_common.h) ---------------------------------------------
SOCK_FILTER: Final = struct.Struct("<HBBI")
"""struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }"""
BPF_LD_W_ABS: Final = 0x20
BPF_ALU_RSH_K: Final = 0x74
BPF_ALU_AND_K: Final = 0x54
BPF_JMP_JEQ_K: Final = 0x15
BPF_JMP_JGE_K: Final = 0x35
BPF_JMP_JSET_K: Final = 0x45
BPF_RET_K: Final = 0x06

# -- the system calls' own constants ------------------------------------------------------------
PR_SET_NO_NEW_PRIVS: Final = 38
MAP_ANONYMOUS: Final = 0x20
PERF_IOC_TYPE: Final = ord("$")
"""_IOC_TYPE of every perf event ioctl."""
X32_SYSCALL_BIT: Final = 0x40000000
EPOLL_CTL_ADD: Final = 1
EPOLL_CTL_DEL: Final = 2
EPOLL_CTL_MOD: Final = 3
EPOLLET: Final = 1 << 31
EPOLL_EVENT: Final = struct.Struct("<IQ")
"""struct epoll_event on x86_64 (packed: 12 bytes)."""
EPOLL_EVENT_ALIGNED: Final = struct.Struct("<IxxxxQ")
"""struct epoll_event where it is not packed (arm64: 16 bytes)."""
BPF_FS_MAGIC: Final = 0xCAFE4A11


@attrs.frozen
class Arch:
    """One machine's system call numbers and seccomp architecture value."""

    name: str
    audit_arch: int
    bpf: int
    perf_event_open: int
    ioctl: int
    mmap: int
    epoll_ctl: int
    openat: int
    open: int | None
    """Plain open(2): only where the architecture still has it."""
    statfs: int
    seccomp: int
    pidfd_open: int
    pidfd_getfd: int
    epoll_event: struct.Struct

    def intercepted(self) -> dict[int, str]:
        """Number -> name of the system calls whose every use is sent to the supervisor (ioctl
        and mmap are sent only in part, see `kernelsim.exec.filter`)."""
        names = ["bpf", "perf_event_open", "epoll_ctl", "openat", "open", "statfs"]
        found = {name: getattr(self, name) for name in names}
        return {nr: name for name, nr in found.items() if nr is not None}


ARCHES: Final = {
    "x86_64": Arch(
        name="x86_64",
        audit_arch=0xC000003E,
        bpf=321,
        perf_event_open=298,
        ioctl=16,
        mmap=9,
        epoll_ctl=233,
        openat=257,
        open=2,
        statfs=137,
        seccomp=317,
        pidfd_open=434,
        pidfd_getfd=438,
        epoll_event=EPOLL_EVENT,
    ),
    "aarch64": Arch(
        name="aarch64",
        audit_arch=0xC00000B7,
        bpf=280,
        perf_event_open=241,
        ioctl=29,
        mmap=222,
        epoll_ctl=21,
        openat=56,
        open=None,
        statfs=43,
        seccomp=277,
        pidfd_open=434,
        pidfd_getfd=438,
        epoll_event=EPOLL_EVENT_ALIGNED,
    ),
}


def native_arch() -> Arch:
    """The architecture of this process; KeyError for one exec does not support."""
    return ARCHES[platform.machine()]
