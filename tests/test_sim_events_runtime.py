"""Helpers on the simulator alone: what the live kernel cannot be asked the same way.

Programs run straight on the interpreter (both engines) with the kernel's helper table, without
the loader check: bpf_loop / bpf_for_each_map_elem callbacks (ld_imm64 of a subprogram),
bpf_snprintf (its format string lives in a read-only map on the live kernel), kernel memory for
probe reads (SimulatedMemory), clocks, queue/stack/bloom helpers, trace_printk into trace_pipe.
"""

from __future__ import annotations

import contextlib
import errno
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys.abi import BPF_PSEUDO_MAP_FD, BpfFunc, MapType
from bpfsys.asm import assemble_text
from bpfsys.bpf import map_create, map_lookup_elem, map_update_elem
from bpfsys.fd import OwnedFd
from kernelsim.backend import SimBackend
from kernelsim.helpers.bprintf import BprintfError, bprintf
from kernelsim.helpers.memory import SimulatedMemory
from kernelsim.helpers.task import INITIAL_JIFFIES, TICK_NS
from kernelsim.kernel import Kernel, KernelConfig
from kernelsim.maps.base import BpfMap
from kernelsim.prog.interpreter import KERNEL_HELPERS, Engine, Executable, RunEnv
from kernelsim.prog.interpreter.memory import Region, RegionKind
from kernelsim.tracefs import Tracefs

KERNEL_ADDR = 0xFFFF_8880_1234_0000


@pytest.fixture
def sim() -> Iterator[SimBackend]:
    backend = SimBackend(Kernel(KernelConfig(pid=4242, comm="tester")))
    yield backend
    backend.kernel.close_all()


@pytest.fixture(params=[Engine.COMPILED, Engine.NAIVE], ids=lambda e: e.value)
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.param  # type: ignore[no-any-return]


def run(sim: SimBackend, text: str, engine: Engine = Engine.COMPILED, cpu: int = 0) -> int:
    """Run `text` on the simulated kernel's helpers with an 8-byte zero context; r0 (signed)."""
    insns = assemble_text(text)
    maps = {
        index: sim.kernel.fds.get(insn.imm, BpfMap)
        for index, insn in enumerate(insns)
        if insn.code == 0x18 and insn.src == BPF_PSEUDO_MAP_FD
    }
    exe = Executable(b"".join(i.to_bytes() for i in insns), maps)
    env = RunEnv(KERNEL_HELPERS, kernel=sim.kernel, cpu=cpu, engine=engine)
    ctx = env.space.map(Region(RegionKind.CONTEXT, "ctx", bytearray(8), writable=False))
    r0 = exe.run(env, ctx)
    return r0 - (1 << 64) if r0 >> 63 else r0


def value(sim: SimBackend, fd: OwnedFd, size: int, key: bytes = bytes(4)) -> bytes:
    found = map_lookup_elem(fd, key, size, backend=sim)
    assert found is not None
    return found


def lookup_into_r7(fd: OwnedFd) -> str:
    """r7 = &value of key 0 of map `fd` (the program exits with -1 when it is missing)."""
    return f"""
        stw [%r10-4], 0
        lddw %r1, map_fd({fd.fileno()})
        mov %r2, %r10
        add %r2, -4
        call {int(BpfFunc.MAP_LOOKUP_ELEM)}
        jne %r0, 0, found
        mov %r0, -1
        exit
        found:
        mov %r7, %r0
    """


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------
def test_loop_runs_the_callback_until_it_says_stop(sim: SimBackend, engine: Engine) -> None:
    with map_create(MapType.ARRAY, 4, 8, 1, backend=sim) as out:
        text = (
            lookup_into_r7(out)
            + f"""
            mov %r1, 10
            lddw %r2, func(body)
            mov %r3, %r7
            mov %r4, 0
            call {int(BpfFunc.LOOP)}
            exit
            body:
            ldxdw %r3, [%r2+0]
            add %r3, %r1
            stxdw [%r2+0], %r3
            mov %r0, 0
            jne %r1, 6, more
            mov %r0, 1
            more:
            exit
        """
        )
        assert run(sim, text, engine) == 7
        assert value(sim, out, 8) == struct.pack("<Q", sum(range(7)))


