"""BPF_PROG_TEST_RUN on both backends, at the raw bpf() level: the same return value, errno,
retval and bytes written back. Expectations were measured on the live kernel (6.18).

Each case also runs on a simulated kernel with the program installed directly (bypassing
PROG_LOAD), so the test-run path is checked even where the simulated loader refuses a program.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import struct
from collections.abc import Callable, Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfsys.abi import BpfCmd, ProgFlag, ProgLoadAttr, ProgType, TestRunAttr, TestRunFlag
from bpfsys.asm import assemble_text, encode
from bpfsys.backend import Backend
from kernelsim.backend import SimBackend
from kernelsim.errors import ENOTSUPP
from kernelsim.prog.program import BpfProgram

PKT = bytes(range(1, 61))
ETH_ZEROED = bytes(14) + PKT[14:]
XDP_LEN_IFINDEX = (
    "ldxw %r2, [%r1+4]\nldxw %r3, [%r1+0]\nmov %r0, %r2\nsub %r0, %r3\n"
    "ldxw %r4, [%r1+12]\nlsh %r4, 16\nor %r0, %r4\nexit\n"
)


@attrs.frozen
class Case:
    name: str
    prog_type: ProgType
    asm: str
    data: bytes = b""
    data_out_size: int | None = None
    ctx_in: bytes | None = None
    ctx_out_size: int = 0
    repeat: int = 0
    flags: int = 0
    cpu: int = 0
    load_flags: int = 0
    errno: int = 0
    retval: int | None = None
    data_out: bytes | None = None
    size_out: int | None = None
    ctx_out: bytes | None = None
    ctx_size_out: int | None = None


@attrs.frozen
class Outcome:
    errno: int
    retval: int
    size_out: int
    data_out: bytes
    ctx_size_out: int
    ctx_out: bytes
    duration: int
    ctx_in_after: bytes


def sf(asm: str, **kw: object) -> Case:
    return Case(prog_type=ProgType.SOCKET_FILTER, asm=asm, data=PKT, **kw)  # type: ignore[arg-type]


def skb_ctx(**fields: int) -> bytes:
    ctx = bytearray(192)
    for offset, value in fields.items():
        struct.pack_into("<I", ctx, int(offset[1:]), value)
    return bytes(ctx)


CASES = [
    sf("ldxw %r0, [%r1+0]\nexit\n", name="sf_len", retval=46, data_out=ETH_ZEROED, size_out=60),
    sf("ldxw %r0, [%r1+16]\nexit\n", name="sf_protocol", retval=0x0E0D),
    sf("ldxw %r0, [%r1+4]\nexit\n", name="sf_pkt_type_multicast", retval=2),
    Case("sf_pkt_type_host", ProgType.SOCKET_FILTER, "ldxw %r0, [%r1+4]\nexit\n",
         bytes(6) + PKT[6:], retval=0),
    # lo's broadcast address is all zeros: ff:ff:ff:ff:ff:ff is merely multicast there
    Case("sf_pkt_type_broadcast", ProgType.SOCKET_FILTER, "ldxw %r0, [%r1+4]\nexit\n",
         b"\xff" * 6 + PKT[6:], retval=2),
    Case("sf_pkt_type_otherhost", ProgType.SOCKET_FILTER, "ldxw %r0, [%r1+4]\nexit\n",
         b"\x02" + PKT[1:], retval=3),
    sf("ldxw %r0, [%r1+40]\nexit\n", name="sf_ifindex", retval=1),
    sf("ldxb %r0, [%r1+17]\nexit\n", name="sf_narrow_protocol", retval=0x0E),
    Case("sf_short_frame", ProgType.SOCKET_FILTER, "mov %r0, 0\nexit\n", PKT[:13],
         errno=errno.EINVAL),
    sf("mov %r0, 0\nexit\n", name="sf_flags", flags=1, errno=errno.EINVAL),
    sf("mov %r0, 4\nexit\n", name="sf_checksum_complete", flags=4, retval=4),
    sf("mov %r0, 0\nexit\n", name="sf_cpu", cpu=1, errno=errno.EINVAL),
    sf("ldxw %r0, [%r1+0]\nexit\n", name="sf_enospc", data_out_size=10, errno=errno.ENOSPC,
       retval=46, size_out=60, data_out=bytes(10)),
    sf("ldxw %r0, [%r1+0]\nexit\n", name="sf_repeat", repeat=5, retval=46),
    sf("mov %r6, %r1\nldabsw 0\nexit\n", name="sf_ld_abs", retval=0x0F101112),
    sf("mov %r6, %r1\nmov %r0, 7\nldabsw 100\nmov %r0, 9\nexit\n", name="sf_ld_abs_out_of_range",
       retval=0),
    sf("mov %r6, %r1\nldabsb -1048576\nexit\n", name="sf_ld_abs_net_off", retval=15),
    sf("mov %r6, %r1\nldabsb -2097152\nexit\n", name="sf_ld_abs_ll_off", retval=1),
    sf("mov %r6, %r1\nmov %r2, 3\nldindb %r2, 1\nexit\n", name="sf_ld_ind", retval=19),
    sf("mov %r0, 0\nexit\n", name="sf_ctx_len_set", ctx_in=b"\x01" + bytes(191),
       ctx_out_size=192, errno=errno.EINVAL),
    sf("mov %r0, 0\nexit\n", name="sf_ctx_tail_nonzero", ctx_in=bytes(192) + b"\x01",
       ctx_out_size=192, errno=errno.E2BIG),
    sf("mov %r0, 0\nexit\n", name="sf_ctx_out_small", ctx_in=skb_ctx(o8=0x1234),
       ctx_out_size=10, errno=errno.ENOSPC, ctx_size_out=192,
       ctx_out=bytes(8) + b"\x34\x12"),
    sf("mov %r0, 0\nexit\n", name="sf_ctx_out", ctx_in=bytes(192), ctx_out_size=192,
       ctx_out=skb_ctx(o40=1, o160=46), ctx_size_out=192),
    sf("mov %r0, 0\nexit\n", name="sf_ctx_wire_len_short", ctx_in=skb_ctx(o160=10),
       ctx_out_size=192, errno=errno.EINVAL),
    sf("mov %r0, 0\nexit\n", name="sf_ctx_ifindex_missing", ctx_in=skb_ctx(o40=999),
       ctx_out_size=192, errno=errno.ENODEV),
    Case("tc_len", ProgType.SCHED_CLS, "ldxw %r0, [%r1+0]\nexit\n", PKT, retval=60, data_out=PKT,
         size_out=60),
    Case("tc_ld_abs", ProgType.SCHED_CLS, "mov %r6, %r1\nldabsh 12\nexit\n", PKT, retval=0x0D0E),
    Case("tc_ctx_mark_and_cb", ProgType.SCHED_CLS, "ldxw %r0, [%r1+8]\nstw [%r1+48], 5\nexit\n",
         PKT, ctx_in=skb_ctx(o8=0x1234, o48=0xAB), ctx_out_size=192, retval=0x1234,
         ctx_out=skb_ctx(o8=0x1234, o40=1, o48=5, o160=60)),
    Case("tc_direct_packet_write", ProgType.SCHED_CLS,
         "ldxw %r2, [%r1+76]\nldxw %r3, [%r1+80]\nmov %r4, %r2\nadd %r4, 4\nmov %r0, 1\n"
         "jgt %r4, %r3, +2\nstw [%r2+0], 0x41424344\nmov %r0, 2\nexit\n",
         PKT, retval=2, data_out=b"DCBA" + PKT[4:]),
    Case("xdp_pass", ProgType.XDP, "mov %r0, 2\nexit\n", PKT, retval=2, data_out=PKT, size_out=60),
    Case("xdp_short", ProgType.XDP, "mov %r0, 2\nexit\n", PKT[:13], errno=errno.EINVAL),
    Case("xdp_flags", ProgType.XDP, "mov %r0, 2\nexit\n", PKT, flags=1, errno=errno.EINVAL),
    Case("xdp_len_ifindex", ProgType.XDP, XDP_LEN_IFINDEX, PKT, retval=0x1003C),
    Case("xdp_ctx_meta", ProgType.XDP, XDP_LEN_IFINDEX, PKT,
         ctx_in=struct.pack("<6I", 8, 60, 0, 0, 0, 0), ctx_out_size=24, retval=0x10034,
         ctx_out=struct.pack("<6I", 8, 60, 0, 0, 0, 0), size_out=60),
    Case("xdp_ctx_data_end_past_data", ProgType.XDP, XDP_LEN_IFINDEX, PKT,
         ctx_in=struct.pack("<6I", 0, 61, 0, 0, 0, 0), ctx_out_size=24, errno=errno.EINVAL),
    Case("xdp_ctx_egress", ProgType.XDP, XDP_LEN_IFINDEX, PKT,
         ctx_in=struct.pack("<6I", 0, 60, 0, 0, 0, 1), ctx_out_size=24, errno=errno.EINVAL),
    Case("xdp_ctx_no_device", ProgType.XDP, XDP_LEN_IFINDEX, PKT,
         ctx_in=struct.pack("<6I", 0, 60, 0, 99, 0, 0), ctx_out_size=24, errno=errno.ENODEV),
    Case("xdp_ctx_unaligned_meta", ProgType.XDP, XDP_LEN_IFINDEX, PKT,
         ctx_in=struct.pack("<6I", 3, 60, 0, 0, 0, 0), ctx_out_size=24, errno=errno.EINVAL),
    Case("kprobe_has_no_test_run", ProgType.KPROBE, "mov %r0, 0\nexit\n", PKT, errno=ENOTSUPP),
    Case("tracepoint_has_no_test_run", ProgType.TRACEPOINT, "mov %r0, 0\nexit\n", PKT,
         errno=ENOTSUPP),
    Case("raw_tp_args", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n",
         ctx_in=struct.pack("<QQ", 5, 77), retval=77),
    Case("raw_tp_short_args", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n",
         ctx_in=struct.pack("<Q", 5), errno=errno.EINVAL),
    Case("raw_tp_repeat", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n",
         ctx_in=struct.pack("<QQ", 5, 77), repeat=2, errno=errno.EINVAL),
    Case("raw_tp_data", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n", PKT,
         ctx_in=struct.pack("<QQ", 5, 77), errno=errno.EINVAL),
    Case("raw_tp_on_cpu", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n",
         ctx_in=struct.pack("<QQ", 5, 77), flags=TestRunFlag.RUN_ON_CPU, cpu=1, retval=77),
    Case("raw_tp_cpu_without_flag", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n",
         ctx_in=struct.pack("<QQ", 5, 77), cpu=1, errno=errno.EINVAL),
    Case("raw_tp_cpu_offline", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n",
         ctx_in=struct.pack("<QQ", 5, 77), flags=TestRunFlag.RUN_ON_CPU, cpu=4095,
         errno=errno.ENXIO),
    Case("raw_tp_too_many_args", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n",
         ctx_in=bytes(13 * 8), errno=errno.EINVAL),
    Case("raw_tp_ctx_out", ProgType.RAW_TRACEPOINT, "ldxdw %r0, [%r1+8]\nexit\n",
         ctx_in=struct.pack("<QQ", 5, 77), ctx_out_size=16, errno=errno.EINVAL),
    Case("syscall_ctx_out_refused", ProgType.SYSCALL, "ldxw %r0, [%r1+0]\nexit\n",
         ctx_in=bytes(8), ctx_out_size=8, load_flags=ProgFlag.SLEEPABLE, errno=errno.EINVAL),
    Case("syscall_no_ctx", ProgType.SYSCALL, "ldxw %r0, [%r1+0]\nexit\n",
         load_flags=ProgFlag.SLEEPABLE, errno=errno.EINVAL),
]  # fmt: skip


class Buffers:
    """ctypes buffers that stay alive for one call."""

    def __init__(self) -> None:
        self.keep: list[ctypes.Array[ctypes.c_char]] = []

    def make(self, data: bytes, size: int | None = None) -> tuple[int, ctypes.Array[ctypes.c_char]]:
        buf = ctypes.create_string_buffer(data, max(size or len(data), 1))
        self.keep.append(buf)
        return ctypes.addressof(buf), buf


def prog_load(backend: Backend, prog_type: ProgType, asm: str, flags: int = 0) -> int:
    bufs = Buffers()
    insns = encode(assemble_text(asm))
    addr, _ = bufs.make(insns)
    lic, _ = bufs.make(b"GPL\0")
    attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=addr, license=lic,
                        prog_flags=flags)  # fmt: skip
    return backend.bpf(BpfCmd.PROG_LOAD, attr, ctypes.sizeof(attr))


def run_test(backend: Backend, fd: int, case: Case) -> Outcome:
    bufs = Buffers()
    din = bufs.make(case.data)[0] if case.data else 0
    out_size = len(case.data) + 64 if case.data_out_size is None else case.data_out_size
    dout, out_buf = bufs.make(b"", 8192)
    cin, cin_buf = bufs.make(case.ctx_in or b"")
    cout, cout_buf = bufs.make(b"", 8192)
    attr = TestRunAttr(
        prog_fd=fd, data_in=din, data_size_in=len(case.data),
        data_out=dout if case.data else 0, data_size_out=out_size if case.data else 0,
        ctx_in=cin if case.ctx_in is not None else 0,
        ctx_size_in=len(case.ctx_in) if case.ctx_in is not None else 0,
        ctx_out=cout if case.ctx_out_size else 0, ctx_size_out=case.ctx_out_size,
        repeat=case.repeat, flags=case.flags, cpu=case.cpu,
    )  # fmt: skip
    err = 0
    try:
        assert backend.bpf(BpfCmd.PROG_TEST_RUN, attr, ctypes.sizeof(attr)) == 0
    except OSError as error:
        err = error.errno or 0
    shown = min(attr.data_size_out, out_size)
    return Outcome(
        err, attr.retval, attr.data_size_out, out_buf.raw[:shown], attr.ctx_size_out,
        cout_buf.raw[: min(attr.ctx_size_out, case.ctx_out_size)], attr.duration,
        cin_buf.raw[: len(case.ctx_in or b"")],
    )  # fmt: skip


def check(outcome: Outcome, case: Case) -> None:
    assert outcome.errno == case.errno
    if case.retval is not None:
        assert outcome.retval == case.retval
    if case.size_out is not None:
        assert outcome.size_out == case.size_out
    if case.data_out is not None:
        assert outcome.data_out[: len(case.data_out)] == case.data_out
    if case.ctx_size_out is not None:
        assert outcome.ctx_size_out == case.ctx_size_out
    if case.ctx_out is not None:
        assert outcome.ctx_out == case.ctx_out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_test_run(backend: Backend, case: Case) -> None:
    fd = prog_load(backend, case.prog_type, case.asm, case.load_flags)
    try:
        check(run_test(backend, fd, case), case)
    finally:
        backend.close(fd)


# -- the same cases on a simulated kernel, program installed directly ------------------------
@pytest.fixture
def sim() -> Iterator[SimBackend]:
    backend = SimBackend()
    yield backend
    backend.kernel.close_all()


def install(
    sim: SimBackend, prog_type: ProgType, asm: str, max_ctx_offset: int = 0
) -> tuple[int, BpfProgram]:
    kernel = sim.kernel
    prog = BpfProgram(kernel, kernel.objects, prog_type, encode(assemble_text(asm)), "GPL", b"t",
                      None, [], bytes(8), True, max_ctx_offset=max_ctx_offset)  # fmt: skip
    return kernel.fds.install(prog), prog


def ctx_reach(case: Case) -> int:
    """What the verifier reports as max_ctx_offset for the context-only cases' programs."""
    return 16 if "[%r1+8]" in case.asm else 4 if case.prog_type is ProgType.SYSCALL else 0


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_test_run_installed(sim: SimBackend, case: Case) -> None:
    fd, _ = install(sim, case.prog_type, case.asm, ctx_reach(case))
    check(run_test(sim, fd, case), case)


