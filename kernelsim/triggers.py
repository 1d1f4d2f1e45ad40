"""Events that fire: tracepoints, kprobes, uprobes and clock ticks, driven by tests.

Theory of operation
-------------------
A test makes something happen in the simulated kernel (`fire_tracepoint`, `fire_kprobe`,
`fire_uprobe`, `tick`; the same as `Kernel` methods). Everything runs as the current task
(kernelsim.current: the given pid and comm, else the simulated process) on the given CPU, in
the kernel's order:

1. *Raw tracepoint programs* (RAW_TRACEPOINT_OPEN links) on a tracepoint of that name run with
   the u64 arguments given as `raw_args`, each with its link's cookie; their results are
   ignored (__bpf_trace_run).
2. *The trace event's programs* (attached through perf events: SET_BPF or perf links; one array
   per trace event, so they run whether or not their perf event is enabled and on which CPU it
   counts) run in attach order with the context of their type (kernelsim.trace_context) and
   their cookie; tracepoint programs see kernel registers (their bpf_perf_event_output samples
   say MISC_KERNEL, measured, also for syscall events whose own samples say MISC_USER). The
   event goes on only if every program returned a value with bit 0 set: the kernel ANDs the u32
   results starting from 1 (trace_call_bpf / bpf_prog_run_array, measured: 1 and 3 keep the
   sample, 0 and 2 drop it, 1 then 2 drops it).
3. *Perf events* of the trace event that are enabled, on this CPU (CPU-wide events) or
   following the current task (task events), whose SET_FILTER filter passes the record, and
   that do not exclude kernel events when the registers are kernel ones, count the hit; a
   sampling event samples every sample_period hits: a PERF_RECORD_SAMPLE into its ring whose
   RAW data is the trace record (perf_tp_event, perf_swevent_event). A REFRESH budget
   (event_limit) runs down by one per sample and turns the event off at zero.

Clock ticks: `tick(kernel, cpu, ns)` advances the virtual clock by `ns` and, for each enabled
sampling cpu-clock / task-clock event running on `cpu` (CPU-wide on it, or following the
current task), fires once per period it has accumulated (an event accumulates only the time
ticked on its CPU; the remainder carries over to the next tick; sample_freq is turned into a
period of NSEC_PER_SEC / freq, the hrtimer's fixed rate, and periods are at least 10 us): the
event's BPF_PROG_TYPE_PERF_EVENT program runs with struct bpf_perf_event_data, and unless it
returned 0 a sample goes into the event's ring (__perf_event_overflow, bpf_overflow_handler).

Every program run goes through kernelsim.prog.interpreter.kernel_run.run_on_kernel (virtual
time, run statistics while enabled). A program the simulated loader accepted but that faults at
run time raises BpfRuntimeError to the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from bpfsys.abi import PerfAttrFlag, PerfSwId, ProgType
from kernelsim.current import Current, RunContext, Task
from kernelsim.perf.attr import has_flag, is_sampling
from kernelsim.perf.event import PerfEvent, PerfState, Trigger
from kernelsim.perf.filter import RecordContext
from kernelsim.perf.kallsyms import kprobe_symbol
from kernelsim.perf.output import PERF_RECORD_MISC_KERNEL, PERF_RECORD_MISC_USER, perf_output
from kernelsim.perf.pmu import ClockPmu
from kernelsim.perf.trace_event import EventKind, TraceEventCall
from kernelsim.prog.interpreter.kernel_run import run_on_kernel
from kernelsim.prog.interpreter.runtime import RunEnv
from kernelsim.raw_tracepoint import RawTracepoints
from kernelsim.trace_context import (
    TracingContext,
    build_record,
    perf_event_data,
    pt_regs,
    raw_tracepoint_args,
    register,
    syscall_context,
    user_mode,
)
from kernelsim.tracefs import Tracefs

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.prog.program import BpfProgram

MIN_CLOCK_PERIOD_NS: Final = 10_000
"""perf_swevent_start_hrtimer: hrtimer periods are at least 10 us."""
NSEC_PER_SEC: Final = 1_000_000_000
U32_MASK: Final = 0xFFFFFFFF


@attrs.frozen
class ProgramRun:
    """One program run by an event: the program's id and its 64-bit result."""

    prog_id: int
    retval: int


@attrs.frozen
class FireResult:
    """What an event did: the programs it ran (in order) and the samples it wrote."""

    runs: tuple[ProgramRun, ...] = ()
    samples: int = 0


