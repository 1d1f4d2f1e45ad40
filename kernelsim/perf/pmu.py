"""The PMUs of the simulated kernel (software, tracepoint, kprobe, uprobe, breakpoint, msr) and
their sysfs files.

Theory of operation
-------------------
A PMU turns a checked attr into an event source (`EventSource`) or refuses it. `PmuRegistry`
holds the PMUs by type as the kernel's pmu_idr does: software 1, tracepoint 2 and breakpoint 5
are fixed, the others take the next free type from PERF_TYPE_MAX (6) in registration order:
the hidden cpu_clock and task_clock PMUs (typed since 6.15), then kprobe, uprobe and msr. So a
stock 6.18 kernel has kprobe 8 and uprobe 9, and without the kprobe PMU (the live machine this
was measured on, and kernels before 4.17) uprobe is 8 and msr 9. `PmuRegistry.unregister`
removes a PMU and its sysfs directory (tests use it to take the legacy kprobe_events path).

`find_source` follows perf_init_event: PERF_TYPE_HARDWARE and HW_CACHE are aliases of RAW (or,
with a PMU type in config's upper 32 bits, of that PMU); a registered type asks that PMU; an
unknown type asks every PMU in turn; every PMU answers ENOENT for an attr that is not its own,
so no PMU means ENOENT. The software PMU forwards CPU_CLOCK and TASK_CLOCK to the clock PMUs.
Each PMU's own checks come from its event_init in the kernel (branch sampling EOPNOTSUPP, an
unknown tracepoint id EINVAL, probes need CAP_PERFMON, the probe target must exist, ...).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, ClassVar, Final

import attrs

from bpfsys.abi import PerfAttrFlag, PerfEventAttr, PerfSwId, PerfType, SampleType
from kernelsim.errors import fail
from kernelsim.perf.attr import has_flag, is_sampling
from kernelsim.perf.kallsyms import kprobe_symbol
from kernelsim.perf.trace_event import EventKind, ProbeTarget, TraceEventCall
from kernelsim.tracefs import Tracefs

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

PMU_ROOT: Final = "/sys/bus/event_source/devices"
PERF_TYPE_MAX: Final = 6
PERF_PMU_TYPE_SHIFT: Final = 32
PERF_HW_EVENT_MASK: Final = (1 << 32) - 1
KSYM_NAME_LEN: Final = 512
PATH_MAX: Final = 4096
HW_BREAKPOINT_R: Final = 1
HW_BREAKPOINT_W: Final = 2
HW_BREAKPOINT_RW: Final = 3
HW_BREAKPOINT_X: Final = 4
_KERNEL_SPACE: Final = 0xFFFF_8000_0000_0000
_MSR_TSC: Final = 0

# The files every PMU directory has, besides `type` (as the live 6.18 kernel shows them).
_COMMON_FILES: Final = {
    "uevent": b"",
    "perf_event_mux_interval_ms": b"4\n",
    "power/runtime_active_time": b"0\n",
    "power/runtime_status": b"unsupported\n",
    "power/runtime_suspended_time": b"0\n",
    "power/control": b"auto\n",
}


@attrs.frozen
class EventSource:
    """What a PMU made of an attr: the PMU, and the trace event for tracing PMUs."""

    pmu: Pmu
    trace: TraceEventCall | None = None


@attrs.frozen
class EventInit:
    """The arguments of a PMU's event_init."""

    kernel: Kernel
    attr: PerfEventAttr
    task: bool
    """A task event (pid given) rather than a CPU-wide one."""


def _no_branch_stack(attr: PerfEventAttr, pmu: str) -> None:
    if attr.sample_type & SampleType.BRANCH_STACK:
        fail(errno.EOPNOTSUPP, f"the {pmu} PMU has no branch sampling")


def _need_perfmon(kernel: Kernel, pmu: str) -> None:
    if not kernel.perfmon_capable():
        fail(errno.EACCES, f"the {pmu} PMU needs CAP_PERFMON")


def _user_string(kernel: Kernel, addr: int, limit: int, what: str) -> bytes:
    """strndup_user: EFAULT for a bad pointer; a string of `limit` bytes or more is E2BIG (the
    probe PMUs turn strndup_user's EINVAL into E2BIG)."""
    text, terminated = kernel.memory.read_cstring(addr, limit)
    if not terminated:
        fail(errno.E2BIG, f"{what} longer than {limit - 1} bytes")
    return text


