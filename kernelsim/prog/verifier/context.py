"""Context access rules per program type: the kernel's `is_valid_access` callbacks.

`ctx_access(prog_type, expected_attach_type, off, size, write, bpf_capable)` answers what the
kernel's callback for that type answers: None (refused: "invalid bpf_context access"), or the
register type a read yields (a scalar, or a packet pointer for __sk_buff/xdp_md data fields).
Layouts (x86_64): __sk_buff 192 bytes, xdp_md 24, pt_regs 168, bpf_perf_event_data 184,
raw tracepoint args 12 x u64, tracepoint records up to PERF_MAX_TRACE_SIZE (8192), sk_msg_md 80; a syscall
program's context is caller memory of up to U16_MAX bytes, read and written at any aligned
offset below U16_MAX (the test run checks ctx_size_in against the furthest access).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bpfsys.abi import AttachType, ProgType
from kernelsim.prog.verifier.regs import RegType

SKB_SIZE: Final = 192
SKB: Final = {
    "len": 0, "pkt_type": 4, "mark": 8, "queue_mapping": 12, "protocol": 16, "vlan_present": 20,
    "vlan_tci": 24, "vlan_proto": 28, "priority": 32, "ingress_ifindex": 36, "ifindex": 40,
    "tc_index": 44, "cb": 48, "hash": 68, "tc_classid": 72, "data": 76, "data_end": 80,
    "napi_id": 84, "family": 88, "remote_ip4": 92, "local_ip4": 96, "remote_ip6": 100,
    "local_ip6": 116, "remote_port": 132, "local_port": 136, "data_meta": 140, "flow_keys": 144,
    "tstamp": 152, "wire_len": 160, "gso_segs": 164, "sk": 168, "gso_size": 176,
    "tstamp_type": 180, "hwtstamp": 184,
}  # fmt: skip
PT_REGS_SIZE: Final = 168
PERF_EVENT_DATA_SIZE: Final = 184
RAW_TP_ARGS_SIZE: Final = 8 * 12
PERF_MAX_TRACE_SIZE: Final = 8192
XDP_MD_SIZE: Final = 24
U16_MAX: Final = 0xFFFF

Access = RegType | None
"""What a valid access yields (SCALAR or a packet pointer type); None when refused."""


def _in(off: int, field: str, length: int = 4) -> bool:
    return SKB[field] <= off < SKB[field] + length


def _narrow_ok(off: int, size: int, size_default: int) -> bool:
    return size <= size_default and size & (size - 1) == 0


def _skb_common(off: int, size: int, write: bool) -> Access:
    """bpf_skb_is_valid_access."""
    if off < 0 or off >= SKB_SIZE or off % size:
        return None
    if _in(off, "cb", 20):
        return RegType.SCALAR if off + size <= SKB["cb"] + 20 else None
    if _in(off, "data") or _in(off, "data_meta") or _in(off, "data_end"):
        return RegType.SCALAR if size == 4 else None
    if _in(off, "remote_ip6", 16) or _in(off, "local_ip6", 16):
        return RegType.SCALAR if size == 4 else None
    if _in(off, "remote_ip4") or _in(off, "local_ip4"):
        return RegType.SCALAR if size == 4 else None
    if _in(off, "flow_keys", 8) or _in(off, "tstamp_type", 4):
        return None
    if _in(off, "hwtstamp", 8):
        return RegType.SCALAR if not write and size == 8 else None
    if _in(off, "tstamp", 8):
        return RegType.SCALAR if size == 8 else None
    if off == SKB["sk"]:
        return RegType.SOCK_COMMON if not write and size == 8 else None
    if write:
        return RegType.SCALAR if size == 4 else None
    return RegType.SCALAR if _narrow_ok(off, size, 4) else None


def _socket_filter(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    for field, length in (("tc_classid", 4), ("data", 4), ("data_meta", 4), ("data_end", 4),
                          ("family", 52), ("tstamp", 8), ("wire_len", 4), ("hwtstamp", 8)):  # fmt: skip
        if _in(off, field, length):
            return None
    if write and not _in(off, "cb", 20):
        return None
    return _skb_common(off, size, write)


def _packet_field(off: int) -> RegType | None:
    if _in(off, "data"):
        return RegType.PACKET
    if _in(off, "data_meta"):
        return RegType.PACKET_META
    if _in(off, "data_end"):
        return RegType.PACKET_END
    return None


def _tc(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    writable = ("mark", "tc_index", "priority", "tc_classid", "queue_mapping")
    if write and not (
        any(_in(off, f) for f in writable) or _in(off, "cb", 20) or _in(off, "tstamp", 8)
    ):
        return None
    if _in(off, "family", 52):
        return None
    if off == SKB["tstamp_type"]:
        return RegType.SCALAR if size == 1 else None
    result = _skb_common(off, size, write)
    packet = _packet_field(off)
    return packet if result is not None and packet is not None else result


def _cgroup_skb(off: int, size: int, write: bool, _: int, bpf_capable: bool) -> Access:
    if _in(off, "tc_classid") or _in(off, "data_meta") or _in(off, "wire_len"):
        return None
    if (_in(off, "data") or _in(off, "data_end")) and not bpf_capable:
        return None
    if write:
        ok = _in(off, "mark") or _in(off, "priority") or _in(off, "cb", 20)
        ok = ok or (_in(off, "tstamp", 8) and bpf_capable)
        if not ok:
            return None
    result = _skb_common(off, size, write)
    packet = _packet_field(off)
    return packet if result is not None and packet is not None else result


def _xdp(off: int, size: int, write: bool, attach: int, _: bool) -> Access:
    if attach != AttachType.XDP_DEVMAP and off == 20:
        return None
    if write or off < 0 or off >= XDP_MD_SIZE or off % size or size != 4:
        return None
    return {0: RegType.PACKET, 4: RegType.PACKET_END, 8: RegType.PACKET_META}.get(
        off, RegType.SCALAR
    )


def _kprobe(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    if off < 0 or off >= PT_REGS_SIZE or write or off % size or off + size > PT_REGS_SIZE:
        return None
    return RegType.SCALAR


def _tracepoint(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    if off < 8 or off >= PERF_MAX_TRACE_SIZE or write or off % size:
        return None
    return RegType.SCALAR


def _perf_event(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    if off < 0 or off >= PERF_EVENT_DATA_SIZE or write or off % size:
        return None
    if PT_REGS_SIZE <= off < PERF_EVENT_DATA_SIZE:
        return RegType.SCALAR if _narrow_ok(off, size, 8) else None
    return RegType.SCALAR if size == 8 else None


def _raw_tracepoint(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    if off < 0 or off >= RAW_TP_ARGS_SIZE or write or off % size:
        return None
    return RegType.SCALAR


def _syscall(off: int, size: int, _write: bool, _: int, __: bool) -> Access:
    """syscall_prog_is_valid_access: reads and writes anywhere aligned below U16_MAX."""
    if off < 0 or off >= U16_MAX or off % size:
        return None
    return RegType.SCALAR


def _sk_skb(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    """sk_skb_is_valid_access: tc_index and priority writable; no mark, tc_classid, data_meta,
    tstamp, wire_len or hwtstamp."""
    for field, length in (("tc_classid", 4), ("data_meta", 4), ("tstamp", 8), ("wire_len", 4),
                          ("hwtstamp", 8), ("mark", 4)):  # fmt: skip
        if _in(off, field, length):
            return None
    if write and not (_in(off, "tc_index") or _in(off, "priority")):
        return None
    result = _skb_common(off, size, write)
    packet = _packet_field(off)
    return packet if result is not None and packet is not None else result


SK_MSG_SIZE: Final = 80
"""sizeof(struct sk_msg_md): data 0, data_end 8 (pointers), family..size u32s 16-71, sk 72."""


def _sk_msg(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    """sk_msg_is_valid_access: read only; data/data_end/sk 8 bytes, the u32 fields 4."""
    if write or off % size or not 0 <= off < SK_MSG_SIZE:
        return None
    if off < 16:
        return (RegType.PACKET if off < 8 else RegType.PACKET_END) if size == 8 else None
    if off < 72:
        return RegType.SCALAR if size == 4 else None
    return RegType.SOCKET if size == 8 else None


def _flow_dissector(off: int, size: int, write: bool, _: int, __: bool) -> Access:
    """flow_dissector_is_valid_access: read only; data, data_end and flow_keys only."""
    if off < 0 or off >= SKB_SIZE or write:
        return None
    if _in(off, "data"):
        return RegType.PACKET if size == 4 else None
    if _in(off, "data_end"):
        return RegType.PACKET_END if size == 4 else None
    if _in(off, "flow_keys", 8):
        return RegType.FLOW_KEYS if size == 8 else None
    return None


CtxRule = Callable[[int, int, bool, int, bool], Access]

CTX_RULES: Final[dict[ProgType, CtxRule]] = {
    ProgType.SOCKET_FILTER: _socket_filter,
    ProgType.SCHED_CLS: _tc,
    ProgType.SCHED_ACT: _tc,
    ProgType.CGROUP_SKB: _cgroup_skb,
    ProgType.XDP: _xdp,
    ProgType.KPROBE: _kprobe,
    ProgType.TRACEPOINT: _tracepoint,
    ProgType.PERF_EVENT: _perf_event,
    ProgType.RAW_TRACEPOINT: _raw_tracepoint,
    ProgType.SYSCALL: _syscall,
    ProgType.SK_SKB: _sk_skb,
    ProgType.SK_MSG: _sk_msg,
    ProgType.FLOW_DISSECTOR: _flow_dissector,
}
"""The program types whose context the simulator models (others cannot be loaded)."""


def ctx_access(
    prog_type: ProgType, attach: int, off: int, size: int, write: bool, bpf_capable: bool
) -> Access:
    """What reading (or writing) `size` bytes at `off` of the context gives; None: refused."""
    return CTX_RULES[prog_type](off, size, write, attach, bpf_capable)