def test_syscall_context_is_copied_back_into_ctx_in(backend: Backend) -> None:
    case = Case("syscall", ProgType.SYSCALL, "ldxw %r0, [%r1+0]\nstw [%r1+4], 99\nexit\n",
                ctx_in=bytes([7, 0, 0, 0, 1, 2, 3, 4]), load_flags=ProgFlag.SLEEPABLE)  # fmt: skip
    fd = prog_load(backend, case.prog_type, case.asm, case.load_flags)
    try:
        outcome = run_test(backend, fd, case)
    finally:
        backend.close(fd)
    assert (outcome.errno, outcome.retval, outcome.duration) == (0, 7, 0)
    assert outcome.ctx_in_after == bytes([7, 0, 0, 0, 99, 0, 0, 0])


def test_not_a_program(backend: Backend) -> None:
    attr = TestRunAttr(prog_fd=999_999)
    with pytest.raises(OSError) as info:
        backend.bpf(BpfCmd.PROG_TEST_RUN, attr, ctypes.sizeof(attr))
    assert info.value.errno == errno.EBADF


def test_ctx_size_without_buffer(backend: Backend) -> None:
    fd = prog_load(backend, ProgType.SOCKET_FILTER, "mov %r0, 0\nexit\n")
    try:
        attr = TestRunAttr(prog_fd=fd, ctx_size_in=8)
        with pytest.raises(OSError) as info:
            backend.bpf(BpfCmd.PROG_TEST_RUN, attr, ctypes.sizeof(attr))
        assert info.value.errno == errno.EINVAL
    finally:
        backend.close(fd)