@pytest.mark.parametrize(
    ("loops", "flags", "want"), [(0, 0, 0), (3, 1, -errno.EINVAL), ((8 << 20) + 1, 0, -errno.E2BIG)]
)
def test_loop_arguments(sim: SimBackend, loops: int, flags: int, want: int) -> None:
    text = f"""
        mov %r1, {loops}
        lddw %r2, func(body)
        mov %r3, 0
        mov %r4, {flags}
        call {int(BpfFunc.LOOP)}
        exit
        body:
        mov %r0, 0
        exit
    """
    assert run(sim, text) == want


def test_for_each_map_elem(sim: SimBackend, engine: Engine) -> None:
    with map_create(MapType.HASH, 4, 8, 8, backend=sim) as table:
        for key in (1, 2, 3):
            map_update_elem(table, struct.pack("<I", key), struct.pack("<Q", key * 10), backend=sim)
        text = f"""
            lddw %r1, map_fd({table.fileno()})
            lddw %r2, func(body)
            mov %r3, 0
            mov %r4, 0
            call {int(BpfFunc.FOR_EACH_MAP_ELEM)}
            exit
            body:
            ldxw %r1, [%r2+0]
            ldxdw %r4, [%r3+0]
            add %r4, %r1
            stxdw [%r3+0], %r4
            mov %r0, 0
            exit
        """
        assert run(sim, text, engine) == 3
        got = sorted(value(sim, table, 8, struct.pack("<I", k)) for k in (1, 2, 3))
    assert got == sorted(struct.pack("<Q", k * 11) for k in (1, 2, 3))


# ---------------------------------------------------------------------------------------------
# Formatting: bpf_snprintf and bpf_trace_printk
# ---------------------------------------------------------------------------------------------
def no_strings(kind: str, address: int, limit: int) -> bytes | None:
    return b"str" if address == 1 else None


def no_ip(address: int, size: int) -> bytes | None:
    return bytes(range(1, size + 1))


@pytest.mark.parametrize(
    ("fmt", "args", "text"),
    [
        (b"%d %u %x %X", (-5, -5, 255, 255), b"-5 4294967291 ff FF"),
        (b"%ld %lld %llu %lx", (-5, -5, -1, 1 << 40), b"-5 -5 18446744073709551615 10000000000"),
        (b"%5d|%-4i|%05x|%+d", (42, 7, 10, 3), b"   42|7   |0000a|+3"),
        (b"%c%c 100%%", (ord("o"), ord("k")), b"ok 100%"),
        (b"[%s] [%s]", (1, 2), b"[str] []"),
        (b"%pI4 %pi4", (9, 9), b"1.2.3.4 001.002.003.004"),
        (b"%pI6", (9,), b"0102:0304:0506:0708:090a:0b0c:0d0e:0f10"),
        (b"%px", (0xDEADBEEF,), b"00000000deadbeef"),
        (b"no args", (1, 2), b"no args"),
    ],
)
def test_bprintf_conversions(fmt: bytes, args: tuple[int, ...], text: bytes) -> None:
    assert bprintf(fmt, args, no_strings, no_ip) == text


@pytest.mark.parametrize(
    ("fmt", "args", "err"),
    [
        (b"%d %d", (1,), errno.EINVAL),  # more conversions than arguments
        (b"%q", (1,), errno.EINVAL),
        (b"%lq", (1,), errno.EINVAL),
        (b"%sx", (1,), errno.EINVAL),  # %s followed by a letter
        (b"%pX", (1,), errno.EINVAL),
        (b"%pi5", (1,), errno.EINVAL),
        (b"tab\x01", (), errno.EINVAL),  # not printable
        (b"\xe9", (), errno.EINVAL),  # not ASCII
    ],
)
def test_bprintf_refusals(fmt: bytes, args: tuple[int, ...], err: int) -> None:
    with pytest.raises(BprintfError) as refused:
        bprintf(fmt, args, no_strings, no_ip)
    assert refused.value.errno == err


