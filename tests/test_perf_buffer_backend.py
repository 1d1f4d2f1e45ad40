"""PerfBuffer and PerfEventArray on a backend: opening, error paths, records the kernel writes.

Records come from a raw tracepoint program calling bpf_perf_event_output, run by
BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU (kernelsim.strategies.ProgramPerfWriter). On the
simulated kernel these tests run once its perf events and ring exist (kernelsim.perf.syscall
and kernelsim.perf.ring); until then its half is skipped with that reason.
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from importlib.util import find_spec
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from bpfsys.abi import BpfFunc, MapType, ProgType
from bpfsys.asm import assemble_text
from bpfsys.backend import Backend, Mapping, WritableBuffer
from bpfsys.bpf import map_create, prog_load, prog_test_run
from bpfsys.cpus import POSSIBLE_CPUS_PATH, online_cpus, possible_cpus
from bpfsys.perf_buffer import Events, PerfBuffer, PerfEventArray
from bpfsys.perf_records import LostRecord, Sample, raw_padded_size
from bpfsys.syscall import SyscallError
from kernelsim.backend import SimBackend
from kernelsim.strategies import (
    ProgramPerfWriter,
    SimPerfWriter,
    payload,
    perf_ring_machine,
    program_writer_unavailable,
)

SIM_PERF_MODULES = ("kernelsim.perf.syscall", "kernelsim.perf.ring")
PAGE = mmap.PAGESIZE


@pytest.fixture
def perf_backend(backend: Backend) -> Backend:
    """`backend`, with the simulated half skipped until the simulated perf ring exists."""
    if isinstance(backend, SimBackend):
        missing = [m for m in SIM_PERF_MODULES if not find_spec(m)]
        if missing:
            pytest.skip(f"simulated perf ring not built yet ({', '.join(missing)})")
    return backend


@pytest.fixture
def program_backend(perf_backend: Backend) -> Backend:
    """`perf_backend`, where programs calling bpf_perf_event_output run."""
    reason = program_writer_unavailable(perf_backend, BpfFunc.PERF_EVENT_OUTPUT)
    if reason is not None:
        pytest.skip(reason)
    return perf_backend


@pytest.fixture
def writer(program_backend: Backend) -> Iterator[ProgramPerfWriter]:
    """A one-page ring on CPU 0 fed by bpf_perf_event_output."""
    made = ProgramPerfWriter(PAGE, backend=program_backend, cpu=0, max_payload=PAGE + 128)
    yield made
    made.close()


def samples(records: Iterator[object]) -> list[bytes]:
    return [r.raw or b"" for r in records if isinstance(r, Sample)]


# ---------------------------------------------------------------------------------------------
# CPUs
# ---------------------------------------------------------------------------------------------
def test_cpu_lists_come_from_sysfs(backend: Backend) -> None:
    online, possible = online_cpus(backend), possible_cpus(backend)
    assert online and set(online) <= set(possible)
    assert online == sorted(set(online))


class Files:
    """Just enough of a backend to serve files."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def read_file(self, path: str) -> bytes:
        if self.text == b"missing":
            raise OSError(errno.ENOENT, path)
        return self.text


@pytest.mark.parametrize("text", [b"zero-one\n", b"\n", b"3-x"])
def test_cpu_list_that_is_not_one(text: bytes) -> None:
    with pytest.raises(ValueError, match="CPU list"):
        online_cpus(Files(text))  # type: ignore[arg-type]


def test_cpu_list_file_missing() -> None:
    with pytest.raises(SyscallError) as exc:
        possible_cpus(Files(b"missing"))  # type: ignore[arg-type]
    assert exc.value.errno == errno.ENOENT and exc.value.filename == POSSIBLE_CPUS_PATH


# ---------------------------------------------------------------------------------------------
# Opening and closing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pages", [0, 3, 5, 6, -2, 2.0, True])
def test_page_count_must_be_a_power_of_two(
    perf_backend: Backend, pages: Any, no_fd_leak: None
) -> None:
    with pytest.raises(ValueError, match="power of two"):
        PerfBuffer.open(0, pages, backend=perf_backend)


