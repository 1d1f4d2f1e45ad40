"""Events that fire in the simulated kernel (kernelsim.triggers): tracepoints, probes, ticks.

The facts these tests pin were measured on 6.18 (tests/test_events_e2e.py and the measurements
in docs/fidelity/events.md): the sample of syscalls/sys_enter_getpid, the AND of program
results, programs running while their perf event is disabled.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys.abi import (
    BpfFunc,
    MapType,
    PerfAttrFlag,
    PerfEventAttr,
    PerfSwId,
    PerfType,
    ProgType,
    SampleType,
)
from bpfsys.asm import assemble_text
from bpfsys.attach import perf_attach
from bpfsys.backend import Mapping
from bpfsys.bpf import (
    enable_stats,
    map_create,
    map_lookup_elem,
    prog_info,
    prog_load,
    raw_tracepoint_open,
)
from bpfsys.fd import OwnedFd
from bpfsys.perf_buffer import PerfRingReader
from bpfsys.perf_event import (
    Enable,
    ProbeKind,
    Refresh,
    SetBpf,
    SetFilter,
    perf_event_ioctl,
    perf_event_open,
    perf_event_open_probe,
)
from bpfsys.perf_records import Sample
from kernelsim.backend import SimBackend
from kernelsim.kernel import Kernel, KernelConfig
from kernelsim.tracefs import Tracefs
from kernelsim.triggers import ProgramRun

PAGE = mmap.PAGESIZE
GETPID_ID = 309
ST = SampleType.RAW | SampleType.TID | SampleType.CPU | SampleType.IP | SampleType.PERIOD


OPENED: list[OwnedFd] = []
"""What a test opened (closed after it)."""


def keep(thing: OwnedFd) -> OwnedFd:
    OPENED.append(thing)
    return thing


def close_opened() -> None:
    while OPENED:
        OPENED.pop().close()


@pytest.fixture
def sim() -> Iterator[SimBackend]:
    backend = SimBackend(Kernel(KernelConfig(cpus=2, pid=4242, comm="tester")))
    yield backend
    close_opened()
    backend.kernel.close_all()


class TraceEvent:
    """A RAW-sampling tracepoint perf event with a mapped ring."""

    def __init__(
        self,
        sim: SimBackend,
        config: int = GETPID_ID,
        *,
        pid: int = -1,
        cpu: int = 0,
        period: int = 1,
        disabled: bool = False,
    ) -> None:
        attr = PerfEventAttr(
            type=PerfType.TRACEPOINT, size=ctypes.sizeof(PerfEventAttr), config=config,
            sample_type=ST, sample_period=period, wakeup_events=1,
            flags=int(PerfAttrFlag.DISABLED) if disabled else 0,
        )  # fmt: skip
        self.fd = keep(perf_event_open(attr, pid, cpu, backend=sim))
        self.mapping = sim.mmap(self.fd.fileno(), 2 * PAGE, 3, mmap.MAP_SHARED, 0)
        OPENED.append(self.mapping)  # type: ignore[arg-type]

    def samples(self) -> list[Sample]:
        reader = PerfRingReader(self.mapping, data_offset=PAGE, sample_type=int(ST))
        try:
            return [r for r in reader.records() if isinstance(r, Sample)]
        finally:
            reader.release()


def returns(sim: SimBackend, value: int, prog_type: ProgType = ProgType.TRACEPOINT) -> OwnedFd:
    return keep(prog_load(prog_type, assemble_text(f"mov %r0, {value}\nexit"), backend=sim))


def getpid(sim: SimBackend, **options: object) -> object:
    return sim.kernel.fire_tracepoint("syscalls/sys_enter_getpid", {"__syscall_nr": 39}, **options)


# ---------------------------------------------------------------------------------------------
# Tracepoint samples
# ---------------------------------------------------------------------------------------------
def test_sample_of_sys_enter_getpid_as_measured(sim: SimBackend) -> None:
    event = TraceEvent(sim)
    getpid(sim, regs={"ip": 0x7F5771CF34E7})
    [sample] = event.samples()
    assert sample.raw == bytes.fromhex("3501000192100000270000000000000000000000")
    assert (sample.pid, sample.tid, sample.cpu, sample.period) == (4242, 4242, 0, 1)
    assert (sample.ip, sample.misc) == (0x7F5771CF34E7, 2)  # user registers: MISC_USER


@pytest.mark.parametrize(
    ("results", "sampled"), [((1,), 1), ((0,), 0), ((2,), 0), ((3,), 1), ((1, 2), 0), ((1, 3), 1)]
)
def test_programs_and_their_results(
    sim: SimBackend, results: tuple[int, ...], sampled: int
) -> None:
    event = TraceEvent(sim)
    others: list[OwnedFd] = []
    for index, value in enumerate(results):
        host = event.fd if index == 0 else TraceEvent(sim).fd
        others.append(host)
        perf_event_ioctl(host, SetBpf(returns(sim, value)))
    outcome = getpid(sim)
    assert [run.retval for run in outcome.runs] == list(results)  # type: ignore[attr-defined]
    assert len(event.samples()) == sampled


def test_programs_run_while_their_event_is_disabled_or_elsewhere(sim: SimBackend) -> None:
    host = TraceEvent(sim, cpu=1, disabled=True)
    prog = returns(sim, 1)
    perf_event_ioctl(host.fd, SetBpf(prog))
    outcome = getpid(sim, cpu=0)
    assert outcome.runs == (ProgramRun(prog_id(sim, prog), 1),)  # type: ignore[attr-defined]
    assert host.samples() == []


def lookup(sim: SimBackend, fd: OwnedFd, size: int) -> bytes:
    found = map_lookup_elem(fd, bytes(4), size, backend=sim)
    assert found is not None
    return found


def prog_id(sim: SimBackend, prog: OwnedFd) -> int:
    return int(prog_info(prog, backend=sim).id)


def test_which_events_sample(sim: SimBackend) -> None:
    cpu0 = TraceEvent(sim, cpu=0)
    cpu1 = TraceEvent(sim, cpu=1)
    mine = TraceEvent(sim, pid=4242, cpu=-1)
    other = TraceEvent(sim, pid=0, cpu=-1)  # 0: the caller, the simulated task 4242
    disabled = TraceEvent(sim, disabled=True)
    getpid(sim, cpu=1)
    getpid(sim, cpu=0, pid=777)
    assert [len(e.samples()) for e in (cpu0, cpu1, mine, other, disabled)] == [1, 1, 1, 1, 0]
    perf_event_ioctl(disabled.fd, Enable())
    getpid(sim)
    assert len(disabled.samples()) == 1


def test_filter_decides_the_events_own_sample(sim: SimBackend) -> None:
    filtered = TraceEvent(sim)
    plain = TraceEvent(sim)
    buf = ctypes.create_string_buffer(b"common_pid == 1")
    perf_event_ioctl(filtered.fd, SetFilter(buf.value.decode()))
    getpid(sim)
    getpid(sim, pid=1)
    assert [s.pid for s in filtered.samples()] == [1]
    assert [s.pid for s in plain.samples()] == [4242, 1]


def test_sample_period_and_refresh(sim: SimBackend) -> None:
    every_third = TraceEvent(sim, period=3)
    limited = TraceEvent(sim, disabled=True)
    perf_event_ioctl(limited.fd, Refresh(2))
    for _ in range(7):
        getpid(sim)
    assert len(every_third.samples()) == 2
    assert len(limited.samples()) == 2  # then the event turned itself off


def test_record_fields_by_name_and_as_bytes(sim: SimBackend) -> None:
    tracefs = sim.kernel.subsystem(Tracefs)
    call = tracefs.by_name("sched", "sched_process_exec")
    assert call is not None
    event = TraceEvent(sim, config=call.id)
    sim.kernel.fire_tracepoint("sched_process_exec", {"filename": "/bin/ls", "pid": 5})
    sim.kernel.fire_tracepoint("sched/sched_process_exec", bytes(range(1, 13)))
    first, second = (s.raw for s in event.samples())
    assert first is not None and second is not None
    assert struct.unpack_from("<IiI", first, 8) == (8 << 16 | 20, 5, 0)
    assert first[20:28] == b"/bin/ls\0" and len(first) == 28
    assert second[8:20] == bytes(range(1, 13))
    with pytest.raises(ValueError, match="no field"):
        sim.kernel.fire_tracepoint("sched_process_exec", {"nope": 1})
    with pytest.raises(ValueError, match="no tracepoint"):
        sim.kernel.fire_tracepoint("sched/nope")
    with pytest.raises(ValueError, match="not online"):
        getpid(sim, cpu=2)


# ---------------------------------------------------------------------------------------------
# What programs see
# ---------------------------------------------------------------------------------------------
def test_context_task_and_cookie(sim: SimBackend) -> None:
    """The program reads the record, the current task's pid and comm and its cookie."""
    with map_create(MapType.ARRAY, 4, 32, 1, backend=sim) as out:
        text = f"""
            mov %r6, %r1
            stw [%r10-4], 0
            lddw %r1, map_fd({out.fileno()})
            mov %r2, %r10
            add %r2, -4
            call {int(BpfFunc.MAP_LOOKUP_ELEM)}
            jeq %r0, 0, done
            mov %r7, %r0
            ldxw %r1, [%r6+8]
            stxw [%r7+0], %r1
            call {int(BpfFunc.GET_CURRENT_PID_TGID)}
            stxdw [%r7+8], %r0
            mov %r1, %r6
            call {int(BpfFunc.GET_ATTACH_COOKIE)}
            stxdw [%r7+16], %r0
            mov %r1, %r7
            add %r1, 24
            mov %r2, 8
            call {int(BpfFunc.GET_CURRENT_COMM)}
            done:
            mov %r0, 1
            exit
        """
        prog = keep(prog_load(ProgType.TRACEPOINT, assemble_text(text), backend=sim))
        host = TraceEvent(sim)
        with perf_attach(prog, host.fd, cookie=0xC0FFEE, backend=sim):
            getpid(sim, pid=99, comm="worker-thread")
            value = lookup(sim, out, 32)
    assert struct.unpack("<IIQQ8s", value) == (39, 0, 99 << 32 | 99, 0xC0FFEE, b"worker-\0")


