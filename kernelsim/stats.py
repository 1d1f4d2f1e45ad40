"""BPF_ENABLE_STATS: run_cnt and run_time_ns are counted while a stats fd is open.

Theory of operation
-------------------
ENABLE_STATS (5.8) checks CHECK_ATTR (dispatch), then CAP_SYS_ADMIN (EPERM), then the stats
type: only BPF_STATS_RUN_TIME exists (EINVAL otherwise). Each call returns a new fd of a
`StatsFd`; `kernel.stats_enabled` counts the live ones, and the last close of each fd drops its
count again (bpf_stats_release). Programs count their runs while the count is positive.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from bpfsys.abi import BpfCmd, EnableStatsAttr, StatsType
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


@bpf_command(BpfCmd.ENABLE_STATS)
def enable_stats(call: BpfCall) -> int:
    attr = call.attr_as(EnableStatsAttr)
    kernel = call.kernel
    if not kernel.capable_sys_admin():
        fail(errno.EPERM, "BPF_ENABLE_STATS needs CAP_SYS_ADMIN")
    if attr.type != StatsType.RUN_TIME:
        fail(errno.EINVAL, f"unknown stats type {attr.type}")
    return kernel.fds.install(StatsFd(kernel), os.O_RDONLY)
