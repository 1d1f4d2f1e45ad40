"""RingBuf on a backend: the mapping rules, records from bpf_ringbuf_output, a full ring.

Records come from a raw tracepoint program calling bpf_ringbuf_output, run by
BPF_PROG_TEST_RUN (kernelsim.strategies.ProgramRingBufWriter). The simulated half runs once the
simulated ring buffer can be mapped (kernelsim/maps/ringbuf.py answers ENOTSUPP until then) and
programs run; until then it is skipped with that reason.
"""

from __future__ import annotations

import errno
import mmap
import threading
from collections.abc import Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from bpfsys.abi import BpfFunc, MapType
from bpfsys.backend import Backend
from bpfsys.bpf import map_create
from bpfsys.fd import OwnedFd
from bpfsys.ringbuf import RingBuf, record_size
from bpfsys.syscall import SyscallError
from kernelsim.backend import SimBackend
from kernelsim.errors import ENOTSUPP
from kernelsim.strategies import (
    ProgramRingBufWriter,
    payload,
    program_writer_unavailable,
    ringbuf_machine,
)

PAGE = mmap.PAGESIZE
RW = mmap.PROT_READ | mmap.PROT_WRITE


@pytest.fixture
def rb_backend(backend: Backend) -> Iterator[Backend]:
    """`backend`, with the simulated half skipped while its ring buffer cannot be mapped."""
    if isinstance(backend, SimBackend):
        with map_create(MapType.RINGBUF, 0, 0, PAGE, backend=backend) as probe:
            try:
                backend.munmap(backend.mmap(probe.fileno(), PAGE, RW, mmap.MAP_SHARED, 0))
            except OSError as exc:
                if exc.errno != ENOTSUPP:
                    raise
                pytest.skip("simulated ring buffer cannot be mapped yet (ENOTSUPP)")
    yield backend


@pytest.fixture
def ringbuf_map(rb_backend: Backend) -> Iterator[OwnedFd]:
    with map_create(MapType.RINGBUF, 0, 0, PAGE, backend=rb_backend) as fd:
        yield fd


@pytest.fixture
def program_backend(rb_backend: Backend) -> Backend:
    """`rb_backend`, where programs calling bpf_ringbuf_output run."""
    reason = program_writer_unavailable(rb_backend, BpfFunc.RINGBUF_OUTPUT)
    if reason is not None:
        pytest.skip(reason)
    return rb_backend


@pytest.fixture
def writer(program_backend: Backend) -> Iterator[ProgramRingBufWriter]:
    made = ProgramRingBufWriter(PAGE, backend=program_backend, max_payload=PAGE)
    yield made
    made.close()


# ---------------------------------------------------------------------------------------------
# The mapping rules (kernel/bpf/ringbuf.c ringbuf_map_mmap)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("length", "prot", "offset", "err"),
    [
        (PAGE, RW, 0, None),  # the consumer page
        (PAGE + 2 * PAGE, mmap.PROT_READ, PAGE, None),  # producer page + data twice
        (2 * PAGE, RW, 0, errno.EPERM),  # writable beyond the consumer page
        (PAGE, RW, PAGE, errno.EPERM),  # the producer page writable
    ],
)
def test_which_mappings_the_kernel_allows(
    rb_backend: Backend,
    ringbuf_map: OwnedFd,
    length: int,
    prot: int,
    offset: int,
    err: int | None,
) -> None:
    if err is None:
        rb_backend.munmap(
            rb_backend.mmap(ringbuf_map.fileno(), length, prot, mmap.MAP_SHARED, offset)
        )
        return
    with pytest.raises(OSError) as exc:
        rb_backend.mmap(ringbuf_map.fileno(), length, prot, mmap.MAP_SHARED, offset)
    assert exc.value.errno == err


def test_open_reads_max_entries_and_close_unmaps(
    rb_backend: Backend, ringbuf_map: OwnedFd, no_fd_leak: None
) -> None:
    with RingBuf.open(ringbuf_map) as ring:
        assert ring.reader.data_size == PAGE
        assert ring.fileno() == ringbuf_map.fileno()
        assert not ring.readable() and not ring.poll(0)
        assert ring.consume(print) == 0
    assert ring.closed
    ring.close()


def test_open_failure_leaves_nothing_mapped(rb_backend: Backend, no_fd_leak: None) -> None:
    with map_create(MapType.ARRAY, 4, 8, 1, backend=rb_backend) as array:
        with pytest.raises(SyscallError) as exc:  # an array without BPF_F_MMAPABLE
            RingBuf.open(array, max_entries=PAGE)
        assert exc.value.call == "mmap"


# ---------------------------------------------------------------------------------------------
# Records the kernel writes
# ---------------------------------------------------------------------------------------------
def test_records_from_bpf_ringbuf_output(writer: ProgramRingBufWriter) -> None:
    sent = [payload(i, n) for i, n in enumerate([0, 1, 7, 8, 9, 100])]
    assert all(writer.output(data) for data in sent)
    assert writer.ringbuf.poll(0)
    assert writer.reader.pending() == sum(record_size(len(s)) for s in sent)
    got: list[bytes] = []
    assert writer.ringbuf.consume(lambda view: got.append(bytes(view)), 2) == 2
    assert got + list(writer.ringbuf.records()) == sent
    assert not writer.ringbuf.poll(0.01)


def test_full_ring_refuses_the_producer(writer: ProgramRingBufWriter) -> None:
    results = [writer.output(payload(i, 56)) for i in range(70)]  # 64-byte records
    assert results == [True] * 63 + [False] * 7  # 64 * 64 = 4096 > 4095
    assert len(list(writer.reader.records())) == 63
    assert writer.output(b"again")


def test_one_page_and_a_record_near_the_ring_size(writer: ProgramRingBufWriter) -> None:
    assert not writer.output(bytes(PAGE - 15))  # never fits
    assert writer.output(b"\x07" * (PAGE - 16))
    assert not writer.output(b"")
    assert list(writer.reader.records()) == [b"\x07" * (PAGE - 16)]
    assert writer.output(b"\x08" * (PAGE - 16))  # wraps: contiguous through the double map
    assert list(writer.reader.records()) == [b"\x08" * (PAGE - 16)]


def test_kernel_writer_thread_while_the_consumer_reads(writer: ProgramRingBufWriter) -> None:
    total = 500
    got: list[bytes] = []

    def produce() -> None:
        for seq in range(total):
            while not writer.output(payload(seq, seq % 61)):
                pass

    producer = threading.Thread(target=produce)
    producer.start()
    while producer.is_alive() or writer.reader.readable():
        got.extend(writer.reader.records(8))
    producer.join()
    assert got == [payload(seq, seq % 61) for seq in range(total)]


def test_state_machine_with_the_kernel_writing(program_backend: Backend) -> None:
    machine = ringbuf_machine(
        lambda size: ProgramRingBufWriter(size, backend=program_backend, max_payload=1024),
        st.just(PAGE),
    )
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        machine, settings=settings(max_examples=15, stateful_step_count=40, deadline=None)
    )
