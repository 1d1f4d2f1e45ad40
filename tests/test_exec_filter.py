"""kernelsim exec: the seccomp filter (sans-IO) and the seccomp ABI mirrors.

The filter is run on a small classic-BPF interpreter written here from the kernel's
documentation (Documentation/networking/filter.rst), independently of the assembler, and its
verdicts are checked against the rules of kernelsim.exec.filter's docstring, one by one and for
random system calls (hypothesis). The ABI constants are checked against linux/seccomp.h by a C
program compiled with gcc.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelsim.exec import seccomp
from kernelsim.exec.filter import assemble
from kernelsim.exec.seccomp import ARCHES, SECCOMP_DATA, SOCK_FILTER, Arch

NOTIFY = seccomp.SECCOMP_RET_USER_NOTIF
ALLOW = seccomp.SECCOMP_RET_ALLOW
ENOSYS = seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS
X86 = ARCHES["x86_64"]


def run_filter(program: bytes, data: bytes) -> int:
    """Run a classic BPF program over seccomp_data bytes (the subset seccomp allows)."""
    insns = [SOCK_FILTER.unpack_from(program, i) for i in range(0, len(program), SOCK_FILTER.size)]
    acc = 0
    pc = 0
    for _ in range(len(insns) + 1):
        code, jt, jf, k = insns[pc]
        pc += 1
        cls, op = code & 0x07, code & 0xF0
        if code == 0x20:  # ld w abs
            acc = int.from_bytes(data[k : k + 4], "little")
        elif cls == 0x04:  # alu k
            acc = {0x70: acc >> k, 0x50: acc & k}[op] & 0xFFFFFFFF
        elif cls == 0x05:  # jmp k
            taken = {0x10: acc == k, 0x30: acc >= k, 0x40: bool(acc & k)}[op]
            pc += jt if taken else jf
        elif code == 0x06:  # ret k
            return int(k)
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("the filter did not return")


def seccomp_data(arch: Arch, nr: int, *args: int, audit: int | None = None) -> bytes:
    padded = (list(args) + [0] * 6)[:6]
    return SECCOMP_DATA.pack(nr, arch.audit_arch if audit is None else audit, 0, *padded)


@pytest.mark.parametrize("arch", list(ARCHES.values()), ids=list(ARCHES))
def test_every_rule_of_the_filter(arch: Arch) -> None:
    program = assemble(arch)

    def verdict(nr: int, *args: int, audit: int | None = None) -> int:
        return run_filter(program, seccomp_data(arch, nr, *args, audit=audit))

    for name in ("bpf", "perf_event_open", "epoll_ctl", "openat", "statfs"):
        assert verdict(getattr(arch, name)) == NOTIFY, name
    if arch.open is not None:
        assert verdict(arch.open) == NOTIFY
    perf_enable = 0x2400
    tcgets = 0x5401
    assert verdict(arch.ioctl, 3, perf_enable) == NOTIFY
    assert verdict(arch.ioctl, 3, 0xFFFFFFFF_00002400) == NOTIFY  # the kernel uses 32 bits
    assert verdict(arch.ioctl, 3, tcgets) == ALLOW
    assert verdict(arch.mmap, 0, 4096, 3, 0x01, 5, 0) == NOTIFY  # MAP_SHARED of fd 5
    assert verdict(arch.mmap, 0, 4096, 3, 0x22, 0xFFFFFFFF, 0) == ALLOW  # anonymous
    assert verdict(arch.seccomp) == ALLOW
    assert verdict(0x40000000 | arch.bpf) == ENOSYS  # x32
    assert verdict(arch.bpf, audit=0x40000003) == ENOSYS  # i386


def _reference(arch: Arch, nr: int, audit: int, args: list[int]) -> int:
    """The rules of the module docstring, written plainly."""
    if audit != arch.audit_arch or nr >= 0x40000000:
        return ENOSYS
    if nr in arch.intercepted():
        return NOTIFY
    if nr == arch.ioctl:
        return NOTIFY if (args[1] >> 8) & 0xFF == ord("$") else ALLOW
    if nr == arch.mmap:
        return ALLOW if args[3] & 0x20 else NOTIFY
    return ALLOW


@settings(max_examples=300, deadline=None)
@given(
    arch_name=st.sampled_from(sorted(ARCHES)),
    nr=st.one_of(st.integers(0, 500), st.integers(0, 0x7FFFFFFF)),
    foreign=st.booleans(),
    args=st.lists(st.integers(0, (1 << 64) - 1), min_size=6, max_size=6),
)
def test_filter_matches_the_rules(arch_name: str, nr: int, foreign: bool, args: list[int]) -> None:
    arch = ARCHES[arch_name]
    audit = 0x40000003 if foreign else arch.audit_arch
    data = seccomp_data(arch, nr, *args, audit=audit)
    assert run_filter(assemble(arch), data) == _reference(arch, nr, audit, args)


C_CHECK = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/seccomp.h>
#include <linux/filter.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#define P(name, value) printf("%s %llu\n", name, (unsigned long long)(value))
int main(void) {
    P("SECCOMP_DATA", sizeof(struct seccomp_data));
    P("SECCOMP_NOTIF", sizeof(struct seccomp_notif));
    P("SECCOMP_NOTIF_RESP", sizeof(struct seccomp_notif_resp));
    P("SECCOMP_NOTIF_ADDFD", sizeof(struct seccomp_notif_addfd));
    P("SOCK_FILTER", sizeof(struct sock_filter));
    P("DATA_ARGS_OFFSET", offsetof(struct seccomp_data, args));
    P("DATA_ARCH_OFFSET", offsetof(struct seccomp_data, arch));
    P("SECCOMP_IOCTL_NOTIF_RECV", SECCOMP_IOCTL_NOTIF_RECV);
    P("SECCOMP_IOCTL_NOTIF_SEND", SECCOMP_IOCTL_NOTIF_SEND);
    P("SECCOMP_IOCTL_NOTIF_ADDFD", SECCOMP_IOCTL_NOTIF_ADDFD);
    P("SECCOMP_FILTER_FLAG_NEW_LISTENER", SECCOMP_FILTER_FLAG_NEW_LISTENER);
    P("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
    P("SECCOMP_RET_USER_NOTIF", SECCOMP_RET_USER_NOTIF);
    P("SECCOMP_USER_NOTIF_FLAG_CONTINUE", SECCOMP_USER_NOTIF_FLAG_CONTINUE);
    P("SECCOMP_ADDFD_FLAG_SEND", SECCOMP_ADDFD_FLAG_SEND);
    P("SECCOMP_ADDFD_FLAG_SETFD", SECCOMP_ADDFD_FLAG_SETFD);
    P("bpf", SYS_bpf);
    P("perf_event_open", SYS_perf_event_open);
    P("ioctl", SYS_ioctl);
    P("mmap", SYS_mmap);
    P("epoll_ctl", SYS_epoll_ctl);
    P("openat", SYS_openat);
    P("statfs", SYS_statfs);
    P("seccomp", SYS_seccomp);
    P("pidfd_open", SYS_pidfd_open);
    P("pidfd_getfd", SYS_pidfd_getfd);
    return 0;
}
"""