# -- simulator-only: duration, clock and statistics ------------------------------------------
def test_duration_is_the_average_virtual_time(sim: SimBackend) -> None:
    kernel = sim.kernel
    fd, _ = install(sim, ProgType.SOCKET_FILTER, "mov %r0, 1\nmov %r0, 2\nexit\n")
    before = kernel.now_ns
    once = run_test(sim, fd, sf("", name="once"))
    ten = run_test(sim, fd, sf("", name="ten", repeat=10))
    assert once.duration == ten.duration == 20 + 3  # overhead + 3 instructions
    assert kernel.now_ns - before == 11 * 23


def test_stats_count_only_while_enabled(sim: SimBackend) -> None:
    kernel = sim.kernel
    fd, prog = install(sim, ProgType.XDP, "mov %r0, 2\nexit\n")
    run_test(sim, fd, Case("x", ProgType.XDP, "", PKT, repeat=3))
    assert (prog.run_cnt, prog.run_time_ns) == (0, 0)
    kernel.stats_enabled += 1
    run_test(sim, fd, Case("x", ProgType.XDP, "", PKT, repeat=3))
    kernel.stats_enabled -= 1
    assert (prog.run_cnt, prog.run_time_ns) == (3, 3 * 22)


def test_checksum_complete_is_newer_than_6_1(sim_factory: Callable[..., SimBackend]) -> None:
    old = sim_factory(version="6.1")
    fd, _ = install(old, ProgType.SOCKET_FILTER, "mov %r0, 4\nexit\n")
    assert run_test(old, fd, sf("", name="old", flags=4)).errno == errno.EINVAL


