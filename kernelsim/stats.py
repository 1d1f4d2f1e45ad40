"""BPF_ENABLE_STATS: run_cnt and run_time_ns are counted while a stats fd is open.

Theory of operation
-------------------
ENABLE_STATS (5.8) checks CHECK_ATTR (dispatch), then CAP_SYS_ADMIN (EPERM), then the stats
type: only BPF_STATS_RUN_TIME exists (EINVAL otherwise). Each call returns a new fd of a
`StatsFd`; `kernel.stats_enabled` counts the live ones, and the last close of each fd drops its
count again (bpf_stats_release). Programs count their runs while the count is positive.

The sysctl /proc/sys/kernel/bpf_stats_enabled (bpf_stats_handler) is one more holder of that
count: writing 1 takes it, 0 drops it (CAP_SYS_ADMIN, else EPERM; other values EINVAL). Reading
gives the sysctl's own setting, not whether stats are on: 0 while only stats fds are open.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from bpfsys.abi import BpfCmd, BpfProgInfo, EnableStatsAttr, StatsType
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import fail
from kernelsim.objects import KernelObject

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel


class StatsFd(KernelObject):
    """The object behind an ENABLE_STATS fd: run-time stats stay on while it lives."""

    anon_name = "bpf-stats"

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel.objects)
        self.kernel = kernel
        kernel.stats_enabled += 1

    def release(self) -> None:
        self.kernel.stats_enabled -= 1


class StatsSysctl:
    """The bpf_stats_enabled sysctl's own setting."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.value = 0

    def read(self) -> bytes:
        return f"{self.value}\n".encode()

    def write(self, data: bytes) -> None:
        if not self.kernel.capable_sys_admin():
            fail(errno.EPERM, "writing bpf_stats_enabled needs CAP_SYS_ADMIN")
        try:
            value = int(data.strip())
        except ValueError:
            fail(errno.EINVAL, f"not a number: {data!r}")
        if value not in (0, 1):
            fail(errno.EINVAL, f"bpf_stats_enabled takes 0 or 1, not {value}")
        self.kernel.stats_enabled += value - self.value
        self.value = value


@bpf_command(BpfCmd.ENABLE_STATS)
def enable_stats(call: BpfCall) -> int:
    attr = call.attr_as(EnableStatsAttr)
    kernel = call.kernel
    if not kernel.capable_sys_admin():
        fail(errno.EPERM, "BPF_ENABLE_STATS needs CAP_SYS_ADMIN")
    if attr.type != StatsType.RUN_TIME:
        fail(errno.EINVAL, f"unknown stats type {attr.type}")
    return kernel.fds.install(StatsFd(kernel), os.O_RDONLY)


def boot(kernel: Kernel) -> None:
    sysctl = kernel.subsystem(StatsSysctl)
    if BpfProgInfo.field_since("run_cnt") <= kernel.profile.version:  # the sysctl came in 5.1
        kernel.vfs.add("/proc/sys/kernel/bpf_stats_enabled", sysctl.read, sysctl.write)