class _Firing:
    """One event firing: its task, CPU and registers, and what it did so far."""

    def __init__(self, kernel: Kernel, cpu: int, task: Task, regs: bytes) -> None:
        if not 0 <= cpu < kernel.config.online:
            raise ValueError(f"CPU {cpu} is not online (the kernel has {kernel.config.online})")
        self.kernel = kernel
        self.cpu = cpu
        self.task = task
        self.regs = regs
        self.user_regs = user_mode(regs)
        self.program_user_regs = self.user_regs
        """Whether the registers programs see (bpf_perf_event_output's samples) are user ones:
        tracepoint programs get kernel registers even for syscall events (measured)."""
        self.runs: list[ProgramRun] = []
        self.samples = 0

    def context(self, cookie: int, func_ip: int = 0) -> RunContext:
        ip = register(self.regs, "ip") if self.program_user_regs == self.user_regs else 0
        return RunContext(cookie, func_ip, self.program_user_regs, ip)

    def run(self, prog: BpfProgram, ctx: bytearray, name: str, context: RunContext) -> int:
        """Run `prog` on a copy of `ctx` as the current task; its 64-bit result."""
        current = self.kernel.subsystem(Current)

        def setup(env: RunEnv) -> int:
            return env.space.map(TracingContext(prog.prog_type, bytearray(ctx), name))

        with current.running(self.task, context):
            retval = run_on_kernel(self.kernel, prog, setup, self.cpu).retval
        self.runs.append(ProgramRun(prog.id, retval))
        return retval

    def run_array(self, call: TraceEventCall, ctx: bytearray, name: str, func_ip: int = 0) -> bool:
        """The trace event's programs (rule 2): whether the event goes on to perf."""
        verdict = 1
        for entry in call.programs:
            retval = self.run(entry.program, ctx, name, self.context(entry.cookie, func_ip))
            verdict &= retval & U32_MASK
        return verdict != 0

    def runs_here(self, event: PerfEvent) -> bool:
        """The event is enabled and scheduled on this CPU for the current task."""
        if not event.active:
            return False
        if event.cpu >= 0 and event.cpu != self.cpu:
            return False
        return event.task_pid is None or event.task_pid in (self.task.tgid, self.task.pid)

    def output(self, event: PerfEvent, raw: bytes) -> None:
        """An overflow of `event`: the sample, and the REFRESH budget."""
        result = perf_output(
            self.kernel,
            event,
            raw,
            cpu=self.cpu,
            pid=self.task.tgid,
            tid=self.task.pid,
            ip=register(self.regs, "ip"),
            misc=PERF_RECORD_MISC_USER if self.user_regs else PERF_RECORD_MISC_KERNEL,
        )
        if result == 0:
            self.samples += 1
        if event.event_limit:
            event.event_limit -= 1
            if not event.event_limit:
                event.fire(Trigger.LIMIT_REACHED)

    def result(self) -> FireResult:
        return FireResult(tuple(self.runs), self.samples)


class TriggerState:
    """Per-kernel state of the event sources: hits and time towards each event's next sample."""

    def __init__(self, kernel: Kernel) -> None:
        self.hits: dict[int, int] = {}
        """Perf event id -> hits since its last sample (sample_period > 1)."""
        self.elapsed: dict[int, int] = {}
        """Clock event id -> ns since its last period ended."""

    def count_hit(self, event: PerfEvent) -> bool:
        """perf_swevent_event: count one hit; whether it overflows into a sample."""
        event.count += 1
        if not is_sampling(event.attr):
            return False
        if has_flag(event.attr, PerfAttrFlag.FREQ):
            return True
        hits = self.hits.get(event.id, 0) + 1
        if hits >= event.sample_period:
            self.hits[event.id] = 0
            return True
        self.hits[event.id] = hits
        return False


def _events_of(kernel: Kernel, call: TraceEventCall) -> list[PerfEvent]:
    return [e for e in kernel.subsystem(PerfState).events if e.source.trace is call and e.alive]


def _trace_event_fired(
    firing: _Firing,
    call: TraceEventCall,
    record: bytes,
    ctx: bytearray,
    *,
    func_ip: int = 0,
) -> None:
    """Rules 2 and 3 for one trace event."""
    name = f"{call.system}/{call.name}"
    if call.programs and not firing.run_array(call, ctx, name, func_ip):
        return
    state = firing.kernel.subsystem(TriggerState)
    for event in _events_of(firing.kernel, call):
        if not firing.runs_here(event):
            continue
        if has_flag(event.attr, PerfAttrFlag.EXCLUDE_KERNEL) and not firing.user_regs:
            continue
        comm = firing.task.comm_bytes()
        if event.filter is not None and not event.filter.matches(
            RecordContext(record, firing.cpu, comm)
        ):
            continue
        if state.count_hit(event):
            firing.output(event, record)


