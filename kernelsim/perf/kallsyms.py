"""The kernel symbols of the simulated kernel: /proc/kallsyms and the kprobe targets.

Theory of operation
-------------------
A small, realistic x86_64 symbol table: the syscall entry points, the VFS, scheduler, process,
memory and network functions that programs commonly probe, laid out from _stext with plausible
sizes. A kprobe may target a text symbol (`T` or `t`) by name or address, at an offset inside
the function; the entry code (`entry_*`) is on the kprobe blacklist and not listed in
available_filter_functions. /proc/kallsyms shows real addresses only to CAP_SYSLOG-capable
readers or where perf_event_paranoid <= 1 (kallsyms_show_value), zeros otherwise.
"""

from __future__ import annotations

from typing import Final

import attrs

TEXT_START: Final = 0xFFFF_FFFF_8100_0000
DATA_START: Final = 0xFFFF_FFFF_8300_0000


@attrs.frozen
class Symbol:
    """A kernel symbol: its name, address, size and kallsyms type letter."""

    name: str
    address: int
    size: int
    kind: str

    @property
    def is_text(self) -> bool:
        return self.kind in "Tt"

    @property
    def probeable(self) -> bool:
        return self.is_text and not self.name.startswith(("entry_", "_stext", "_text"))


_TEXT: Final = (
    ("_stext", 0x10, "T"),
    ("entry_SYSCALL_64", 0x90, "T"),
    ("do_syscall_64", 0x120, "T"),
    ("__x64_sys_getpid", 0x30, "T"),
    ("__x64_sys_getppid", 0x40, "T"),
    ("__x64_sys_gettid", 0x30, "T"),
    ("__x64_sys_getuid", 0x30, "T"),
    ("__x64_sys_getpgid", 0x60, "T"),
    ("__x64_sys_read", 0x20, "T"),
    ("__x64_sys_write", 0x20, "T"),
    ("__x64_sys_openat", 0x60, "T"),
    ("__x64_sys_close", 0x50, "T"),
    ("__x64_sys_execve", 0x50, "T"),
    ("__x64_sys_clone", 0x70, "T"),
    ("__x64_sys_mmap", 0x40, "T"),
    ("__x64_sys_munmap", 0x40, "T"),
    ("__x64_sys_bpf", 0x30, "T"),
    ("__x64_sys_perf_event_open", 0x40, "T"),
    ("__x64_sys_nanosleep", 0x60, "T"),
    ("__x64_sys_kill", 0x90, "T"),
    ("__x64_sys_exit_group", 0x20, "T"),
    ("__x64_sys_ioctl", 0xA0, "T"),
    ("__x64_sys_connect", 0x30, "T"),
    ("__x64_sys_sendto", 0x30, "T"),
    ("__x64_sys_recvfrom", 0x30, "T"),
    ("__x64_sys_futex", 0x150, "T"),
    ("__x64_sys_unlinkat", 0x50, "T"),
    ("ksys_read", 0xE0, "T"),
    ("ksys_write", 0xE0, "T"),
    ("vfs_read", 0x1B0, "T"),
    ("vfs_write", 0x2A0, "T"),
    ("vfs_open", 0x40, "T"),
    ("vfs_unlink", 0x1F0, "T"),
    ("vfs_fsync_range", 0x80, "T"),
    ("do_sys_openat2", 0x100, "T"),
    ("do_filp_open", 0x120, "T"),
    ("filp_close", 0x70, "T"),
    ("do_unlinkat", 0x2D0, "T"),
    ("security_file_open", 0x60, "T"),
    ("do_execveat_common", 0x1E0, "t"),
    ("kernel_clone", 0x350, "T"),
    ("wake_up_new_task", 0x220, "T"),
    ("do_exit", 0xA60, "T"),
    ("do_group_exit", 0xA0, "T"),
    ("try_to_wake_up", 0x5B0, "T"),
    ("finish_task_switch", 0x270, "t"),
    ("__schedule", 0xB30, "t"),
    ("schedule", 0xC0, "T"),
    ("exc_page_fault", 0x90, "T"),
    ("handle_mm_fault", 0x1D0, "T"),
    ("__kmalloc_noprof", 0x2E0, "T"),
    ("kmem_cache_alloc_noprof", 0x290, "T"),
    ("kfree", 0x2B0, "T"),
    ("tcp_v4_connect", 0x550, "T"),
    ("tcp_connect", 0x9F0, "T"),
    ("tcp_sendmsg", 0x40, "T"),
    ("tcp_recvmsg", 0x1E0, "T"),
    ("tcp_close", 0x80, "T"),
    ("tcp_set_state", 0x150, "T"),
    ("inet_csk_accept", 0x2C0, "T"),
    ("udp_sendmsg", 0xB90, "T"),
    ("udp_recvmsg", 0x480, "T"),
    ("ip_output", 0xD0, "T"),
    ("ip_rcv", 0xC0, "T"),
    ("__dev_queue_xmit", 0xE70, "T"),
    ("__netif_receive_skb", 0x60, "t"),
    ("sk_skb_reason_drop", 0xE0, "T"),
    ("consume_skb", 0x90, "T"),
    ("blk_mq_start_request", 0x120, "T"),
    ("__sys_bpf", 0x1F60, "t"),
    ("bpf_prog_load", 0xF80, "t"),
    ("bpf_trace_printk", 0xD0, "T"),
    ("perf_event_output", 0x70, "T"),
)
_DATA: Final = (
    ("init_task", 0x2A40, "D"),
    ("jiffies", 0x8, "D"),
    ("nr_cpu_ids", 0x4, "D"),
)


def _lay_out(entries: tuple[tuple[str, int, str], ...], start: int) -> list[Symbol]:
    symbols: list[Symbol] = []
    address = start
    for name, size, kind in entries:
        symbols.append(Symbol(name, address, size, kind))
        address += (size + 0xF) & ~0xF
    return symbols


SYMBOLS: Final = (*_lay_out(_TEXT, TEXT_START), *_lay_out(_DATA, DATA_START))
"""The simulated kernel's symbols, by address."""
_BY_NAME: Final = {symbol.name: symbol for symbol in SYMBOLS}


def kprobe_symbol(target: str | int) -> Symbol | None:
    """The probeable function named `target`, or whose body holds address `target`."""
    if isinstance(target, str):
        found = _BY_NAME.get(target)
        return found if found is not None and found.probeable else None
    for symbol in SYMBOLS:
        if symbol.probeable and symbol.address <= target < symbol.address + symbol.size:
            return symbol
    return None


def kallsyms(show_addresses: bool) -> bytes:
    """/proc/kallsyms."""
    lines = (
        f"{symbol.address if show_addresses else 0:016x} {symbol.kind} {symbol.name}\n"
        for symbol in SYMBOLS
    )
    return "".join(lines).encode()


def available_filter_functions() -> bytes:
    """tracefs available_filter_functions: the functions ftrace and kprobes can attach to."""
    return "".join(f"{s.name}\n" for s in SYMBOLS if s.probeable).encode()