def test_bprintf_string_room() -> None:
    def long_strings(kind: str, address: int, limit: int) -> bytes | None:
        return b"x" * 300

    assert len(bprintf(b"%s%s", (1, 2), long_strings, no_ip)) == 300 + 210  # 512 - 301 - NUL
    with pytest.raises(BprintfError) as full:
        bprintf(b"%s%s%s", (1, 2, 3), long_strings, no_ip)
    assert full.value.errno == errno.ENOSPC


def snprintf_program(out: OwnedFd, size: int, data_len: int, fmt: bytes) -> str:
    words = fmt.ljust(-(-(len(fmt) + 1) // 8) * 8, b"\0")
    stores = "".join(
        f"lddw %r1, {int.from_bytes(words[i : i + 8], 'little'):#x}\nstxdw [%r10-{64 - i}], %r1\n"
        for i in range(0, len(words), 8)
    )
    return (
        lookup_into_r7(out)
        + stores
        + f"""
        stdw [%r10-96], 42
        lddw %r1, -7
        stxdw [%r10-88], %r1
        mov %r1, %r7
        mov %r2, {size}
        mov %r3, %r10
        add %r3, -64
        mov %r4, %r10
        add %r4, -96
        mov %r5, {data_len}
        call {int(BpfFunc.SNPRINTF)}
        exit
    """
    )


@pytest.mark.parametrize(
    ("size", "data_len", "want", "written"),
    [
        (16, 16, 10, b"n=42 m=-7\0"),
        (5, 16, 10, b"n=42\0"),
        (0, 16, 10, b""),
        (16, 12, -errno.EINVAL, b""),
        (16, 8, -errno.EINVAL, b""),  # two conversions, one argument
        (16, 13 * 8, -errno.EINVAL, b""),
    ],
)
def test_snprintf(sim: SimBackend, size: int, data_len: int, want: int, written: bytes) -> None:
    with map_create(MapType.ARRAY, 4, 16, 1, backend=sim) as out:
        map_update_elem(out, bytes(4), b"\xee" * 16, backend=sim)
        assert run(sim, snprintf_program(out, size, data_len, b"n=%d m=%ld")) == want
        assert value(sim, out, 16) == written + b"\xee" * (16 - len(written))


def test_trace_printk_goes_to_trace_pipe(sim: SimBackend) -> None:
    text = """
        lddw %r1, 0x000a6425203d78
        stxdw [%r10-8], %r1
        mov %r1, %r10
        add %r1, -8
        mov %r2, 8
        mov %r3, 5
        call 6
        exit
    """
    assert run(sim, text, cpu=1) == len(b"x= 5\n")
    line = sim.read_file("/sys/kernel/tracing/trace_pipe")
    assert line.startswith(b"          tester-4242    [001] .....")
    assert line.endswith(b"bpf_trace_printk: x= 5\n")
    missing_nul = text.replace("mov %r2, 8", "mov %r2, 6")
    assert run(sim, missing_nul) == -errno.EINVAL
    assert sim.kernel.subsystem(Tracefs).pipe == []


# ---------------------------------------------------------------------------------------------
# Probe reads of simulated memory, clocks, queues
# ---------------------------------------------------------------------------------------------
def probe(func: BpfFunc, out: OwnedFd, size: int, address: int) -> str:
    return (
        lookup_into_r7(out)
        + f"""
        mov %r1, %r7
        mov %r2, {size}
        lddw %r3, {address:#x}
        call {int(func)}
        exit
    """
    )


@pytest.mark.parametrize(
    ("func", "address", "size", "want", "written"),
    [
        (BpfFunc.PROBE_READ_KERNEL, KERNEL_ADDR, 8, 0, b"kernel\0d"),
        (BpfFunc.PROBE_READ_KERNEL, KERNEL_ADDR + 8, 8, -errno.EFAULT, bytes(8)),  # 1 byte mapped
        (BpfFunc.PROBE_READ, KERNEL_ADDR, 4, 0, b"kern"),  # legacy: a kernel address
        (BpfFunc.PROBE_READ_KERNEL_STR, KERNEL_ADDR, 16, 7, b"kernel\0"),
        (BpfFunc.PROBE_READ_KERNEL_STR, KERNEL_ADDR + 7, 4, 2, b"d\0"),  # NUL after "d"
        (BpfFunc.PROBE_READ_USER, 0x1000, 6, 0, b"user\0\0"),
        (BpfFunc.PROBE_READ_USER_STR, 0x1000, 16, 5, b"user\0" + bytes(3)),  # the NUL's word
        (BpfFunc.PROBE_READ_USER, KERNEL_ADDR, 4, -errno.EFAULT, bytes(4)),
        (BpfFunc.PROBE_READ_KERNEL, 0x1000, 4, -errno.ERANGE, bytes(4)),
    ],
)
def test_probe_reads_of_simulated_memory(
    sim: SimBackend, func: BpfFunc, address: int, size: int, want: int, written: bytes
) -> None:
    memory = sim.kernel.subsystem(SimulatedMemory)
    memory.map(KERNEL_ADDR, b"kernel\0d\0", user=False)
    memory.map(0x1000, b"user\0\0\0\0\0\0", user=True)
    with map_create(MapType.ARRAY, 4, 16, 1, backend=sim) as out:
        map_update_elem(out, bytes(4), b"\xee" * 16, backend=sim)
        assert run(sim, probe(func, out, size, address)) == want
        assert value(sim, out, 16) == written + b"\xee" * (16 - len(written))


def test_user_memory_of_another_task_is_only_the_simulated_one(sim: SimBackend) -> None:
    buffer = bytearray(b"process memory")
    import ctypes

    address = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
    with map_create(MapType.ARRAY, 4, 16, 1, backend=sim) as out:
        sim.kernel.subsystem(SimulatedMemory).map(0x2000, b"x", user=True)
        # the simulated task is pid 4242, not this process: no fallback to its memory
        assert run(sim, probe(BpfFunc.PROBE_READ_USER, out, 7, address)) == -errno.EFAULT


def test_clocks(sim: SimBackend) -> None:
    kernel = sim.kernel
    kernel.advance(3 * TICK_NS + 123)
    now = kernel.now_ns
    assert run(sim, f"call {int(BpfFunc.KTIME_GET_BOOT_NS)}\nexit") == now
    assert run(sim, f"call {int(BpfFunc.KTIME_GET_COARSE_NS)}\nexit") == now - now % TICK_NS
    assert run(sim, f"call {int(BpfFunc.JIFFIES64)}\nexit") == INITIAL_JIFFIES + now // TICK_NS


@pytest.mark.parametrize("kind", [MapType.QUEUE, MapType.STACK])
def test_push_pop_peek(sim: SimBackend, kind: MapType) -> None:
    with (
        map_create(kind, 0, 8, 2, backend=sim) as fifo,
        map_create(MapType.ARRAY, 4, 8, 1, backend=sim) as out,
    ):

        def call(func: BpfFunc, flags: int = 0) -> int:
            return run(sim, lookup_into_r7(out) + f"""
                lddw %r1, map_fd({fifo.fileno()})
                mov %r2, %r7
                mov %r3, {flags}
                call {int(func)}
                exit
            """)  # fmt: skip

        map_update_elem(out, bytes(4), struct.pack("<Q", 1), backend=sim)
        assert call(BpfFunc.MAP_PUSH_ELEM) == 0
        map_update_elem(out, bytes(4), struct.pack("<Q", 2), backend=sim)
        assert call(BpfFunc.MAP_PUSH_ELEM) == 0
        assert call(BpfFunc.MAP_PUSH_ELEM) == -errno.E2BIG
        assert call(BpfFunc.MAP_PUSH_ELEM, 1) == -errno.EINVAL  # BPF_NOEXIST
        assert call(BpfFunc.MAP_PEEK_ELEM) == 0
        first = 2 if kind is MapType.STACK else 1
        assert value(sim, out, 8) == struct.pack("<Q", first)
        assert call(BpfFunc.MAP_POP_ELEM) == 0
        assert call(BpfFunc.MAP_POP_ELEM) == 0
        assert value(sim, out, 8) == struct.pack("<Q", 3 - first)
        assert call(BpfFunc.MAP_POP_ELEM) == -errno.ENOENT
        assert value(sim, out, 8) == bytes(8)  # zeroed on an empty pop


def test_bloom_filter_push_and_peek(sim: SimBackend) -> None:
    with (
        map_create(MapType.BLOOM_FILTER, 0, 8, 64, backend=sim) as bloom,
        map_create(MapType.ARRAY, 4, 8, 1, backend=sim) as out,
    ):

        def call(func: BpfFunc, flags: int = 0) -> int:
            return run(sim, lookup_into_r7(out) + f"""
                lddw %r1, map_fd({bloom.fileno()})
                mov %r2, %r7
                mov %r3, {flags}
                call {int(func)}
                exit
            """)  # fmt: skip

        map_update_elem(out, bytes(4), b"present!", backend=sim)
        assert call(BpfFunc.MAP_PEEK_ELEM) == -errno.ENOENT
        assert call(BpfFunc.MAP_PUSH_ELEM, 2) == -errno.EINVAL
        assert call(BpfFunc.MAP_PUSH_ELEM) == 0
        assert call(BpfFunc.MAP_PEEK_ELEM) == 0
        assert value(sim, out, 8) == b"present!"  # peek leaves the value alone


@settings(max_examples=50, deadline=None)
@given(
    func=st.sampled_from([BpfFunc.RINGBUF_OUTPUT, BpfFunc.RINGBUF_QUERY, BpfFunc.RINGBUF_RESERVE,
                          BpfFunc.PERF_EVENT_OUTPUT, BpfFunc.PROBE_READ_USER_STR,
                          BpfFunc.PROBE_READ_KERNEL, BpfFunc.LOOP]),
    args=st.lists(st.integers(0, (1 << 64) - 1), min_size=3, max_size=3),
)  # fmt: skip
def test_random_helper_arguments(func: BpfFunc, args: list[int]) -> None:
    """Any scalar flags, sizes and addresses: a result or a refused access, nothing else."""
    from kernelsim.prog.interpreter import BpfRuntimeError

    backend = SimBackend()
    with (
        map_create(MapType.RINGBUF, 0, 0, 4096, backend=backend) as ring,
        map_create(MapType.PERF_EVENT_ARRAY, 4, 4, 2, backend=backend) as perf,
    ):
        target = ring if func.name.startswith("RINGBUF") else perf
        text = f"""
            lddw %r1, map_fd({target.fileno()})
            lddw %r2, {args[0]:#x}
            lddw %r3, {args[1]:#x}
            lddw %r4, {args[2]:#x}
            mov %r5, %r10
            add %r5, -8
            call {int(func)}
            exit
        """
        if func in (BpfFunc.PROBE_READ_USER_STR, BpfFunc.PROBE_READ_KERNEL, BpfFunc.LOOP):
            text = text.replace("lddw %r1, map_fd", "mov %r1, %r10\nadd %r1, -64\n# map_fd")
            text = text.replace("lddw %r2,", f"mov %r2, {args[0] % 64}\n# ")
        with contextlib.suppress(BpfRuntimeError):  # a pointer into nothing: never verified
            run(backend, text)
    backend.kernel.close_all()
    assert "RingbufMap" not in backend.kernel.live_objects()
