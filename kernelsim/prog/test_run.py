"""bpf() PROG_TEST_RUN: running a program on given data and context (net/bpf/test_run.c).

Theory of operation
-------------------
The common path (bpf_prog_test_run): ctx_in/ctx_size_in and ctx_out/ctx_size_out must be given
together (EINVAL), the fd must be a program (EBADF / EINVAL), and its type must have a test run
(ENOTSUPP, 524, for kprobe, tracepoint, perf_event, cgroup sock, sk_skb, ...). Then per type:

- socket filter, tc (sched_cls/act), cgroup_skb, lwt_*: `bpf_prog_test_run_skb`. data_in is an
  Ethernet frame of ETH_HLEN..PAGE_SIZE-NET_SKB_PAD-tailroom bytes (EINVAL otherwise); the skb
  is built as eth_type_trans leaves it (protocol, pkt_type, skb->data past the Ethernet header,
  pushed back for tc), an optional `struct __sk_buff` ctx sets the fields the kernel allows
  (others non-zero: EINVAL); after the run a non-L2 frame gets its Ethernet header zeroed, as the
  kernel pushes a zeroed header back;
- xdp: an `xdp_md` ctx may place metadata and pick the ingress device; the linear part holds
  what fits in a page after the headroom, the rest is carried as fragments;
- raw tracepoint: ctx_in is the u64 args array, no data, no repeat; BPF_F_TEST_RUN_ON_CPU picks
  the CPU (ENXIO for one that is not online);
- syscall: ctx_in (up to U16_MAX bytes) is the context and is copied back into ctx_in.
Results go back as bpf_test_finish / bpf_ctx_finish do: the full size is written back, what
fits is copied, and a too small output buffer is ENOSPC. `repeat` (0 means 1) runs the program
that many times on the same buffers; duration is the average virtual time per run. A program
that does something the verifier would have refused fails the call with EFAULT naming the
instruction (a simulator-only outcome: the kernel never loads such a program).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import Final

from bpfsys.abi import AttachType, BpfCmd, ProgType, TestRunAttr, TestRunFlag
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.kernel import Kernel
from kernelsim.prog.interpreter.errors import BpfRuntimeError
from kernelsim.prog.interpreter.kernel_run import run_on_kernel
from kernelsim.prog.interpreter.memory import Region, RegionKind
from kernelsim.prog.interpreter.runtime import RunEnv
from kernelsim.prog.interpreter.skb import (
    DIRECT_ACCESS_TYPES,
    ETH_HLEN,
    L2_TYPES,
    LOOPBACK_IFINDEX,
    SKB_CTX_SIZE,
    SkbContext,
    SkBuff,
)
from kernelsim.prog.interpreter.xdp import XDP_MD_SIZE, XdpContext
from kernelsim.prog.program import BpfProgram

U32_MAX: Final = 0xFFFFFFFF
U16_MAX: Final = 0xFFFF
SKB_SHARED_INFO: Final = 320
"""SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) on x86_64."""
NET_SKB_PAD: Final = 64
XDP_PACKET_HEADROOM: Final = 256
XDP_METADATA_MAX: Final = 252
MAX_BPF_FUNC_ARGS: Final = 12
GSO_MAX_SEGS: Final = 65535
GSO_LEGACY_MAX_SIZE: Final = 65536
ETH_P_802_3_MIN: Final = 0x0600
PACKET_MULTICAST, PACKET_OTHERHOST = 2, 3
SKB_TYPES: Final = frozenset(DIRECT_ACCESS_TYPES | {ProgType.SOCKET_FILTER, ProgType.LWT_SEG6LOCAL})
# __sk_buff byte ranges a test run's ctx may set (the rest must be zero: convert___skb_to_skb)
SKB_CTX_ALLOWED: Final = ((8, 12), (32, 44), (48, 68), (152, 168), (176, 180), (184, 192))
NOT_MODELLED: Final = frozenset(
    {ProgType.FLOW_DISSECTOR, ProgType.TRACING, ProgType.SK_LOOKUP, ProgType.STRUCT_OPS,
     ProgType.NETFILTER}
)  # fmt: skip


def _read(kernel: Kernel, addr: int, size: int) -> bytes:
    return kernel.memory.read(addr, size)


def _ctx_init(call: BpfCall, max_size: int) -> bytearray | None:
    """bpf_ctx_init: the context (zero-extended), None when neither ctx_in nor ctx_out."""
    attr: TestRunAttr = call.attr
    if not attr.ctx_in and not attr.ctx_out:
        return None
    ctx = bytearray(max_size)
    if attr.ctx_in:
        size = attr.ctx_size_in
        if size > call.kernel.config.page_size:
            fail(errno.E2BIG, f"ctx_size_in {size} is larger than a page")
        if size > max_size and any(_read(call.kernel, attr.ctx_in + max_size, size - max_size)):
            fail(errno.E2BIG, f"non-zero ctx bytes beyond the {max_size}-byte context")
        ctx[: min(size, max_size)] = _read(call.kernel, attr.ctx_in, min(size, max_size))
    return ctx


def _test_finish(call: BpfCall, data: bytes, retval: int, duration: int) -> None:
    """bpf_test_finish: data out (clamped to data_size_out, ENOSPC), sizes, retval, duration."""
    attr: TestRunAttr = call.attr
    copy_size = len(data)
    short = bool(attr.data_size_out) and copy_size > attr.data_size_out
    if short:
        copy_size = attr.data_size_out
    if attr.data_out:
        call.kernel.memory.write(attr.data_out, data[:copy_size])
    call.write_back("data_size_out", len(data))
    call.write_back("retval", retval & U32_MAX)
    call.write_back("duration", duration)
    if short:
        fail(errno.ENOSPC, f"data_out holds {attr.data_size_out} of {len(data)} bytes")


def _ctx_finish(call: BpfCall, ctx: bytes | bytearray | None) -> None:
    """bpf_ctx_finish: the context out (clamped to ctx_size_out, ENOSPC)."""
    attr: TestRunAttr = call.attr
    if ctx is None or not attr.ctx_out:
        return
    copy_size = min(len(ctx), attr.ctx_size_out)
    call.kernel.memory.write(attr.ctx_out, bytes(ctx[:copy_size]))
    call.write_back("ctx_size_out", len(ctx))
    if copy_size < len(ctx):
        fail(errno.ENOSPC, f"ctx_out holds {attr.ctx_size_out} of {len(ctx)} bytes")


def _run(
    call: BpfCall, prog: BpfProgram, setup: Callable[[RunEnv], int], repeat: int, cpu: int = 0
) -> tuple[int, int]:
    """Run `repeat` times (0 means 1): (last retval, average ns per run)."""
    kernel = call.kernel
    runs = max(repeat, 1)
    start = kernel.now_ns
    retval = 0
    for _ in range(runs):
        try:
            retval = run_on_kernel(kernel, prog, setup, cpu).retval
        except BpfRuntimeError as error:
            fail(errno.EFAULT, f"program {prog.id}: {error}")
    return retval, min((kernel.now_ns - start) // runs, U32_MAX)


# -- sk_buff programs -------------------------------------------------------------------------
def _eth_type_trans(frame: bytes | bytearray) -> tuple[int, int]:
    """(skb->protocol as stored, pkt_type) for a frame received on the loopback device."""
    dest = frame[:6]
    pkt_type = 0
    if dest != bytes(6):  # lo's address, and its broadcast address, are all zeros
        pkt_type = PACKET_MULTICAST if dest[0] & 1 else PACKET_OTHERHOST
    if int.from_bytes(frame[12:14], "big") >= ETH_P_802_3_MIN:
        return int.from_bytes(frame[12:14], "little"), pkt_type
    ipx = frame[14:16] == b"\xff\xff"
    return (0x0100 if ipx else 0x0400), pkt_type


def _apply_skb_ctx(skb: SkBuff, ctx: bytearray) -> None:
    """convert___skb_to_skb: EINVAL for fields a test run may not set, or bad values."""
    allowed = bytearray(SKB_CTX_SIZE)
    for start, end in SKB_CTX_ALLOWED:
        allowed[start:end] = b"\xff" * (end - start)
    if any(byte & ~mask & 0xFF for byte, mask in zip(ctx, allowed, strict=True)):
        fail(errno.EINVAL, "the __sk_buff context sets fields a test run does not take")
    (mark,) = struct.unpack_from("<I", ctx, 8)
    priority, ingress_ifindex = struct.unpack_from("<II", ctx, 32)
    tstamp, wire_len, gso_segs = struct.unpack_from("<QII", ctx, 152)
    (gso_size,) = struct.unpack_from("<I", ctx, 176)
    (hwtstamp,) = struct.unpack_from("<Q", ctx, 184)
    if wire_len and not skb.length <= wire_len <= GSO_LEGACY_MAX_SIZE:
        fail(errno.EINVAL, f"wire_len {wire_len} is not in {skb.length}..{GSO_LEGACY_MAX_SIZE}")
    if gso_segs > GSO_MAX_SEGS:
        fail(errno.EINVAL, f"gso_segs {gso_segs} exceeds {GSO_MAX_SEGS}")
    skb.mark, skb.priority, skb.ingress_ifindex, skb.tstamp = (
        mark,
        priority,
        ingress_ifindex,
        tstamp,
    )
    skb.cb[:] = ctx[48:68]
    skb.wire_len = wire_len or skb.length
    skb.gso_segs, skb.gso_size, skb.hwtstamp = gso_segs, gso_size, hwtstamp


def _skb_ctx_out(skb: SkBuff, ctx: bytearray) -> None:
    """convert_skb_to___skb: the fields a test run reports back."""
    struct.pack_into("<I", ctx, 8, skb.mark)
    struct.pack_into("<III", ctx, 32, skb.priority, skb.ingress_ifindex, skb.ifindex)
    ctx[48:68] = skb.cb
    struct.pack_into("<QII", ctx, 152, skb.tstamp, skb.wire_len, skb.gso_segs)
    struct.pack_into("<Q", ctx, 184, skb.hwtstamp)


def _test_run_skb(call: BpfCall, prog: BpfProgram) -> int:
    attr: TestRunAttr = call.attr
    kernel = call.kernel
    flags = TestRunFlag.SKB_CHECKSUM_COMPLETE
    allowed = flags if kernel.profile.has(flags) else 0
    if attr.flags & ~allowed or attr.cpu or attr.batch_size:
        fail(errno.EINVAL, "flags, cpu and batch_size are not for socket buffer programs")
    size = attr.data_size_in
    limit = kernel.config.page_size - NET_SKB_PAD - SKB_SHARED_INFO
    if not ETH_HLEN <= size <= limit:
        fail(errno.EINVAL, f"data_size_in {size} is not in {ETH_HLEN}..{limit}")
    frame = bytearray(_read(kernel, attr.data_in, size))
    ctx = _ctx_init(call, SKB_CTX_SIZE)
    if ctx is not None:
        (ifindex,) = struct.unpack_from("<I", ctx, 40)
        if ifindex > LOOPBACK_IFINDEX:
            fail(errno.ENODEV, f"no device with ifindex {ifindex} (only lo is modelled)")
    is_l2 = prog.prog_type in L2_TYPES
    protocol, pkt_type = _eth_type_trans(frame)
    skb = SkBuff(frame, 0 if is_l2 else ETH_HLEN, protocol=protocol, pkt_type=pkt_type)
    if ctx is not None:
        _apply_skb_ctx(skb, ctx)
    direct = prog.prog_type in DIRECT_ACCESS_TYPES

    def setup(env: RunEnv) -> int:
        packet = None
        if direct:
            view = memoryview(skb.frame)[skb.data_offset :]
            packet = Region(RegionKind.PACKET, "packet", view)
            env.space.map(packet)
        return env.space.map(SkbContext(skb, prog.prog_type, packet))

    retval, duration = _run(call, prog, setup, attr.repeat)
    if not is_l2:
        frame[:ETH_HLEN] = bytes(ETH_HLEN)
    if ctx is not None:
        _skb_ctx_out(skb, ctx)
    _test_finish(call, bytes(frame), retval, duration)
    _ctx_finish(call, ctx)
    return 0


# -- xdp --------------------------------------------------------------------------------------
def _test_run_xdp(call: BpfCall, prog: BpfProgram) -> int:
    attr: TestRunAttr = call.attr
    kernel = call.kernel
    if prog.expected_attach_type in (AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP):
        fail(errno.EINVAL, "devmap and cpumap programs have no test run")
    if attr.flags & ~TestRunFlag.XDP_LIVE_FRAMES:
        fail(errno.EINVAL, f"flags {attr.flags:#x} are not for xdp")
    if attr.flags & TestRunFlag.XDP_LIVE_FRAMES:
        fail(errno.EINVAL, "BPF_F_TEST_XDP_LIVE_FRAMES is not modelled by the simulator")
    if attr.batch_size:
        fail(errno.EINVAL, "batch_size is only for live frames")
    size = attr.data_size_in
    ctx = _ctx_init(call, XDP_MD_SIZE)
    meta_len, ingress, rx_queue, linear = 0, LOOPBACK_IFINDEX, 0, size
    if ctx is not None:
        data, data_end, data_meta, ingress_in, rx_queue, egress = struct.unpack("<6I", ctx)
        if data_meta or data_end > size or data > data_end or data % 4 or data > XDP_METADATA_MAX:
            fail(errno.EINVAL, "xdp_md data/data_end/data_meta do not describe data_in")
        if egress or (not ingress_in and rx_queue):
            fail(errno.EINVAL, "egress_ifindex, or rx_queue_index without ingress_ifindex")
        if ingress_in > LOOPBACK_IFINDEX:
            fail(errno.ENODEV, f"no device with ifindex {ingress_in} (only lo is modelled)")
        if rx_queue:
            fail(errno.EINVAL, f"lo has no rx queue {rx_queue}")
        meta_len, linear = data, data_end
    headroom = XDP_PACKET_HEADROOM - meta_len
    max_data = kernel.config.page_size - headroom - SKB_SHARED_INFO
    if size < ETH_HLEN:
        fail(errno.EINVAL, f"data_size_in {size} is shorter than an Ethernet header")
    frame = bytearray(_read(kernel, attr.data_in, size))
    linear = min(linear, max_data)

    def setup(env: RunEnv) -> int:
        packet = Region(RegionKind.PACKET, "packet", memoryview(frame)[:linear])
        env.space.map(packet)
        return env.space.map(XdpContext(packet, meta_len, ingress, rx_queue))

    retval, duration = _run(call, prog, setup, attr.repeat)
    _test_finish(call, bytes(frame), retval, duration)
    _ctx_finish(call, ctx)
    return 0


# -- raw tracepoints and syscall programs -----------------------------------------------------
def _test_run_raw_tp(call: BpfCall, prog: BpfProgram) -> int:
    attr: TestRunAttr = call.attr
    kernel = call.kernel
    if attr.data_in or attr.data_out or attr.ctx_out or attr.duration or attr.repeat:
        fail(errno.EINVAL, "raw tracepoint test runs take ctx_in only")
    if attr.batch_size:
        fail(errno.EINVAL, "batch_size is only for xdp live frames")
    size = attr.ctx_size_in
    if size < prog.max_ctx_offset or size > MAX_BPF_FUNC_ARGS * 8:
        fail(errno.EINVAL, f"ctx_size_in {size} does not cover the program's arguments")
    on_cpu = bool(attr.flags & TestRunFlag.RUN_ON_CPU)
    if not on_cpu and attr.cpu:
        fail(errno.EINVAL, "cpu without BPF_F_TEST_RUN_ON_CPU")
    args = bytearray(_read(kernel, attr.ctx_in, size)) if size else bytearray()
    cpu = attr.cpu if on_cpu else 0
    if cpu and cpu >= kernel.config.online:
        fail(errno.ENXIO, f"cpu {cpu} is not online")

    def setup(env: RunEnv) -> int:
        region = Region(RegionKind.CONTEXT, "context (raw tracepoint args)", args, writable=False)
        return env.space.map(region)

    retval, _ = _run(call, prog, setup, 1, cpu)
    call.write_back("retval", retval & U32_MAX)
    return 0


def _test_run_syscall(call: BpfCall, prog: BpfProgram) -> int:
    attr: TestRunAttr = call.attr
    kernel = call.kernel
    if attr.data_in or attr.data_out or attr.ctx_out or attr.duration or attr.repeat:
        fail(errno.EINVAL, "syscall program test runs take ctx_in only")
    if attr.flags or attr.batch_size:
        fail(errno.EINVAL, "flags and batch_size are not for syscall programs")
    size = attr.ctx_size_in
    if size < prog.max_ctx_offset or size > U16_MAX:
        fail(errno.EINVAL, f"ctx_size_in {size} does not cover the program's context")
    ctx = bytearray(_read(kernel, attr.ctx_in, size)) if size else bytearray()

    def setup(env: RunEnv) -> int:
        return env.space.map(Region(RegionKind.CONTEXT, "context (syscall)", ctx))

    retval, _ = _run(call, prog, setup, 1)
    call.write_back("retval", retval & U32_MAX)
    if size:
        kernel.memory.write(attr.ctx_in, bytes(ctx))
    return 0


RUNNERS: Final[dict[ProgType, Callable[[BpfCall, BpfProgram], int]]] = {
    **dict.fromkeys(SKB_TYPES, _test_run_skb),
    ProgType.XDP: _test_run_xdp,
    ProgType.RAW_TRACEPOINT: _test_run_raw_tp,
    ProgType.SYSCALL: _test_run_syscall,
}


@bpf_command(BpfCmd.PROG_TEST_RUN)
def prog_test_run(call: BpfCall) -> int:
    attr: TestRunAttr = call.attr
    if bool(attr.ctx_size_in) != bool(attr.ctx_in) or bool(attr.ctx_size_out) != bool(attr.ctx_out):
        fail(errno.EINVAL, "a context size without its buffer, or a buffer without its size")
    prog = call.kernel.fds.get(attr.prog_fd, BpfProgram)
    runner = RUNNERS.get(prog.prog_type)
    if runner is None:
        why = "not modelled by the simulator" if prog.prog_type in NOT_MODELLED else "none"
        fail(ENOTSUPP, f"{prog.prog_type.name} programs have no test run ({why})")
    return runner(call, prog)