def test_refused_operation_is_efault_naming_the_instruction(sim: SimBackend) -> None:
    fd, _ = install(sim, ProgType.SOCKET_FILTER, "mov %r0, 0\nldxdw %r0, [%r0+0]\nexit\n")
    bufs = Buffers()
    attr = TestRunAttr(prog_fd=fd, data_in=bufs.make(PKT)[0], data_size_in=len(PKT))
    with pytest.raises(OSError) as info:
        sim.bpf(BpfCmd.PROG_TEST_RUN, attr, ctypes.sizeof(attr))
    assert info.value.errno == errno.EFAULT
    assert "insn 1" in str(info.value)


def test_repeat_keeps_packet_changes(sim: SimBackend) -> None:
    asm = (
        "ldxw %r2, [%r1+76]\nldxw %r3, [%r1+80]\nmov %r4, %r2\nadd %r4, 1\nmov %r0, 0\n"
        "jgt %r4, %r3, +3\nldxb %r0, [%r2+0]\nadd %r0, 1\nstxb [%r2+0], %r0\nexit\n"
    )
    fd, _ = install(sim, ProgType.SCHED_CLS, asm)
    outcome = run_test(sim, fd, Case("r", ProgType.SCHED_CLS, asm, PKT, repeat=4))
    assert (outcome.retval, outcome.data_out[0]) == (5, 5)