def _task(kernel: Kernel, pid: int | None, comm: str | None) -> Task:
    return kernel.subsystem(Current).make_task(pid, comm)


def _find_call(kernel: Kernel, name: str) -> TraceEventCall:
    tracefs = kernel.subsystem(Tracefs)
    system, _, event = name.rpartition("/")
    for call in tracefs.events.values():
        if call.name == event and system in ("", call.system):
            return call
    raise ValueError(f"no tracepoint {name!r} in the simulated kernel")


def fire_tracepoint(
    kernel: Kernel,
    name: str,
    fields: Mapping[str, int | bytes | str] | bytes | None = None,
    *,
    cpu: int = 0,
    pid: int | None = None,
    comm: str | None = None,
    regs: Mapping[str, int] | None = None,
    raw_args: Sequence[int] = (),
) -> FireResult:
    """Fire tracepoint `name` ("system/event", e.g. "syscalls/sys_enter_getpid", or the bare
    event name) with its record's `fields` (module docstring)."""
    call = _find_call(kernel, name)
    task = _task(kernel, pid, comm)
    firing = _Firing(kernel, cpu, task, pt_regs(regs, user=call.kind is EventKind.SYSCALL))
    firing.program_user_regs = False
    record = build_record(call, fields, pid=task.pid)
    args = raw_tracepoint_args(raw_args)
    for probe in kernel.subsystem(RawTracepoints).attached(call.name):
        firing.run(probe.prog, args, f"raw tracepoint {call.name}", firing.context(probe.cookie))
    ctx = syscall_context(record) if call.kind is EventKind.SYSCALL else bytearray(record)
    _trace_event_fired(firing, call, record, ctx)
    return firing.result()


def _probe_calls(
    kernel: Kernel, kind: EventKind, matches: Callable[[TraceEventCall], bool]
) -> list[TraceEventCall]:
    """The probe trace events of `kind` that `matches` (PMU-local ones and tracefs ones)."""
    calls: dict[int, TraceEventCall] = {}
    candidates: Iterable[TraceEventCall] = [
        *kernel.subsystem(Tracefs).events.values(),
        *(e.source.trace for e in kernel.subsystem(PerfState).events if e.source.trace),
    ]
    for call in candidates:
        if call.kind is kind and call.probe is not None and matches(call):
            calls[id(call)] = call
    return list(calls.values())


def _probe_record(call: TraceEventCall, regs: bytes, pid: int, ret_ip: int) -> bytes:
    """A probe event's record: __probe_ip, or __probe_func and __probe_ret_ip."""
    assert call.probe is not None
    if call.probe.is_return:
        fields = {"__probe_func": call.probe.addr, "__probe_ret_ip": ret_ip}
    else:
        fields = {"__probe_ip": register(regs, "ip")}
    return build_record(call, fields, pid=pid, preempt_count=0)


def _fire_probes(
    kernel: Kernel,
    calls: list[TraceEventCall],
    firing: _Firing,
    *,
    func_ip: Callable[[TraceEventCall], int],
    ret_ip: int,
) -> FireResult:
    for call in calls:
        record = _probe_record(call, firing.regs, firing.task.pid, ret_ip)
        _trace_event_fired(firing, call, record, bytearray(firing.regs), func_ip=func_ip(call))
    return firing.result()


def fire_kprobe(
    kernel: Kernel,
    symbol: str,
    regs: Mapping[str, int] | None = None,
    *,
    offset: int = 0,
    is_return: bool = False,
    ret_ip: int = 0,
    cpu: int = 0,
    pid: int | None = None,
    comm: str | None = None,
) -> FireResult:
    """Hit the kprobes at `symbol`+`offset` (or, with `is_return`, the kretprobes of `symbol`
    as it returns to `ret_ip`): their programs get pt_regs `regs` (kernel registers; ip
    defaults to the probed address)."""
    found = kprobe_symbol(symbol)
    if found is None:
        raise ValueError(f"no kernel function {symbol!r} in the simulated kallsyms")
    address = found.address + offset
    values = dict(regs or {})
    values.setdefault("ip", address if not is_return else ret_ip)

    def matches(call: TraceEventCall) -> bool:
        probe = call.probe
        assert probe is not None
        if probe.is_return != is_return:
            return False
        return probe.addr == address if not is_return else probe.addr == found.address

    def func_ip(call: TraceEventCall) -> int:
        # bpf_get_func_ip_kprobe: the probed address for kprobes on a function's entry
        return address if not is_return and offset == 0 else 0

    firing = _Firing(kernel, cpu, _task(kernel, pid, comm), pt_regs(values, user=False))
    calls = _probe_calls(kernel, EventKind.KPROBE, matches)
    return _fire_probes(kernel, calls, firing, func_ip=func_ip, ret_ip=ret_ip)