def test_raw_tracepoint_programs_run_first_with_their_arguments(sim: SimBackend) -> None:
    with map_create(MapType.ARRAY, 4, 8, 1, backend=sim) as out:
        text = f"""
            ldxdw %r6, [%r1+8]
            stw [%r10-4], 0
            lddw %r1, map_fd({out.fileno()})
            mov %r2, %r10
            add %r2, -4
            call {int(BpfFunc.MAP_LOOKUP_ELEM)}
            jeq %r0, 0, done
            stxdw [%r0+0], %r6
            done:
            mov %r0, 0
            exit
        """
        prog = keep(prog_load(ProgType.RAW_TRACEPOINT, assemble_text(text), backend=sim))
        with raw_tracepoint_open(prog, "sys_enter", backend=sim):
            perf_side = returns(sim, 1)
            host = TraceEvent(sim, config=443)  # raw_syscalls/sys_enter
            perf_event_ioctl(host.fd, SetBpf(perf_side))
            outcome = sim.kernel.fire_tracepoint(
                "raw_syscalls/sys_enter", {"id": 39}, raw_args=(0, 39)
            )
            value = lookup(sim, out, 8)
    assert [run.retval for run in outcome.runs] == [0, 1]
    assert struct.unpack("<Q", value) == (39,)
    [sample] = host.samples()
    assert sample.misc == 1  # a kernel tracepoint: kernel registers