def test_trace_printk_reaches_the_trace_buffer(sim: SimBackend) -> None:
    from kernelsim.prog.interpreter import TraceBuffer

    asm = ("lddw %r1, 0x0a64252078\nstxdw [%r10-8], %r1\nmov %r1, %r10\nadd %r1, -8\n"
           "mov %r2, 6\nmov %r3, -5\ncall 6\nexit\n")  # fmt: skip
    fd, _ = install(sim, ProgType.SOCKET_FILTER, asm)
    outcome = run_test(sim, fd, sf("", name="printk"))
    events = sim.kernel.subsystem(TraceBuffer).take()
    assert [e.message for e in events] == [b"x -5\n"]
    assert outcome.retval == 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(min_size=0, max_size=160), use_prog=st.booleans(),
       size=st.integers(0, 160))  # fmt: skip
def test_random_attrs_only_raise_oserror(raw: bytes, use_prog: bool, size: int) -> None:
    backend = SimBackend()
    kernel = backend.kernel
    fd, _ = install(backend, ProgType.SOCKET_FILTER, "ldxw %r0, [%r1+0]\nexit\n")
    image = bytearray(raw.ljust(160, b"\0"))
    if use_prog:
        struct.pack_into("<I", image, 0, fd)
    for pointer in (16, 24, 48, 56):  # data_in, data_out, ctx_in, ctx_out: 0 or a real buffer
        struct.pack_into("<Q", image, pointer, 0)
    with contextlib.suppress(OSError):
        backend.bpf(BpfCmd.PROG_TEST_RUN, image, min(size, len(image)))
    kernel.close_all()
    assert "BpfProgram" not in kernel.live_objects()