def fire_uprobe(
    kernel: Kernel,
    path: str,
    offset: int,
    regs: Mapping[str, int] | None = None,
    *,
    is_return: bool = False,
    ret_ip: int = 0,
    cpu: int = 0,
    pid: int | None = None,
    comm: str | None = None,
) -> FireResult:
    """Hit the uprobes (or, with `is_return`, uretprobes) at file offset `offset` of `path`:
    their programs get the user registers `regs`; bpf_get_func_ip gives regs' ip (the probed
    address in the task)."""
    real = os.path.realpath(path)

    def matches(call: TraceEventCall) -> bool:
        probe = call.probe
        assert probe is not None
        same_file = os.path.realpath(os.fsdecode(probe.name)) == real
        return same_file and probe.offset == offset and probe.is_return == is_return

    firing = _Firing(kernel, cpu, _task(kernel, pid, comm), pt_regs(regs, user=True))
    calls = _probe_calls(kernel, EventKind.UPROBE, matches)
    ip = register(firing.regs, "ip")
    return _fire_probes(kernel, calls, firing, func_ip=lambda call: ip, ret_ip=ret_ip)


def _clock_period(event: PerfEvent) -> int:
    """The hrtimer period of a clock event (freq turned into a period, at least 10 us)."""
    if has_flag(event.attr, PerfAttrFlag.FREQ):
        period = NSEC_PER_SEC // max(int(event.attr.sample_period), 1)
    else:
        period = int(event.sample_period)
    return max(period, MIN_CLOCK_PERIOD_NS)


def _is_clock(event: PerfEvent) -> bool:
    pmu = event.source.pmu
    return isinstance(pmu, ClockPmu) and pmu.config in (PerfSwId.CPU_CLOCK, PerfSwId.TASK_CLOCK)


def tick(
    kernel: Kernel,
    cpu: int,
    ns: int,
    *,
    pid: int | None = None,
    comm: str | None = None,
    regs: Mapping[str, int] | None = None,
) -> FireResult:
    """Let `ns` of virtual time pass on `cpu` with the current task running (module docstring:
    clock ticks)."""
    if ns < 0:
        raise ValueError("time only moves forward")
    firing = _Firing(kernel, cpu, _task(kernel, pid, comm), pt_regs(regs, user=True))
    state = kernel.subsystem(TriggerState)
    clocks = [e for e in kernel.subsystem(PerfState).events if _is_clock(e)]
    periods: list[tuple[int, PerfEvent]] = []
    for event in clocks:
        if not (firing.runs_here(event) and is_sampling(event.attr)):
            continue
        period = _clock_period(event)
        before = state.elapsed.get(event.id, 0)
        fired, state.elapsed[event.id] = divmod(before + ns, period)
        origin = kernel.now_ns - before
        periods += [(origin + k * period, event) for k in range(1, fired + 1)]
    end = kernel.now_ns + ns
    for when, event in sorted(periods, key=lambda item: (item[0], item[1].id)):
        kernel.advance(max(0, when - kernel.now_ns))
        if event.active:
            _clock_overflow(firing, event, _clock_period(event))
    kernel.advance(max(0, end - kernel.now_ns))
    return firing.result()


def _clock_overflow(firing: _Firing, event: PerfEvent, period: int) -> None:
    """One hrtimer period of a clock event: its program, then (unless it said 0) the sample."""
    event.count += period
    program = event.program
    if program is not None and program.prog_type is ProgType.PERF_EVENT:
        ctx = perf_event_data(firing.regs, period)
        context = firing.context(event.bpf_cookie)
        if not firing.run(program, ctx, "perf event", context):
            return
    firing.output(event, b"")


__all__ = [
    "FireResult",
    "ProgramRun",
    "TriggerState",
    "fire_kprobe",
    "fire_tracepoint",
    "fire_uprobe",
    "tick",
]