def test_run_statistics_only_while_enabled(sim: SimBackend) -> None:
    prog = returns(sim, 1)
    host = TraceEvent(sim)
    perf_event_ioctl(host.fd, SetBpf(prog))
    getpid(sim)
    assert prog_info(prog, backend=sim).run_cnt == 0
    with enable_stats(backend=sim):
        getpid(sim)
        getpid(sim)
    info = prog_info(prog, backend=sim)
    assert info.run_cnt == 2 and info.run_time_ns > 0


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------
def regs_program(sim: SimBackend, out: OwnedFd) -> OwnedFd:
    """A kprobe program storing regs->di, bpf_get_func_ip and the cookie."""
    text = f"""
        mov %r6, %r1
        stw [%r10-4], 0
        lddw %r1, map_fd({out.fileno()})
        mov %r2, %r10
        add %r2, -4
        call {int(BpfFunc.MAP_LOOKUP_ELEM)}
        jeq %r0, 0, done
        mov %r7, %r0
        ldxdw %r1, [%r6+112]
        stxdw [%r7+0], %r1
        mov %r1, %r6
        call {int(BpfFunc.GET_FUNC_IP)}
        stxdw [%r7+8], %r0
        mov %r1, %r6
        call {int(BpfFunc.GET_ATTACH_COOKIE)}
        stxdw [%r7+16], %r0
        done:
        mov %r0, 1
        exit
    """
    return keep(prog_load(ProgType.KPROBE, assemble_text(text), backend=sim))


def test_kprobe_programs_get_pt_regs_func_ip_and_cookie(sim: SimBackend) -> None:
    from kernelsim.perf.kallsyms import kprobe_symbol

    symbol = kprobe_symbol("do_sys_openat2")
    assert symbol is not None
    with map_create(MapType.ARRAY, 4, 24, 1, backend=sim) as out:
        prog = regs_program(sim, out)
        probe = perf_event_open_probe(ProbeKind.KPROBE, "do_sys_openat2", backend=sim)
        with perf_attach(prog, probe, cookie=7, backend=sim):
            outcome = sim.kernel.fire_kprobe("do_sys_openat2", {"rdi": 0xABC})
            missed = sim.kernel.fire_kprobe("do_sys_openat2", {"rdi": 1}, offset=4)
            value = lookup(sim, out, 24)
    assert len(outcome.runs) == 1 and missed.runs == ()
    assert struct.unpack("<QQQ", value) == (0xABC, symbol.address, 7)


