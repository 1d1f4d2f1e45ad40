"""Helpers about the current task, the clocks, and the attach point of the run.

| helper                   | returns                                                        |
|--------------------------|----------------------------------------------------------------|
| get_current_pid_tgid     | tgid << 32 | pid of the current task                           |
| get_current_uid_gid      | gid << 32 | uid                                                |
| get_current_comm         | 0; the comm copied with strscpy_pad (cut to size - 1, NUL-padded)|
| get_current_task         | an opaque, non-zero task_struct address (per pid)              |
| ktime_get_boot_ns        | the virtual clock (the simulated machine never suspends)       |
| ktime_get_coarse_ns      | the virtual clock at the last tick (HZ = 250: 4 ms ticks)      |
| jiffies64                | INITIAL_JIFFIES + the ticks of the virtual clock               |
| get_func_ip              | the run context's probed address (kprobe at entry, uprobe)     |
| get_attach_cookie        | the run context's bpf cookie                                   |

The current task and run context are `kernelsim.current.Current`'s.
"""

from __future__ import annotations

from typing import Final

from bpfsys.abi import BpfFunc
from kernelsim.helpers.common import current_of, kernel_of, write_out
from kernelsim.prog.interpreter.helpers import kernel_helper
from kernelsim.prog.interpreter.runtime import RunEnv

HZ: Final = 250
"""CONFIG_HZ of the measured kernel (Debian's default)."""
TICK_NS: Final = 1_000_000_000 // HZ
INITIAL_JIFFIES: Final = (1 << 32) - 300 * HZ
"""((unsigned long)(unsigned int)(-300 * HZ)): jiffies wrap five minutes after boot."""


@kernel_helper(BpfFunc.GET_CURRENT_PID_TGID)
def get_current_pid_tgid(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    task = current_of(env).task
    return task.tgid << 32 | task.pid


@kernel_helper(BpfFunc.GET_CURRENT_UID_GID)
def get_current_uid_gid(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    task = current_of(env).task
    return task.gid << 32 | task.uid


@kernel_helper(BpfFunc.GET_CURRENT_COMM)
def get_current_comm(env: RunEnv, buf: int, size: int, r3: int, r4: int, r5: int) -> int:
    size &= 0xFFFFFFFF
    comm = current_of(env).task.comm_bytes().rstrip(b"\0")[: max(size - 1, 0)]
    write_out(env, buf, comm.ljust(size, b"\0"))
    return 0


@kernel_helper(BpfFunc.GET_CURRENT_TASK)
def get_current_task(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return current_of(env).task.address


@kernel_helper(BpfFunc.KTIME_GET_BOOT_NS)
def ktime_get_boot_ns(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return kernel_of(env).now_ns


@kernel_helper(BpfFunc.KTIME_GET_COARSE_NS)
def ktime_get_coarse_ns(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    now = kernel_of(env).now_ns
    return now - now % TICK_NS


@kernel_helper(BpfFunc.JIFFIES64)
def jiffies64(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return INITIAL_JIFFIES + kernel_of(env).now_ns // TICK_NS


@kernel_helper(BpfFunc.GET_FUNC_IP)
def get_func_ip(env: RunEnv, ctx: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return current_of(env).context.func_ip


@kernel_helper(BpfFunc.GET_ATTACH_COOKIE)
def get_attach_cookie(env: RunEnv, ctx: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return current_of(env).context.cookie