class Pmu:
    """A PMU: its name, type and sysfs files, and event_init."""

    name: str = ""
    fixed_type: ClassVar[int | None] = None
    visible: ClassVar[bool] = True
    """Whether it has a sysfs directory (the clock PMUs have none)."""
    format_files: ClassVar[dict[str, bytes]] = {}
    event_files: ClassVar[dict[str, bytes]] = {}

    def __init__(self, type_: int) -> None:
        self.type = type_

    def init_event(self, init: EventInit) -> EventSource:
        """The event source for `init.attr`; ENOENT when the attr is not this PMU's."""
        raise NotImplementedError

    def owns(self, attr: PerfEventAttr) -> bool:
        return bool(attr.type == self.type)

    def sysfs_files(self) -> dict[str, bytes]:
        files = dict(_COMMON_FILES)
        files["type"] = f"{self.type}\n".encode()
        files.update({f"format/{k}": v for k, v in self.format_files.items()})
        files.update({f"events/{k}": v for k, v in self.event_files.items()})
        return files


class SoftwarePmu(Pmu):
    """PERF_TYPE_SOFTWARE (perf_swevent_init); CPU_CLOCK and TASK_CLOCK go to the clock PMUs."""

    name = "software"
    fixed_type = PerfType.SOFTWARE

    def __init__(self, type_: int, registry: PmuRegistry) -> None:
        super().__init__(type_)
        self.registry = registry

    def init_event(self, init: EventInit) -> EventSource:
        attr = init.attr
        if not self.owns(attr):
            fail(errno.ENOENT, "not a software event")
        _no_branch_stack(attr, self.name)
        if attr.config in (PerfSwId.CPU_CLOCK, PerfSwId.TASK_CLOCK):
            name = "cpu_clock" if attr.config == PerfSwId.CPU_CLOCK else "task_clock"
            return self.registry.by_name(name).init_event(init)
        known = [sw for sw in PerfSwId if init.kernel.profile.has(sw)]
        if attr.config > max(known):
            fail(errno.ENOENT, f"no software event {attr.config}")
        return EventSource(self)


class ClockPmu(Pmu):
    """perf_cpu_clock / perf_task_clock: PERF_COUNT_SW_CPU_CLOCK / TASK_CLOCK, hrtimer driven."""

    visible = False

    def __init__(self, type_: int, name: str, config: PerfSwId) -> None:
        super().__init__(type_)
        self.name = name
        self.config = config

    def owns(self, attr: PerfEventAttr) -> bool:
        return attr.type in (PerfType.SOFTWARE, self.type)

    def init_event(self, init: EventInit) -> EventSource:
        attr = init.attr
        if not self.owns(attr) or attr.config != self.config:
            fail(errno.ENOENT, f"not a {self.name} event")
        _no_branch_stack(attr, self.name)
        return EventSource(self)


class TracepointPmu(Pmu):
    """PERF_TYPE_TRACEPOINT: config is a trace event id from tracefs (perf_tp_event_init)."""

    name = "tracepoint"
    fixed_type = PerfType.TRACEPOINT

    def init_event(self, init: EventInit) -> EventSource:
        attr = init.attr
        if not self.owns(attr):
            fail(errno.ENOENT, "not a tracepoint event")
        _no_branch_stack(attr, self.name)
        call = init.kernel.subsystem(Tracefs).by_id(attr.config)
        if call is None:
            fail(errno.EINVAL, f"no trace event with id {attr.config}")
        trace_event_perm(init, call)
        return EventSource(self, call)


def trace_event_perm(init: EventInit, call: TraceEventCall) -> None:
    """perf_trace_event_perm: raw samples of a trace event need CAP_PERFMON unless
    perf_event_paranoid is -1, except a task's own syscall events (TRACE_EVENT_FL_CAP_ANY)."""
    if not init.attr.sample_type & SampleType.RAW:
        return
    if init.task and call.kind is EventKind.SYSCALL:
        return
    kernel = init.kernel
    if kernel.sysctl["perf_event_paranoid"] > -1 and not kernel.perfmon_capable():
        fail(errno.EPERM, "raw tracepoint samples need CAP_PERFMON")


