"""bpf_perf_event_output(ctx, map, flags, data, size): a RAW sample into a perf event's ring.

Checks in the kernel's order (bpf_perf_event_output, __bpf_perf_event_output), measured on
6.18 through BPF_PROG_TEST_RUN of raw tracepoint programs:

| condition                                                       | result      |
|-----------------------------------------------------------------|-------------|
| flags outside BPF_F_INDEX_MASK                                  | -EINVAL     |
| index (BPF_F_CURRENT_CPU: the run's CPU) >= max_entries         | -E2BIG      |
| no event stored at the index                                    | -ENOENT     |
| the event is not a software PERF_COUNT_SW_BPF_OUTPUT event      | -EINVAL     |
| the event is not on this CPU now (another CPU, disabled, or a   | -EOPNOTSUPP |
| task event of another task)                                     |             |
| the event has no ring, or the ring dropped the sample           | -ENOSPC     |
| written                                                         | 0           |

The sample goes through kernelsim.perf.output.perf_output: pid/tid of the current task, the
run's CPU, the virtual clock, and the event registers of the run context (their IP, and
PERF_RECORD_MISC_USER for user-mode registers, MISC_KERNEL otherwise).
"""

from __future__ import annotations

import errno

from bpfsys.abi import BPF_F_CURRENT_CPU, BPF_F_INDEX_MASK, BpfFunc, PerfSwId, PerfType
from kernelsim.helpers.common import current_of, kernel_of
from kernelsim.maps.array import PerfEventArrayMap
from kernelsim.perf.event import PerfEvent
from kernelsim.perf.output import PERF_RECORD_MISC_KERNEL, PERF_RECORD_MISC_USER, perf_output
from kernelsim.prog.interpreter.errors import ProgramFault
from kernelsim.prog.interpreter.helpers import kernel_helper
from kernelsim.prog.interpreter.runtime import RunEnv


def on_cpu(event: PerfEvent, cpu: int, pid: int) -> bool:
    """event->oncpu == cpu: the event is active and scheduled on `cpu` (a task event while its
    task `pid` runs)."""
    if not event.active:
        return False
    if event.cpu >= 0:
        return event.cpu == cpu
    return event.task_pid == pid


@kernel_helper(BpfFunc.PERF_EVENT_OUTPUT)
def perf_event_output(env: RunEnv, ctx: int, map_ptr: int, flags: int, data: int, size: int) -> int:
    kernel = kernel_of(env)
    bpf_map = env.map_from_handle(map_ptr)
    if not isinstance(bpf_map, PerfEventArrayMap):
        raise ProgramFault(f"perf_event_output into a {bpf_map.map_type.name} map")
    if flags & ~BPF_F_INDEX_MASK:
        return -errno.EINVAL
    index = flags & BPF_F_INDEX_MASK
    if index == BPF_F_CURRENT_CPU:
        index = env.cpu
    if index >= bpf_map.max_entries:
        return -errno.E2BIG
    event = bpf_map.event_at(index)
    if event is None:
        return -errno.ENOENT
    if event.attr.type != PerfType.SOFTWARE or event.attr.config != PerfSwId.BPF_OUTPUT:
        return -errno.EINVAL
    current = current_of(env)
    task = current.task
    if not on_cpu(event, env.cpu, task.tgid):
        return -errno.EOPNOTSUPP
    raw = env.space.read_bytes(data, size & 0xFFFFFFFF) if size else b""
    context = current.context
    return perf_output(
        kernel,
        event,
        raw,
        cpu=env.cpu,
        pid=task.tgid,
        tid=task.pid,
        ip=context.ip,
        misc=PERF_RECORD_MISC_USER if context.user_regs else PERF_RECORD_MISC_KERNEL,
    )
