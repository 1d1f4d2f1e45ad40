"""Acceptance: a tracepoint program sends a struct through a perf buffer and a BPF ring buffer.

On both backends the same program (bpfsys.asm) runs on syscalls/sys_enter_getpid: it keeps
only this process's calls (the tgid is compared with os.getpid()), counts them in an ARRAY map
and sends {tgid, count, marker, __syscall_nr from the context, cpu} with bpf_perf_event_output
(BPF_F_CURRENT_CPU) into a PERF_EVENT_ARRAY or with bpf_ringbuf_output into a RINGBUF. The
live kernel is triggered by os.getpid() with the process pinned to one CPU; the simulated one
by kernel.fire_tracepoint on that CPU for that pid. The records are drained with
bpfsys.perf_buffer.PerfEventArray and bpfsys.ringbuf.RingBuf and compared field by field.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Final

import pytest

from bpfsys.abi import BpfFunc, MapType, ProgType
from bpfsys.asm import assemble_text
from bpfsys.attach import perf_attach
from bpfsys.backend import Backend
from bpfsys.bpf import map_create, map_lookup_elem, prog_load
from bpfsys.fd import OwnedFd
from bpfsys.perf_buffer import PerfEventArray
from bpfsys.perf_event import perf_event_open_trace_point
from bpfsys.perf_records import Sample
from bpfsys.ringbuf import RingBuf
from kernelsim.backend import SimBackend

MARKER: Final = 0x5EED_F00D_CAFE_D00D
GETPID_NR: Final = 39
RECORD = struct.Struct("<IIQII")
"""tgid, count, marker, __syscall_nr, cpu (24 bytes)."""
CALLS: Final = 3


@pytest.fixture
def pinned_cpu() -> Iterator[int]:
    """Pin this process to one CPU (the highest it may use) for the test."""
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def program(counter: OwnedFd, output: str) -> str:
    """The program: r6 = ctx; returns 0 after sending the record (or ignoring the call)."""
    return f"""
        mov %r6, %r1
        call {int(BpfFunc.GET_CURRENT_PID_TGID)}
        rsh %r0, 32
        jne %r0, {os.getpid()}, out
        mov %r7, %r0
        stw [%r10-4], 0
        lddw %r1, map_fd({counter.fileno()})
        mov %r2, %r10
        add %r2, -4
        call {int(BpfFunc.MAP_LOOKUP_ELEM)}
        jeq %r0, 0, out
        mov %r8, 1
        lock fetch add32 [%r0], %r8
        add %r8, 1
        stxw [%r10-32], %r7
        stxw [%r10-28], %r8
        lddw %r1, {MARKER:#x}
        stxdw [%r10-24], %r1
        ldxw %r1, [%r6+8]
        stxw [%r10-16], %r1
        call {int(BpfFunc.GET_SMP_PROCESSOR_ID)}
        stxw [%r10-12], %r0
        {output}
        out:
        mov %r0, 0
        exit
    """


PERF_OUTPUT = f"""
        mov %r1, %r6
        lddw %r2, map_fd({{events}})
        lddw %r3, 0xffffffff
        mov %r4, %r10
        add %r4, -32
        mov %r5, {RECORD.size}
        call {int(BpfFunc.PERF_EVENT_OUTPUT)}
"""
RINGBUF_OUTPUT = f"""
        lddw %r1, map_fd({{events}})
        mov %r2, %r10
        add %r2, -32
        mov %r3, {RECORD.size}
        mov %r4, 0
        call {int(BpfFunc.RINGBUF_OUTPUT)}
"""


def trigger(backend: Backend, cpu: int) -> None:
    """CALLS getpid() calls of this process on `cpu`."""
    for _ in range(CALLS):
        if isinstance(backend, SimBackend):
            backend.kernel.fire_tracepoint(
                "syscalls/sys_enter_getpid", {"__syscall_nr": GETPID_NR}, cpu=cpu,
                pid=os.getpid(),
            )  # fmt: skip
        else:
            os.getpid()


def attach(backend: Backend, counter: OwnedFd, events: OwnedFd, output: str) -> OwnedFd:
    text = program(counter, output.format(events=events.fileno()))
    return prog_load(ProgType.TRACEPOINT, assemble_text(text), backend=backend)


def expected(cpu: int) -> list[tuple[int, int, int, int, int]]:
    return [(os.getpid(), n, MARKER, GETPID_NR, cpu) for n in range(1, CALLS + 1)]


def test_perf_event_output_from_a_tracepoint(backend: Backend, pinned_cpu: int) -> None:
    cpu = pinned_cpu
    with (
        map_create(MapType.ARRAY, 4, 4, 1, backend=backend) as counter,
        map_create(MapType.PERF_EVENT_ARRAY, 4, 4, cpu + 1, backend=backend) as events,
        PerfEventArray.open(events, 1, cpus=[cpu], backend=backend) as array,
        attach(backend, counter, events, PERF_OUTPUT) as prog,
    ):
        tp = perf_event_open_trace_point("syscalls", "sys_enter_getpid", backend=backend)
        with perf_attach(prog, tp, backend=backend):
            trigger(backend, cpu)
        records = list(array.records())
    samples = [r for c, r in records if isinstance(r, Sample) and c == cpu]
    assert len(samples) == len(records) == CALLS
    got = [RECORD.unpack(s.raw[: RECORD.size]) for s in samples if s.raw is not None]
    assert got == expected(cpu)
    assert [s.raw[RECORD.size :] for s in samples if s.raw] == [b"\0" * 4] * CALLS
    assert {s.misc for s in samples} == {1}  # tracepoint programs: kernel registers


def test_ringbuf_output_from_a_tracepoint(backend: Backend, pinned_cpu: int) -> None:
    cpu = pinned_cpu
    with (
        map_create(MapType.ARRAY, 4, 4, 1, backend=backend) as counter,
        map_create(MapType.RINGBUF, 0, 0, 4096, backend=backend) as events,
        RingBuf.open(events, backend=backend) as ring,
        attach(backend, counter, events, RINGBUF_OUTPUT) as prog,
    ):
        tp = perf_event_open_trace_point("syscalls", "sys_enter_getpid", backend=backend)
        with perf_attach(prog, tp, backend=backend):
            trigger(backend, cpu)
        assert ring.poll(0)
        got = [RECORD.unpack(record) for record in ring.records()]
        count = map_lookup_elem(counter, bytes(4), 4, backend=backend)
    assert got == expected(cpu)
    assert count == struct.pack("<I", CALLS)