class KprobePmu(Pmu):
    """The kprobe PMU: config bit 0 makes a kretprobe; config1 points at the symbol (or is 0 and
    config2 is an address); config2 is the offset into the symbol."""

    name = "kprobe"
    format_files = {"retprobe": b"config:0\n"}

    def init_event(self, init: EventInit) -> EventSource:
        attr, kernel = init.attr, init.kernel
        if not self.owns(attr):
            fail(errno.ENOENT, "not a kprobe event")
        _need_perfmon(kernel, self.name)
        _no_branch_stack(attr, self.name)
        is_return = bool(attr.config & 1)
        func = b""
        if attr.config1:
            func = _user_string(kernel, attr.config1, KSYM_NAME_LEN, "kprobe_func")
        if func:
            name = func.decode("latin-1")
            symbol = kprobe_symbol(name)
            if symbol is None:
                fail(errno.ENOENT, f"no kernel symbol {name!r}")
            if attr.config2 >= symbol.size:
                fail(errno.EINVAL, f"offset {attr.config2} beyond {name}")
            address = symbol.address + attr.config2
        else:
            address = attr.config2
            if kprobe_symbol(address) is None:
                fail(errno.EINVAL, f"kprobe_addr {address:#x} is no kernel function")
        probe = ProbeTarget(func, attr.config2 if func else 0, address, is_return)
        call = kernel.subsystem(Tracefs).local_probe_event(EventKind.KPROBE, probe)
        return EventSource(self, call)


class UprobePmu(Pmu):
    """The uprobe PMU: config bit 0 makes a uretprobe, config bits 32-63 are the reference
    counter offset; config1 points at the path, config2 is the file offset."""

    name = "uprobe"
    format_files = {"retprobe": b"config:0\n", "ref_ctr_offset": b"config:32-63\n"}

    def init_event(self, init: EventInit) -> EventSource:
        attr, kernel = init.attr, init.kernel
        if not self.owns(attr):
            fail(errno.ENOENT, "not a uprobe event")
        _need_perfmon(kernel, self.name)
        _no_branch_stack(attr, self.name)
        if not attr.config1:
            fail(errno.EINVAL, "uprobe_path is NULL")
        path = _user_string(kernel, attr.config1, PATH_MAX, "uprobe_path")
        if not path:
            fail(errno.EINVAL, "uprobe_path is empty")
        size = probe_file_size(path)
        offset = attr.config2 - (1 << 64) if attr.config2 >> 63 else attr.config2
        if offset > size:
            fail(errno.EINVAL, f"offset {offset:#x} beyond the {size}-byte file")
        probe = ProbeTarget(path, attr.config2, 0, bool(attr.config & 1), attr.config >> 32)
        call = kernel.subsystem(Tracefs).local_probe_event(EventKind.UPROBE, probe)
        return EventSource(self, call)


