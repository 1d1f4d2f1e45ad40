"""Helpers of event programs, differential: raw tracepoint programs run by PROG_TEST_RUN.

Every case runs on both backends with the process pinned to CPU 0 and the test run on CPU 0
(BPF_F_TEST_RUN_ON_CPU), so the program runs as this process (a test run sent to another CPU
runs in interrupt context there, as whatever task is current). Each compares the helper's
return value and, where the helper writes memory, the bytes it wrote (into an ARRAY value read
back with MAP_LOOKUP_ELEM).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from typing import Final

import pytest

from bpfsys.abi import BpfFunc, MapType, PerfEventAttr, PerfSwId, PerfType, ProgType
from bpfsys.asm import assemble_text
from bpfsys.backend import Backend
from bpfsys.bpf import map_create, map_lookup_elem, map_update_elem, prog_load, prog_test_run
from bpfsys.fd import OwnedFd
from bpfsys.perf_buffer import PerfBuffer
from bpfsys.perf_event import Disable, perf_event_ioctl, perf_event_open, perf_event_open_bpf
from bpfsys.perf_records import Sample
from bpfsys.ringbuf import RingBuf
from kernelsim.backend import SimBackend

PAGE: Final = 4096
NONCANONICAL: Final = 0x0000_9000_0000_0000
TOP: Final = 0xFFFF_FFFF_FFFF_FF00
CURRENT_CPU: Final = 0xFFFF_FFFF


@pytest.fixture(autouse=True)
def on_cpu0() -> Iterator[None]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def signed32(value: int) -> int:
    return value - (1 << 32) if value >> 31 else value


def run(backend: Backend, text: str) -> int:
    """Load `text` as a raw tracepoint program, run it once on CPU 0; its (signed) result."""
    with prog_load(ProgType.RAW_TRACEPOINT, assemble_text(text), backend=backend) as prog:
        result = prog_test_run(prog, ctx_in=bytes(8), cpu=0, data_out_size=0, backend=backend)
    return signed32(result.retval)


# ---------------------------------------------------------------------------------------------
# bpf_perf_event_output
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def perf_map(backend: Backend) -> Iterator[tuple[OwnedFd, PerfBuffer]]:
    """Index 0: a mapped BPF_OUTPUT event on CPU 0; 1: the same, disabled; 2: one on CPU 1
    (when there is a CPU 1); 3: a cpu-clock event on CPU 0; 5: an unmapped BPF_OUTPUT on CPU 0."""
    with map_create(MapType.PERF_EVENT_ARRAY, 4, 4, 6, backend=backend) as events:
        buffer = PerfBuffer.open(0, 1, backend=backend)
        extra: list[OwnedFd] = []
        try:
            map_update_elem(events, struct.pack("<I", 0), struct.pack("<I", buffer.fileno()))
            disabled = perf_event_open_bpf(0, backend=backend)
            perf_event_ioctl(disabled, Disable())
            extra.append(disabled)
            if _cpus(backend) > 1:
                extra.append(perf_event_open_bpf(1, backend=backend))
                map_update_elem(events, b"\2\0\0\0", struct.pack("<I", extra[-1].fileno()))
            clock = PerfEventAttr(
                type=PerfType.SOFTWARE, size=ctypes.sizeof(PerfEventAttr),
                config=PerfSwId.CPU_CLOCK, sample_period=100000,
            )  # fmt: skip
            extra.append(perf_event_open(clock, -1, 0, backend=backend))
            map_update_elem(events, b"\3\0\0\0", struct.pack("<I", extra[-1].fileno()))
            map_update_elem(events, b"\1\0\0\0", struct.pack("<I", disabled.fileno()))
            extra.append(perf_event_open_bpf(0, backend=backend))
            map_update_elem(events, b"\5\0\0\0", struct.pack("<I", extra[-1].fileno()))
            yield events, buffer
        finally:
            for fd in extra:
                fd.close()
            buffer.close()


def _cpus(backend: Backend) -> int:
    if isinstance(backend, SimBackend):
        return backend.kernel.config.online
    return os.cpu_count() or 1


def perf_output_program(events: OwnedFd, flags: int, size: int = 8) -> str:
    return f"""
        lddw %r2, 0x0807060504030201
        stxdw [%r10-8], %r2
        lddw %r2, map_fd({events.fileno()})
        lddw %r3, {flags:#x}
        mov %r4, %r10
        add %r4, -8
        mov %r5, {size}
        call {int(BpfFunc.PERF_EVENT_OUTPUT)}
        exit
    """


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        (CURRENT_CPU, 0),
        (0, 0),
        (1, -errno.EOPNOTSUPP),  # disabled: not on any CPU
        (3, -errno.EINVAL),  # not a BPF_OUTPUT event
        (4, -errno.ENOENT),
        (5, -errno.ENOSPC),  # no ring
        (6, -errno.E2BIG),
        (CURRENT_CPU - 1, -errno.E2BIG),
        (1 << 32, -errno.EINVAL),
        (CURRENT_CPU | 1 << 40, -errno.EINVAL),
    ],
)
def test_perf_event_output_results(
    backend: Backend, perf_map: tuple[OwnedFd, PerfBuffer], flags: int, want: int
) -> None:
    events, buffer = perf_map
    assert run(backend, perf_output_program(events, flags)) == want
    samples = [r for r in buffer.records() if isinstance(r, Sample)]
    if want == 0 and flags in (0, CURRENT_CPU):
        assert [s.raw for s in samples] == [bytes(range(1, 9)) + b"\0" * 4]
    else:
        assert samples == []


def test_perf_event_output_on_another_cpu(
    backend: Backend, perf_map: tuple[OwnedFd, PerfBuffer]
) -> None:
    if _cpus(backend) < 2:
        pytest.skip("one CPU only")
    events, _ = perf_map
    assert run(backend, perf_output_program(events, 2)) == -errno.EOPNOTSUPP


@pytest.mark.parametrize("size", [0, 1, 5, 8])
def test_perf_event_output_sizes(
    backend: Backend, perf_map: tuple[OwnedFd, PerfBuffer], size: int
) -> None:
    events, buffer = perf_map
    assert run(backend, perf_output_program(events, CURRENT_CPU, size)) == 0
    [sample] = [r for r in buffer.records() if isinstance(r, Sample)]
    assert sample.raw is not None and sample.raw[:size] == bytes(range(1, 9))[:size]
    assert len(sample.raw) == (size + 4 + 7) // 8 * 8 - 4


# ---------------------------------------------------------------------------------------------
# BPF ring buffer helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def ring(backend: Backend) -> Iterator[tuple[OwnedFd, RingBuf]]:
    with (
        map_create(MapType.RINGBUF, 0, 0, PAGE, backend=backend) as fd,
        RingBuf.open(fd, backend=backend) as reader,
    ):
        yield fd, reader


def ringbuf_output_program(ring_fd: OwnedFd, size: int, flags: int) -> str:
    return f"""
        lddw %r2, 0x1122334455667788
        stxdw [%r10-8], %r2
        lddw %r1, map_fd({ring_fd.fileno()})
        mov %r2, %r10
        add %r2, -8
        mov %r3, {size}
        lddw %r4, {flags:#x}
        call {int(BpfFunc.RINGBUF_OUTPUT)}
        exit
    """


@pytest.mark.parametrize(
    ("flags", "want"),
    [(0, 0), (1, 0), (2, 0), (3, 0), (4, -errno.EINVAL), (1 << 40, -errno.EINVAL)],
)
def test_ringbuf_output_flags(
    backend: Backend, ring: tuple[OwnedFd, RingBuf], flags: int, want: int
) -> None:
    fd, reader = ring
    assert run(backend, ringbuf_output_program(fd, 5, flags)) == want
    assert list(reader.records()) == ([bytes.fromhex("8877665544")] if want == 0 else [])


def test_ringbuf_output_until_full(backend: Backend, ring: tuple[OwnedFd, RingBuf]) -> None:
    fd, reader = ring
    results = [run(backend, ringbuf_output_program(fd, 8, 0)) for _ in range(257)]
    assert results == [0] * 255 + [-errno.EAGAIN] * 2  # 16-byte records, 4095 bytes at most
    assert len(list(reader.records())) == 255


def query_program(ring_fd: OwnedFd, flags: int) -> str:
    return f"""
        lddw %r1, map_fd({ring_fd.fileno()})
        mov %r2, {flags}
        call {int(BpfFunc.RINGBUF_QUERY)}
        exit
    """


@pytest.mark.parametrize("flags", range(6))
def test_ringbuf_query(backend: Backend, ring: tuple[OwnedFd, RingBuf], flags: int) -> None:
    fd, reader = ring
    for _ in range(3):
        assert run(backend, ringbuf_output_program(fd, 5, 0)) == 0
    assert len(list(reader.records(1))) == 1
    want = {0: 32, 1: PAGE, 2: 16, 3: 48}.get(flags, 0)
    assert run(backend, query_program(fd, flags)) == want


def reserve_program(ring_fd: OwnedFd, size: int, flags: int, discard: bool) -> str:
    return f"""
        lddw %r1, map_fd({ring_fd.fileno()})
        mov %r2, {size}
        mov %r3, {flags}
        call {int(BpfFunc.RINGBUF_RESERVE)}
        jeq %r0, 0, null
        stb [%r0+0], 0x42
        mov %r1, %r0
        mov %r2, 0
        call {int(BpfFunc.RINGBUF_DISCARD if discard else BpfFunc.RINGBUF_SUBMIT)}
        mov %r0, 1
        exit
        null:
        mov %r0, 0
        exit
    """


@pytest.mark.parametrize(
    ("size", "flags", "discard", "want", "records"),
    [
        (3, 0, False, 1, [b"\x42\0\0"]),
        (3, 0, True, 1, []),
        (3, 1, False, 0, []),  # any flag: NULL
        (PAGE - 8, 0, False, 0, []),  # a record as large as the ring never fits
        (PAGE - 16, 0, False, 1, [b"\x42" + bytes(PAGE - 17)]),
    ],
)
def test_ringbuf_reserve(
    backend: Backend,
    ring: tuple[OwnedFd, RingBuf],
    size: int,
    flags: int,
    discard: bool,
    want: int,
    records: list[bytes],
) -> None:
    fd, reader = ring
    assert run(backend, reserve_program(fd, size, flags, discard)) == want
    assert list(reader.records()) == records


def test_ringbuf_discarded_record_header(backend: Backend, ring: tuple[OwnedFd, RingBuf]) -> None:
    """The header as the kernel leaves it: length | DISCARD, pg_off 3; pending_pos at 8."""
    fd, _ = ring
    assert run(backend, reserve_program(fd, 3, 0, True)) == 1
    assert run(backend, ringbuf_output_program(fd, 8, 0)) == 0
    mapping = backend.mmap(fd.fileno(), 3 * PAGE, 1, 1, PAGE)
    try:
        view = bytes(memoryview(mapping)[:16]) + bytes(memoryview(mapping)[PAGE : PAGE + 16])
    finally:
        backend.munmap(mapping)
    producer, pending, header = struct.unpack_from("<QQ8s", view)
    assert (producer, pending) == (32, 16)
    assert header == struct.pack("<II", 3 | 1 << 30, 3)


# ---------------------------------------------------------------------------------------------
# Probe reads
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def out_map(backend: Backend) -> Iterator[OwnedFd]:
    with map_create(MapType.ARRAY, 4, 16, 1, backend=backend) as fd:
        map_update_elem(fd, bytes(4), b"\xee" * 16, backend=backend)
        yield fd


SOURCE = ctypes.create_string_buffer(b"hello world", 32)
PROBES: Final = {
    "read": BpfFunc.PROBE_READ,
    "read_str": BpfFunc.PROBE_READ_STR,
    "user": BpfFunc.PROBE_READ_USER,
    "kernel": BpfFunc.PROBE_READ_KERNEL,
    "user_str": BpfFunc.PROBE_READ_USER_STR,
    "kernel_str": BpfFunc.PROBE_READ_KERNEL_STR,
}
ADDRESSES: Final = {
    "user": ctypes.addressof(SOURCE),
    "null": 0,
    "noncanonical": NONCANONICAL,
    "top": TOP,
}


def probe_program(out: OwnedFd, func: BpfFunc, size: int, address: int) -> str:
    return f"""
        stw [%r10-4], 0
        lddw %r1, map_fd({out.fileno()})
        mov %r2, %r10
        add %r2, -4
        call {int(BpfFunc.MAP_LOOKUP_ELEM)}
        jeq %r0, 0, out
        mov %r1, %r0
        mov %r2, {size}
        lddw %r3, {address:#x}
        call {int(func)}
        exit
        out:
        mov %r0, -1
        exit
    """


@pytest.mark.parametrize(
    ("helper", "where", "size"),
    [(h, w, n) for h in sorted(PROBES) for w in sorted(ADDRESSES) for n in (16, 4)]
    + [(h, "user", 0) for h in sorted(PROBES)],
)
def test_probe_reads(
    backend: Backend, out_map: OwnedFd, helper: str, where: str, size: int
) -> None:
    result = run(backend, probe_program(out_map, PROBES[helper], size, ADDRESSES[where]))
    written = map_lookup_elem(out_map, bytes(4), 16, backend=backend)
    assert (result, written) == EXPECTED_PROBES[(helper, where, size)]


def _probe_expectations() -> dict[tuple[str, str, int], tuple[int, bytes]]:
    """What 6.18 answered (measured), per (helper, address, size)."""
    fill = b"\xee" * 16
    text = b"hello world\0"
    out: dict[tuple[str, str, int], tuple[int, bytes]] = {}
    for helper in PROBES:
        is_str = helper.endswith("str")
        user_side = helper in ("read", "read_str", "user", "user_str")
        for where in ADDRESSES:
            for size in (16, 4):
                zeroed = bytes(size) + fill[size:]
                if where == "user" and user_side:
                    if is_str:
                        if size == 16:  # copied by words: the NUL's word is zero-filled
                            out[(helper, where, size)] = (len(text), text.ljust(16, b"\0"))
                        else:
                            out[(helper, where, size)] = (4, b"hel\0" + fill[4:])
                    else:
                        data = bytes(SOURCE)[:size]
                        out[(helper, where, size)] = (0, data + fill[size:])
                elif (where in ("user", "null") and not user_side) or (
                    where == "noncanonical"
                    and helper in ("read", "read_str", "kernel", "kernel_str")
                ):
                    out[(helper, where, size)] = (-errno.ERANGE, zeroed)
                else:
                    out[(helper, where, size)] = (-errno.EFAULT, zeroed)
        kernel_size0 = -errno.ERANGE if helper == "kernel" else 0
        out[(helper, "user", 0)] = (kernel_size0, fill)
    return out


EXPECTED_PROBES: Final = _probe_expectations()


# ---------------------------------------------------------------------------------------------
# The current task and the run context
# ---------------------------------------------------------------------------------------------
def test_current_pid_tgid(backend: Backend) -> None:
    text = f"call {int(BpfFunc.GET_CURRENT_PID_TGID)}\nrsh %r0, 32\nexit"
    assert run(backend, text) == os.getpid()
    text = f"call {int(BpfFunc.GET_CURRENT_PID_TGID)}\nexit"
    assert run(backend, text) == os.getpid()  # the main thread: pid == tgid


def test_current_uid_gid(backend: Backend) -> None:
    assert run(backend, f"call {int(BpfFunc.GET_CURRENT_UID_GID)}\nexit") == os.getuid()
    text = f"call {int(BpfFunc.GET_CURRENT_UID_GID)}\nrsh %r0, 32\nexit"
    assert run(backend, text) == os.getgid()


@pytest.mark.parametrize("size", [16, 5, 1])
def test_current_comm(backend: Backend, out_map: OwnedFd, size: int) -> None:
    text = f"""
        stw [%r10-4], 0
        lddw %r1, map_fd({out_map.fileno()})
        mov %r2, %r10
        add %r2, -4
        call {int(BpfFunc.MAP_LOOKUP_ELEM)}
        jeq %r0, 0, out
        mov %r1, %r0
        mov %r2, {size}
        call {int(BpfFunc.GET_CURRENT_COMM)}
        out:
        exit
    """
    assert run(backend, text) == 0
    if isinstance(backend, SimBackend):
        comm = backend.kernel.config.comm.encode()
    else:
        with open("/proc/self/comm", "rb") as f:
            comm = f.read().rstrip(b"\n")
    want = comm[: size - 1].ljust(size, b"\0") + b"\xee" * (16 - size)
    assert map_lookup_elem(out_map, bytes(4), 16, backend=backend) == want


def test_current_task_is_opaque_and_non_zero(backend: Backend) -> None:
    text = f"call {int(BpfFunc.GET_CURRENT_TASK)}\nrsh %r0, 32\nexit"
    assert run(backend, text) != 0


def test_attach_cookie_of_a_test_run_is_zero(backend: Backend) -> None:
    assert run(backend, f"call {int(BpfFunc.GET_ATTACH_COOKIE)}\nexit") == 0
