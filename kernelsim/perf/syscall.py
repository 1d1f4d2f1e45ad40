"""perf_event_open(2) as the kernel runs it (kernel/events/core.c, measured on Linux 6.18).

Theory of operation
-------------------
`perf_event_open(kernel, attr, pid, cpu, group_fd, flags)` takes the steps of
sys_perf_event_open in its order, so that an attr with several faults gets the errno the
kernel gives first:

1. unknown PERF_FLAG_* bits: EINVAL; the attr is copied and checked (`perf.attr.copy_attr`:
   E2BIG with the kernel's size written back, EINVAL for reserved bits);
2. privileges: profiling the kernel (exclude_kernel clear, PERF_SAMPLE_PHYS_ADDR) needs
   perf_allow_kernel, namespaces CAP_PERFMON (EACCES); sample_freq above
   perf_event_max_sample_rate or a sample_period with bit 63 set: EINVAL;
3. PERF_FLAG_PID_CGROUP with pid or cpu -1: EINVAL; group_fd other than -1 must be a perf event
   (EBADF); pid -1 is no task, 0 or KernelConfig.pid the simulated task, any other pid ESRCH;
   a task event joining a group must agree on inherit (EINVAL);
4. perf_event_alloc: cpu beyond the possible CPUs (or -1 without a task) EINVAL, sigtrap
   without a task EINVAL, inherit with PERF_SAMPLE_READ needs PERF_SAMPLE_TID (EINVAL), then
   the PMU (`PmuRegistry.find_source`), the aux flags (EOPNOTSUPP / EINVAL), the cgroup (no
   cgroupfs here: EBADF), extended x86 registers (EOPNOTSUPP), the callchain depth
   (EOVERFLOW above perf_event_max_stack);
5. the clock (use_clockid: REALTIME, MONOTONIC, MONOTONIC_RAW, BOOTTIME, TAI; else EINVAL);
   a CPU-wide event needs perf_allow_cpu (EACCES) and an online CPU (ENODEV); a group member
   must share its leader's CPU, task and clock, be neither pinned nor exclusive, and its
   leader must lead (EINVAL); PERF_FLAG_FD_OUTPUT redirects to the group fd's ring
   (SET_OUTPUT's rules); aux sampling needs an AUX group leader (EINVAL);
6. the fd is installed, close-on-exec only with PERF_FLAG_FD_CLOEXEC.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import TYPE_CHECKING, Final

from bpfsys.abi import (
    PERF_FLAG_FD_CLOEXEC,
    PERF_FLAG_FD_NO_GROUP,
    PERF_FLAG_FD_OUTPUT,
    PERF_FLAG_PID_CGROUP,
    PerfAttrFlag,
    PerfEventAttr,
    SampleType,
)
from bpfsys.kversion import since
from kernelsim.errors import fail
from kernelsim.perf.attr import (
    AUX_PAUSE,
    AUX_RESUME,
    AUX_START_PAUSED,
    X86_REG_EXTENDED,
    BufferAttr,
    copy_attr,
    has_flag,
    perf_allow_kernel,
)
from kernelsim.perf.event import PerfEvent
from kernelsim.perf.pmu import EventInit, EventSource, PmuRegistry

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

PERF_EVENT_MAX_SAMPLE_RATE: Final = 100_000
"""/proc/sys/kernel/perf_event_max_sample_rate."""
PERF_EVENT_MAX_STACK: Final = 127
"""/proc/sys/kernel/perf_event_max_stack."""
CLOCKIDS: Final = frozenset({0, 1, 4, 7, 11})
"""The clocks perf_event_set_clock takes: REALTIME, MONOTONIC, MONOTONIC_RAW, BOOTTIME, TAI."""


def _known_flags(kernel: Kernel) -> int:
    known = PERF_FLAG_FD_NO_GROUP | PERF_FLAG_FD_OUTPUT | PERF_FLAG_PID_CGROUP
    if since("3.14") <= kernel.config.version:
        known |= PERF_FLAG_FD_CLOEXEC
    return known


def _s32(value: int) -> int:
    return ctypes.c_int32(value & 0xFFFFFFFF).value


def perf_event_open(
    kernel: Kernel, attr: memoryview, pid: int, cpu: int, group_fd: int, flags: int
) -> int:
    """perf_event_open(&attr, pid, cpu, group_fd, flags) on `kernel`: the new fd (the module
    docstring lists the checks)."""
    pid, cpu, group_fd = _s32(pid), _s32(cpu), _s32(group_fd)
    flags &= (1 << 64) - 1
    if flags & ~_known_flags(kernel):
        fail(errno.EINVAL, f"unknown perf_event_open flags {flags:#x}")
    checked = copy_attr(kernel, BufferAttr(attr))
    if not has_flag(checked, PerfAttrFlag.EXCLUDE_KERNEL):
        perf_allow_kernel(kernel)
    if has_flag(checked, PerfAttrFlag.NAMESPACES) and not kernel.perfmon_capable():
        fail(errno.EACCES, "namespaces records need CAP_PERFMON")
    if has_flag(checked, PerfAttrFlag.FREQ):
        if checked.sample_period > PERF_EVENT_MAX_SAMPLE_RATE:
            fail(errno.EINVAL, f"sample_freq {checked.sample_period} above the maximum")
    elif checked.sample_period >> 63:
        fail(errno.EINVAL, "sample_period with bit 63 set")
    if checked.sample_type & SampleType.PHYS_ADDR:
        perf_allow_kernel(kernel)
    cgroup = bool(flags & PERF_FLAG_PID_CGROUP)
    if cgroup and (pid == -1 or cpu == -1):
        fail(errno.EINVAL, "a cgroup event needs a cgroup fd and a CPU")
    leader: PerfEvent | None = None
    output: PerfEvent | None = None
    if group_fd != -1:
        leader = kernel.fds.get(group_fd, PerfEvent, wrong_type=errno.EBADF)
        if flags & PERF_FLAG_FD_OUTPUT:
            output = leader
        if flags & PERF_FLAG_FD_NO_GROUP:
            leader = None
    task: int | None = None
    if pid != -1 and not cgroup:
        if pid not in (0, kernel.config.pid):
            fail(errno.ESRCH, f"no task {pid}")
        task = kernel.config.pid
    inherit = has_flag(checked, PerfAttrFlag.INHERIT)
    if (
        task is not None
        and leader is not None
        and has_flag(leader.attr, PerfAttrFlag.INHERIT) != inherit
    ):
        fail(errno.EINVAL, "a group's events must agree on inherit")
    source = _alloc_checks(kernel, checked, cpu, task, cgroup)
    event = PerfEvent(kernel, checked, source, cpu, task, leader)
    try:
        _context_checks(kernel, event, leader)
        if output is not None:
            event.set_output(output)
        if checked.aux_sample_size or checked._reserved_3 & (AUX_PAUSE | AUX_RESUME):
            fail(errno.EINVAL, "aux sampling needs an AUX group leader")
    except OSError:
        event.put()
        raise
    fd = kernel.fds.install(event)
    if not flags & PERF_FLAG_FD_CLOEXEC:
        os.set_inheritable(fd, True)
    event.refresh_readiness()
    return fd


def _alloc_checks(
    kernel: Kernel, attr: PerfEventAttr, cpu: int, task: int | None, cgroup: bool
) -> EventSource:
    """perf_event_alloc's checks, the PMU's among them; the event source."""
    if not 0 <= cpu < kernel.config.cpus and (task is None or cpu != -1):
        fail(errno.EINVAL, f"cpu {cpu} with {'a task' if task else 'no task'}")
    if has_flag(attr, PerfAttrFlag.SIGTRAP) and task is None:
        fail(errno.EINVAL, "sigtrap needs a task")
    read_without_tid = attr.sample_type & (SampleType.READ | SampleType.TID) == SampleType.READ
    if has_flag(attr, PerfAttrFlag.INHERIT) and read_without_tid:
        fail(errno.EINVAL, "inherit with PERF_SAMPLE_READ needs PERF_SAMPLE_TID")
    source = kernel.subsystem(PmuRegistry).find_source(EventInit(kernel, attr, task is not None))
    if (attr.sample_regs_user | attr.sample_regs_intr) & X86_REG_EXTENDED:
        fail(errno.EOPNOTSUPP, f"the {source.pmu.name} PMU has no extended registers")
    if has_flag(attr, PerfAttrFlag.AUX_OUTPUT):
        fail(errno.EOPNOTSUPP, f"the {source.pmu.name} PMU has no AUX output")
    aux = attr._reserved_3
    if aux & AUX_PAUSE and aux & AUX_RESUME:
        fail(errno.EINVAL, "aux_pause with aux_resume")
    if aux & AUX_START_PAUSED:
        fail(errno.EOPNOTSUPP, f"the {source.pmu.name} PMU cannot pause AUX")
    if cgroup:
        fail(errno.EBADF, "the pid argument is no cgroup directory fd (no cgroupfs here)")
    if attr.sample_type & SampleType.CALLCHAIN:
        depth = attr.sample_max_stack or PERF_EVENT_MAX_STACK
        if depth > PERF_EVENT_MAX_STACK:
            fail(errno.EOVERFLOW, f"sample_max_stack {depth} > {PERF_EVENT_MAX_STACK}")
    return source


def _context_checks(kernel: Kernel, event: PerfEvent, leader: PerfEvent | None) -> None:
    """The clock, the context (CPU permission and online state) and the group."""
    attr = event.attr
    if has_flag(attr, PerfAttrFlag.USE_CLOCKID) and attr.clockid not in CLOCKIDS:
        fail(errno.EINVAL, f"clockid {attr.clockid}")
    if event.task_pid is None:
        if kernel.sysctl["perf_event_paranoid"] > 0 and not kernel.perfmon_capable():
            fail(errno.EACCES, "CPU-wide events need CAP_PERFMON (perf_event_paranoid > 0)")
        if event.cpu >= kernel.config.online:
            fail(errno.ENODEV, f"cpu {event.cpu} is offline")
    if leader is None:
        return
    if leader.group_leader is not leader:
        fail(errno.EINVAL, "the group fd is a group member, not a leader")
    if leader.clock != event.clock:
        fail(errno.EINVAL, "a group's events share one clock")
    if leader.cpu != event.cpu or leader.task_pid != event.task_pid:
        fail(errno.EINVAL, "a group's events share one CPU and task")
    if has_flag(attr, PerfAttrFlag.EXCLUSIVE) or has_flag(attr, PerfAttrFlag.PINNED):
        fail(errno.EINVAL, "only a group leader can be exclusive or pinned")