def probe_file_size(path: bytes) -> int:
    """The size of the regular file a uprobe names (kern_path and d_is_reg): the real file
    system's answer, ENOENT and friends as errnos, EINVAL for anything but a regular file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        fail(exc.errno or errno.ENOENT, f"uprobe path {path!r}: {exc.strerror}")
    except ValueError:
        fail(errno.EINVAL, f"uprobe path {path!r} is not a path")
    if not stat.S_ISREG(info.st_mode):
        fail(errno.EINVAL, f"uprobe path {path!r} is not a regular file")
    return info.st_size


class BreakpointPmu(Pmu):
    """PERF_TYPE_BREAKPOINT (hw_breakpoint_event_init, x86_64 rules)."""

    name = "breakpoint"
    fixed_type = PerfType.BREAKPOINT

    def init_event(self, init: EventInit) -> EventSource:
        attr = init.attr
        if not self.owns(attr):
            fail(errno.ENOENT, "not a breakpoint event")
        _no_branch_stack(attr, self.name)
        check_breakpoint(init.kernel, attr)
        return EventSource(self)


def check_breakpoint(kernel: Kernel, attr: PerfEventAttr) -> None:
    """hw_breakpoint_parse on x86_64: type, length, alignment and address space."""
    bp_type, addr, length = attr.bp_type, attr.config1, attr.config2
    if bp_type == HW_BREAKPOINT_X:
        if length != 8:
            fail(errno.EINVAL, "an execute breakpoint covers sizeof(long)")
    elif bp_type in (HW_BREAKPOINT_W, HW_BREAKPOINT_RW):
        if length not in (1, 2, 4, 8):
            fail(errno.EOPNOTSUPP if length > 8 else errno.EINVAL, f"bp_len {length}")
    else:
        fail(errno.EINVAL, f"bp_type {bp_type} (x86 has no read-only breakpoints)")
    if addr % length:
        fail(errno.EINVAL, f"bp_addr {addr:#x} not aligned to {length}")
    if addr >= _KERNEL_SPACE:
        if has_flag(attr, PerfAttrFlag.EXCLUDE_KERNEL):
            fail(errno.EINVAL, "a kernel breakpoint that excludes the kernel")
        if not kernel.capable_sys_admin():
            fail(errno.EPERM, "kernel breakpoints need CAP_SYS_ADMIN")


class MsrPmu(Pmu):
    """The x86 msr PMU (counting only; this machine exposes the tsc event)."""

    name = "msr"
    format_files = {"event": b"config:0-63\n"}
    event_files = {"tsc": b"event=0x00\n"}

    def init_event(self, init: EventInit) -> EventSource:
        attr = init.attr
        if not self.owns(attr):
            fail(errno.ENOENT, "not an msr event")
        if is_sampling(attr):
            fail(errno.EINVAL, "msr events cannot sample")
        if attr.config != _MSR_TSC:
            fail(errno.EINVAL, f"no msr event {attr.config}")
        return EventSource(self)


class PmuRegistry:
    """The kernel's PMUs by type (pmu_idr) and their sysfs directories."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._by_type: dict[int, Pmu] = {}
        self._clocks: dict[str, ClockPmu] = {}

    def _next_type(self) -> int:
        type_ = PERF_TYPE_MAX
        while type_ in self._by_type:
            type_ += 1
        return type_

    def register(self, pmu: Pmu) -> None:
        self._by_type[pmu.type] = pmu
        if pmu.visible:
            for rel, content in pmu.sysfs_files().items():
                self.kernel.vfs.add(f"{PMU_ROOT}/{pmu.name}/{rel}", content)

    def unregister(self, name: str) -> None:
        """Remove PMU `name` and its sysfs directory (its type stays unused)."""
        pmu = self.by_name(name)
        del self._by_type[pmu.type]
        for rel in pmu.sysfs_files():
            self.kernel.vfs.remove(f"{PMU_ROOT}/{pmu.name}/{rel}")

    def by_name(self, name: str) -> Pmu:
        """The registered PMU `name` (the clock PMUs also when they have no type)."""
        if name in self._clocks:
            return self._clocks[name]
        for pmu in self._by_type.values():
            if pmu.name == name:
                return pmu
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(p.name == name for p in self._by_type.values())

    def find_source(self, init: EventInit) -> EventSource:
        """perf_init_event (see the module docstring)."""
        attr = init.attr
        type_ = attr.type
        if type_ in (PerfType.HARDWARE, PerfType.HW_CACHE):
            type_ = attr.config >> PERF_PMU_TYPE_SHIFT or PerfType.RAW
        pmu = self._by_type.get(type_)
        if pmu is not None:
            return pmu.init_event(init)
        for candidate in list(self._by_type.values()):
            try:
                return candidate.init_event(init)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        fail(errno.ENOENT, f"no PMU for type {attr.type}")

    def boot(self) -> None:
        """Register the PMUs in the kernel's order (perf_event_init, then the arch PMUs)."""
        profile = self.kernel.profile
        self.register(SoftwarePmu(PerfType.SOFTWARE, self))
        typed = profile.has_behaviour("perf_clock_pmu_types")
        for name, config in (
            ("cpu_clock", PerfSwId.CPU_CLOCK),
            ("task_clock", PerfSwId.TASK_CLOCK),
        ):
            clock = ClockPmu(self._next_type() if typed else -1, name, config)
            self._clocks[name] = clock
            if typed:
                self.register(clock)
        self.register(TracepointPmu(PerfType.TRACEPOINT))
        if profile.has_behaviour("kprobe_pmu"):
            self.register(KprobePmu(self._next_type()))
        if profile.has_behaviour("uprobe_pmu"):
            self.register(UprobePmu(self._next_type()))
        self.register(BreakpointPmu(PerfType.BREAKPOINT))
        self.register(MsrPmu(self._next_type()))


def boot(kernel: Kernel) -> None:
    """Register the PMUs of `kernel` and their sysfs files."""
    kernel.subsystem(PmuRegistry).boot()