def test_abi_matches_the_installed_headers(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/linux/seccomp.h").exists():
        pytest.skip("needs gcc and the kernel headers (linux/seccomp.h)")
    source = tmp_path / "check.c"
    source.write_text(C_CHECK)
    subprocess.run([gcc, "-o", str(tmp_path / "check"), str(source)], check=True)
    output = subprocess.run([str(tmp_path / "check")], capture_output=True, text=True, check=True)
    found = dict(line.split() for line in output.stdout.splitlines())
    arch = seccomp.native_arch()
    expected = {
        "SECCOMP_DATA": SECCOMP_DATA.size,
        "SECCOMP_NOTIF": seccomp.SECCOMP_NOTIF.size,
        "SECCOMP_NOTIF_RESP": seccomp.SECCOMP_NOTIF_RESP.size,
        "SECCOMP_NOTIF_ADDFD": seccomp.SECCOMP_NOTIF_ADDFD.size,
        "SOCK_FILTER": SOCK_FILTER.size,
        "DATA_ARGS_OFFSET": seccomp.DATA_ARGS_OFFSET,
        "DATA_ARCH_OFFSET": seccomp.DATA_ARCH_OFFSET,
        "SECCOMP_IOCTL_NOTIF_RECV": seccomp.SECCOMP_IOCTL_NOTIF_RECV,
        "SECCOMP_IOCTL_NOTIF_SEND": seccomp.SECCOMP_IOCTL_NOTIF_SEND,
        "SECCOMP_IOCTL_NOTIF_ADDFD": seccomp.SECCOMP_IOCTL_NOTIF_ADDFD,
        "SECCOMP_FILTER_FLAG_NEW_LISTENER": seccomp.SECCOMP_FILTER_FLAG_NEW_LISTENER,
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": seccomp.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        "SECCOMP_RET_USER_NOTIF": seccomp.SECCOMP_RET_USER_NOTIF,
        "SECCOMP_USER_NOTIF_FLAG_CONTINUE": seccomp.SECCOMP_USER_NOTIF_FLAG_CONTINUE,
        "SECCOMP_ADDFD_FLAG_SEND": seccomp.SECCOMP_ADDFD_FLAG_SEND,
        "SECCOMP_ADDFD_FLAG_SETFD": seccomp.SECCOMP_ADDFD_FLAG_SETFD,
        **{name: getattr(arch, name) for name in (
            "bpf", "perf_event_open", "ioctl", "mmap", "epoll_ctl", "openat", "statfs",
            "seccomp", "pidfd_open", "pidfd_getfd",
        )},
    }  # fmt: skip
    assert {name: int(value) for name, value in found.items()} == expected