@pytest.mark.parametrize("pages", [1, 2, 8])
def test_open_maps_header_and_data_pages_and_close_releases(
    perf_backend: Backend, pages: int, no_fd_leak: None
) -> None:
    with PerfBuffer.open(0, pages, backend=perf_backend) as buf:
        assert buf.reader.data_size == pages * PAGE
        assert buf.fileno() >= 0 and not buf.readable()
        assert buf.read_events([bytearray()]) == Events(0, 0)
    assert buf.closed
    buf.close()  # idempotent


def test_open_failure_closes_the_fd(perf_backend: Backend, no_fd_leak: None) -> None:
    with pytest.raises(SyscallError) as bad_cpu:
        PerfBuffer.open(1 << 20, backend=perf_backend)
    assert bad_cpu.value.call == "perf_event_open"
    with pytest.raises(SyscallError) as bad_length:  # perf_mmap: length is not 1 + 2^n pages
        PerfBuffer.open(0, 2, backend=perf_backend, page_size=PAGE * 2)
    assert bad_length.value.call == "mmap" and bad_length.value.errno == errno.EINVAL


class FailingIoctl:
    """Delegates to `inner`, except that every ioctl fails with EIO; records unmapping."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.unmapped: list[Mapping] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        return self.inner.perf_event_open(attr, pid, cpu, group_fd, flags)

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping:
        return self.inner.mmap(fd, length, prot, flags, offset)

    def munmap(self, mapping: Mapping) -> None:
        self.unmapped.append(mapping)
        self.inner.munmap(mapping)

    def close(self, fd: int) -> None:
        self.inner.close(fd)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        raise OSError(errno.EIO, "injected")


def test_enable_failure_unmaps_and_closes(perf_backend: Backend, no_fd_leak: None) -> None:
    failing = FailingIoctl(perf_backend)
    with pytest.raises(SyscallError) as exc:
        PerfBuffer.open(0, backend=failing)
    assert exc.value.errno == errno.EIO and exc.value.call == "ioctl(PERF_EVENT_IOC_ENABLE)"
    assert len(failing.unmapped) == 1 and failing.unmapped[0].closed


def test_close_still_closes_the_fd_when_unmapping_fails(
    perf_backend: Backend, no_fd_leak: None
) -> None:
    buf = PerfBuffer.open(0, backend=perf_backend)
    held = memoryview(buf.mapping)  # a view kept alive: munmap answers EBUSY
    with pytest.raises(SyscallError) as exc:
        buf.close()
    assert exc.value.errno == errno.EBUSY and buf.closed
    held.release()
    perf_backend.munmap(buf.mapping)


# ---------------------------------------------------------------------------------------------
# Records the kernel writes
# ---------------------------------------------------------------------------------------------
def test_samples_from_bpf_perf_event_output(writer: ProgramPerfWriter) -> None:
    sent = [payload(i, n) for i, n in enumerate([0, 1, 3, 4, 5, 12, 13, 100])]
    assert all(writer.output(data) for data in sent)
    got = samples(writer.reader.records())
    assert [g[: len(s)] for g, s in zip(got, sent, strict=True)] == sent
    assert [len(g) for g in got] == [raw_padded_size(len(s)) for s in sent]
    assert writer.reader.data_tail == writer.reader.data_head


def test_read_events_and_batches_on_kernel_records(writer: ProgramPerfWriter) -> None:
    for i in range(5):
        assert writer.output(payload(i, 52))  # 64-byte records
    buffers = [bytearray() for _ in range(2)]
    assert writer.buffer.read_events(buffers) == Events(2, 0)
    assert [bytes(b) for b in buffers] == [payload(0, 52), payload(1, 52)]
    with writer.buffer.read_batch() as batch:
        [run] = batch.runs
        assert (run.size, run.count, run.misc) == (64, 3, 1)  # PERF_RECORD_MISC_KERNEL
        assert [bytes(v) for v in run.raw_samples()] == [payload(i, 52) for i in (2, 3, 4)]


def test_kernel_counts_what_a_stalled_consumer_lost(writer: ProgramPerfWriter) -> None:
    results = [writer.output(payload(i, 52)) for i in range(80)]
    assert results == [True] * 63 + [False] * 17  # 63 * 64 = 4032 <= 4095 < 4096
    assert len(samples(writer.reader.records())) == 63
    assert writer.output(b"next")
    lost, after = writer.reader.records()
    assert isinstance(lost, LostRecord) and lost.lost == 17
    assert isinstance(after, Sample) and after.raw == b"next"


def test_record_near_the_ring_size_on_one_page(writer: ProgramPerfWriter) -> None:
    from test_perf_buffer import check_record_near_the_ring_size

    check_record_near_the_ring_size(writer.output, writer.reader)


def test_raw_padding_is_left_stale(writer: ProgramPerfWriter) -> None:
    from test_perf_buffer import check_padding_is_left_stale

    check_padding_is_left_stale(writer.output, writer.reader)


def test_kernel_writer_thread_while_the_consumer_reads(writer: ProgramPerfWriter) -> None:
    total, got = 600, []
    failed: list[int] = []

    def produce() -> None:
        for seq in range(total):
            while not writer.output(payload(seq, seq % 29)):
                failed.append(seq)  # the kernel dropped it: counted, and sent again

    producer = threading.Thread(target=produce)
    producer.start()
    lost = 0
    while producer.is_alive() or writer.reader.readable():
        for record in writer.reader.records(16):
            if isinstance(record, LostRecord):
                lost += record.lost
            else:
                assert isinstance(record, Sample) and record.raw is not None
                got.append(record.raw)
    producer.join()
    if failed:  # the last lost count goes out with one more record
        assert writer.output(b"")
        lost += sum(r.lost for r in writer.reader.records() if isinstance(r, LostRecord))
    assert lost == len(failed)
    assert [g[: seq % 29] for seq, g in enumerate(got)] == [
        payload(seq, seq % 29) for seq in range(total)
    ]


# ---------------------------------------------------------------------------------------------
# A buffer per CPU
# ---------------------------------------------------------------------------------------------
def output_program(backend: Backend, perf_map: Any) -> Any:
    """A raw tracepoint program writing its u64 ctx[0] to `perf_map` on the current CPU."""
    insns = assemble_text(
        f"""
        ldxdw %r2, [%r1+0]
        stxdw [%r10-8], %r2
        lddw %r2, map_fd({perf_map.fileno()})
        lddw %r3, 0xffffffff
        mov %r4, %r10
        add %r4, -8
        mov %r5, 8
        call 25
        exit
        """
    )
    return prog_load(ProgType.RAW_TRACEPOINT, insns, backend=backend)


@pytest.fixture
def array_and_prog(program_backend: Backend) -> Iterator[tuple[PerfEventArray, Any]]:
    b = program_backend
    cpus = online_cpus(b)
    perf_map = map_create(MapType.PERF_EVENT_ARRAY, 4, 4, max(possible_cpus(b)) + 1, backend=b)
    array = PerfEventArray.open(perf_map, 1, backend=b)
    assert sorted(array.buffers) == cpus
    prog = output_program(b, perf_map)
    yield array, prog
    prog.close()
    array.close()
    perf_map.close()


def run_on(prog: Any, cpu: int, value: int) -> None:
    result = prog_test_run(prog, ctx_in=struct.pack("=Q", value), data_out_size=0, cpu=cpu)
    assert result.retval == 0


def test_array_stores_each_cpu_fd_and_routes_records_by_cpu(
    array_and_prog: tuple[PerfEventArray, Any],
) -> None:
    array, prog = array_and_prog
    assert all(buf.cpu == cpu for cpu, buf in array.buffers.items())
    assert array.poll(0) == []
    for cpu in array.buffers:
        run_on(prog, cpu, 1000 + cpu)
    ready = array.poll(1.0)
    assert sorted(b.cpu for b in ready) == sorted(array.buffers)
    got = [(cpu, r.raw) for cpu, r in array.records() if isinstance(r, Sample)]
    assert got == [(cpu, struct.pack("=Q", 1000 + cpu) + bytes(4)) for cpu in array.buffers]
    assert array.poll(0.01) == []


def test_array_async_iteration(array_and_prog: tuple[PerfEventArray, Any]) -> None:
    array, prog = array_and_prog
    cpus = list(array.buffers)
    want = [(cpus[i % len(cpus)], i) for i in range(12)]

    async def main() -> list[tuple[int, int]]:
        loop = asyncio.get_running_loop()

        def produce() -> None:
            for cpu, value in want:
                run_on(prog, cpu, value)

        producer = loop.run_in_executor(None, produce)
        got: list[tuple[int, int]] = []
        async with asyncio.timeout(10):
            async for cpu, record in array:
                assert isinstance(record, Sample) and record.raw is not None
                got.append((cpu, struct.unpack_from("=Q", record.raw)[0]))
                if len(got) == len(want):
                    break
        await producer
        return got

    got = asyncio.run(main())
    for cpu in cpus:  # order holds per CPU
        assert [v for c, v in got if c == cpu] == [v for c, v in want if c == cpu]


def test_array_open_failure_closes_what_it_opened(perf_backend: Backend, no_fd_leak: None) -> None:
    perf_map = map_create(MapType.PERF_EVENT_ARRAY, 4, 4, 1, backend=perf_backend)
    cpus: Sequence[int] = [0, 1]  # index 1 is beyond max_entries: E2BIG on the second update
    with pytest.raises(SyscallError) as exc:
        PerfEventArray.open(perf_map, cpus=cpus, backend=perf_backend)
    assert exc.value.errno == errno.E2BIG
    perf_map.close()


# ---------------------------------------------------------------------------------------------
# The state machine, the kernel as the writer
# ---------------------------------------------------------------------------------------------
def test_state_machine_with_the_kernel_writing(program_backend: Backend) -> None:
    machine = perf_ring_machine(
        lambda size: ProgramPerfWriter(size, backend=program_backend, max_payload=1024),
        st.just(PAGE),
        max_burst=70,
    )
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        machine, settings=settings(max_examples=20, stateful_step_count=30, deadline=None)
    )


# ---------------------------------------------------------------------------------------------
# The simulator's own ring writer behind a SimBackend mapping
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def sim_perf(sim_factory: Callable[..., SimBackend]) -> SimBackend:
    missing = [m for m in (*SIM_PERF_MODULES, "kernelsim.perf.output") if not find_spec(m)]
    if missing:
        pytest.skip(f"simulated perf ring not built yet ({', '.join(missing)})")
    return sim_factory()


def test_simulator_writer_record_near_the_ring_size(sim_perf: SimBackend) -> None:
    from test_perf_buffer import check_record_near_the_ring_size

    writer = SimPerfWriter(PAGE, sim_perf)
    try:
        check_record_near_the_ring_size(writer.output, writer.reader)
    finally:
        writer.close()


def test_simulator_writer_leaves_padding_stale(sim_perf: SimBackend) -> None:
    from test_perf_buffer import check_padding_is_left_stale

    writer = SimPerfWriter(PAGE, sim_perf)
    try:
        check_padding_is_left_stale(writer.output, writer.reader)
    finally:
        writer.close()


def test_simulator_writer_lost_count(sim_perf: SimBackend) -> None:
    writer = SimPerfWriter(PAGE, sim_perf)
    try:
        results = [writer.output(payload(i, 52)) for i in range(80)]
        assert results == [True] * 63 + [False] * 17  # as the live kernel does
        assert len(samples(writer.reader.records())) == 63
        assert writer.output(b"next")
        lost, after = writer.reader.records()
        assert isinstance(lost, LostRecord) and lost.lost == 17
        assert isinstance(after, Sample) and after.raw == b"next"
    finally:
        writer.close()


def test_state_machine_with_the_simulator_writing(sim_perf: SimBackend) -> None:
    machine = perf_ring_machine(
        lambda size: SimPerfWriter(size, sim_perf), st.sampled_from([PAGE, 2 * PAGE])
    )
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        machine, settings=settings(max_examples=25, stateful_step_count=30, deadline=None)
    )