def test_uprobe_programs_and_func_ip(sim: SimBackend) -> None:
    with map_create(MapType.ARRAY, 4, 24, 1, backend=sim) as out:
        prog = regs_program(sim, out)
        probe = perf_event_open_probe(ProbeKind.UPROBE, sys.executable, 0x40, backend=sim)
        with perf_attach(prog, probe, backend=sim):
            outcome = sim.kernel.fire_uprobe(sys.executable, 0x40, {"di": 5, "ip": 0x401040})
            sim.kernel.fire_uprobe(sys.executable, 0x44, {"di": 6})
            value = lookup(sim, out, 24)
    assert len(outcome.runs) == 1
    assert struct.unpack("<QQQ", value) == (5, 0x401040, 0)


# ---------------------------------------------------------------------------------------------
# Clock ticks
# ---------------------------------------------------------------------------------------------
def clock_event(sim: SimBackend, period: int, *, freq: bool = False) -> tuple[OwnedFd, Mapping]:
    attr = PerfEventAttr(
        type=PerfType.SOFTWARE, size=ctypes.sizeof(PerfEventAttr), config=PerfSwId.CPU_CLOCK,
        sample_period=period, sample_type=int(SampleType.TIME | SampleType.RAW),
        flags=int(PerfAttrFlag.FREQ) if freq else 0,
    )  # fmt: skip
    fd = keep(perf_event_open(attr, -1, 0, backend=sim))
    mapping = sim.mmap(fd.fileno(), 2 * PAGE, 3, mmap.MAP_SHARED, 0)
    OPENED.append(mapping)  # type: ignore[arg-type]
    return fd, mapping


def clock_samples(mapping: Mapping) -> list[Sample]:
    reader = PerfRingReader(
        mapping, data_offset=PAGE, sample_type=int(SampleType.TIME | SampleType.RAW)
    )
    try:
        return [r for r in reader.records() if isinstance(r, Sample)]
    finally:
        reader.release()


def test_tick_samples_once_per_period(sim: SimBackend) -> None:
    _, mapping = clock_event(sim, 100_000)
    start = sim.kernel.now_ns
    sim.kernel.tick(0, 250_000)
    sim.kernel.tick(1, 1_000_000)  # the clock moves; CPU 0's event counts only CPU 0's ticks
    sim.kernel.tick(0, 50_000)
    times = [s.time for s in clock_samples(mapping)]
    assert [t - start for t in times if t is not None] == [100_000, 200_000, 1_300_000]
    assert sim.kernel.now_ns >= start + 1_300_000


def test_tick_runs_the_perf_event_program(sim: SimBackend) -> None:
    fd, mapping = clock_event(sim, 1000, freq=True)  # 1000 Hz: a 1 ms period
    text = "ldxdw %r0, [%r1+168]\nrsh %r0, 21\nexit"  # sample_period >> 21: 0 for 1 ms
    prog = keep(prog_load(ProgType.PERF_EVENT, assemble_text(text), backend=sim))
    perf_event_ioctl(fd, SetBpf(prog))
    outcome = sim.kernel.tick(0, 3_500_000, regs={"ip": 0x1234})
    assert [run.retval for run in outcome.runs] == [0, 0, 0]
    assert clock_samples(mapping) == []  # the program returned 0: no sample
    text = "ldxdw %r0, [%r1+168]\nexit"
    passing = keep(prog_load(ProgType.PERF_EVENT, assemble_text(text), backend=sim))
    fd2, mapping2 = clock_event(sim, 1000, freq=True)
    perf_event_ioctl(fd2, SetBpf(passing))
    outcome = sim.kernel.tick(0, 1_000_000)
    assert 1_000_000 in [run.retval for run in outcome.runs]
    assert len(clock_samples(mapping2)) == 1


@settings(max_examples=40, deadline=None)
@given(raw=st.binary(max_size=64), cpu=st.integers(0, 1), pid=st.integers(1, 1 << 22))
def test_fired_records_of_any_bytes_only_write_samples(raw: bytes, cpu: int, pid: int) -> None:
    backend = SimBackend(Kernel(KernelConfig(cpus=2)))
    event = TraceEvent(backend, cpu=cpu)
    host = TraceEvent(backend, cpu=cpu)
    perf_event_ioctl(host.fd, SetBpf(returns(backend, 1)))
    outcome = backend.kernel.fire_tracepoint("sched/sched_switch", raw, cpu=cpu, pid=pid)
    assert outcome.samples == 0  # the events count getpid, not sched_switch
    getpid(backend, cpu=cpu, pid=pid)
    assert len(event.samples()) == 1
    close_opened()
    backend.kernel.close_all()
    assert not {"PerfEvent", "BpfProgram"} & set(backend.kernel.live_objects())
