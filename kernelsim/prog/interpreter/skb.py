"""The socket buffer of a test run, and `struct __sk_buff` as programs see it.

Theory of operation
-------------------
`SkBuff` models the parts of a kernel sk_buff that BPF_PROG_TEST_RUN sets up and programs
read: one linear buffer holding the frame, the offsets of skb->data, the MAC and network
headers, the length, and the metadata fields (mark, priority, cb, ...). `SkbContext` is the
`struct __sk_buff` region handed to the program in r1: each load or store at a field offset is
translated as the verifier's convert_ctx_access does (narrow loads of u32 fields, data/data_end/
data_meta as pointers into the packet region), and an access that the verifier's
`*_is_valid_access` of the program type refuses raises `ProgramFault` naming the offset.
`packet_load` is the legacy ld_abs/ld_ind path (bpf_skb_load_helper_*): big-endian values
relative to skb->data, with the SKF_NET_OFF / SKF_LL_OFF negative offsets.
"""

from __future__ import annotations

from typing import Final

import attrs

from bpfsys.abi import ProgType
from kernelsim.prog.interpreter.errors import ProgramFault
from kernelsim.prog.interpreter.memory import Region, RegionKind

ETH_HLEN: Final = 14
SKB_CTX_SIZE: Final = 192
"""sizeof(struct __sk_buff)."""
SKF_NET_OFF: Final = -0x100000
SKF_LL_OFF: Final = -0x200000
LOOPBACK_IFINDEX: Final = 1

# name -> (offset, size) of struct __sk_buff
FIELDS: Final = {
    "len": (0, 4), "pkt_type": (4, 4), "mark": (8, 4), "queue_mapping": (12, 4),
    "protocol": (16, 4), "vlan_present": (20, 4), "vlan_tci": (24, 4), "vlan_proto": (28, 4),
    "priority": (32, 4), "ingress_ifindex": (36, 4), "ifindex": (40, 4), "tc_index": (44, 4),
    "cb": (48, 20), "hash": (68, 4), "tc_classid": (72, 4), "data": (76, 4),
    "data_end": (80, 4), "napi_id": (84, 4), "family": (88, 4), "remote_ip4": (92, 4),
    "local_ip4": (96, 4), "remote_ip6": (100, 16), "local_ip6": (116, 16),
    "remote_port": (132, 4), "local_port": (136, 4), "data_meta": (140, 4),
    "flow_keys": (144, 8), "tstamp": (152, 8), "wire_len": (160, 4), "gso_segs": (164, 4),
    "sk": (168, 8), "gso_size": (176, 4), "tstamp_type": (180, 1), "hwtstamp": (184, 8),
}  # fmt: skip
POINTER_FIELDS: Final = frozenset({"data", "data_end", "data_meta"})
SOCKET_FIELDS: Final = frozenset(
    {"family", "remote_ip4", "local_ip4", "remote_ip6", "local_ip6", "remote_port", "local_port"}
)
L2_TYPES: Final = frozenset({ProgType.SCHED_CLS, ProgType.SCHED_ACT})
"""Programs that see the frame from its Ethernet header (the others from the network one)."""
DIRECT_ACCESS_TYPES: Final = L2_TYPES | {
    ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_XMIT, ProgType.CGROUP_SKB,
}  # fmt: skip
# Fields each program type may not read, and the fields it may write.
UNREADABLE: Final = {
    ProgType.SOCKET_FILTER: SOCKET_FIELDS
    | {"tc_classid", "data", "data_end", "data_meta", "tstamp", "wire_len", "hwtstamp"},
    ProgType.SCHED_CLS: SOCKET_FIELDS,
    ProgType.SCHED_ACT: SOCKET_FIELDS,
    ProgType.CGROUP_SKB: {"tc_classid", "data_meta", "wire_len"},
}
DEFAULT_UNREADABLE: Final = SOCKET_FIELDS | {"tc_classid", "data_meta", "tstamp", "wire_len"}
WRITABLE: Final = {
    ProgType.SOCKET_FILTER: {"cb"},
    ProgType.SCHED_CLS: {"mark", "tc_index", "priority", "cb", "tc_classid", "tstamp",
                         "queue_mapping"},
    ProgType.SCHED_ACT: {"mark", "tc_index", "priority", "cb", "tc_classid", "tstamp",
                         "queue_mapping"},
    ProgType.CGROUP_SKB: {"mark", "priority", "cb", "tstamp"},
}  # fmt: skip
DEFAULT_WRITABLE: Final = frozenset({"cb"})


def _field_at(offset: int) -> tuple[str, int, int]:
    """(name, field offset, field size) of the field covering byte `offset`."""
    for name, (start, size) in FIELDS.items():
        if start <= offset < start + size:
            return name, start, size
    raise ProgramFault(f"invalid bpf_context access off={offset}: no __sk_buff field there")


@attrs.define
class SkBuff:
    """The test run's socket buffer. `frame` holds the whole frame; skb->data is at
    `data_offset` and holds `length` bytes."""

    frame: bytearray
    data_offset: int
    network_offset: int = ETH_HLEN
    protocol: int = 0
    """skb->protocol as stored (__be16, read as a little-endian u16)."""
    pkt_type: int = 0
    mark: int = 0
    priority: int = 0
    ingress_ifindex: int = 0
    ifindex: int = LOOPBACK_IFINDEX
    cb: bytearray = attrs.field(factory=lambda: bytearray(20))
    tc_index: int = 0
    tc_classid: int = 0
    queue_mapping: int = 0
    tstamp: int = 0
    wire_len: int = 0
    gso_segs: int = 0
    gso_size: int = 0
    hwtstamp: int = 0

    @property
    def length(self) -> int:
        return len(self.frame) - self.data_offset

    def load_helper(self, offset: int, size: int) -> int | None:
        """bpf_skb_load_helper_{8,16,32}: the big-endian value or None when out of range."""
        if offset >= 0:
            start = self.data_offset + offset
        elif offset >= SKF_NET_OFF:
            start = self.network_offset + offset - SKF_NET_OFF
        elif offset >= SKF_LL_OFF:
            start = offset - SKF_LL_OFF
        else:
            return None
        if start < 0 or start + size > len(self.frame):
            return None
        return int.from_bytes(self.frame[start : start + size], "big")


class SkbContext(Region):
    """`struct __sk_buff` of `skb` for a program of `prog_type`."""

    def __init__(self, skb: SkBuff, prog_type: ProgType, packet: Region | None) -> None:
        super().__init__(RegionKind.CONTEXT, "context (struct __sk_buff)", bytearray(SKB_CTX_SIZE))
        self.skb = skb
        self.prog_type = prog_type
        self.packet = packet
        """The packet region for direct access (None for types without it)."""

    def _value(self, name: str) -> int:
        skb = self.skb
        if name in POINTER_FIELDS:
            if self.packet is None:
                raise ProgramFault(f"{name} is not accessible to this program type")
            start = self.packet.address
            return start + self.packet.size if name == "data_end" else start
        values = {
            "len": skb.length, "pkt_type": skb.pkt_type, "mark": skb.mark,
            "queue_mapping": skb.queue_mapping, "protocol": skb.protocol,
            "priority": skb.priority, "ingress_ifindex": skb.ingress_ifindex,
            "ifindex": skb.ifindex, "tc_index": skb.tc_index, "tc_classid": skb.tc_classid,
            "tstamp": skb.tstamp, "wire_len": skb.wire_len, "gso_segs": skb.gso_segs,
            "gso_size": skb.gso_size, "hwtstamp": skb.hwtstamp,
        }  # fmt: skip
        return values.get(name, 0)

    def _checked(self, off: int, size: int, write: bool) -> tuple[str, int, int]:
        name, start, field_size = _field_at(off)
        access = f"invalid bpf_context access off={off} size={size}"
        if write:
            allowed = name in WRITABLE.get(self.prog_type, DEFAULT_WRITABLE)
        else:
            unreadable = UNREADABLE.get(self.prog_type, DEFAULT_UNREADABLE)
            allowed = name not in unreadable and name not in ("flow_keys", "sk")
        if not allowed:
            raise ProgramFault(f"{access}: {name} is not {'writable' if write else 'readable'}")
        unit = 4 if name in ("cb", "remote_ip6", "local_ip6") else field_size
        if off % size or size > unit or (off - start) % unit + size > unit:
            raise ProgramFault(f"{access}: misaligned or wider than {name}")
        exact = write or name in POINTER_FIELDS or unit == 8
        if exact and size != unit:
            raise ProgramFault(f"{access}: {name} takes {unit}-byte accesses only")
        return name, start, unit

    def load(self, off: int, size: int) -> int:
        name, start, unit = self._checked(off, size, write=False)
        if name == "cb":
            return int.from_bytes(self.skb.cb[off - start : off - start + size], "little")
        value = self._value(name)
        if name in POINTER_FIELDS:
            return value
        shift = 8 * ((off - start) % unit)
        return (value >> shift) & ((1 << (8 * size)) - 1)

    def store(self, off: int, size: int, value: int) -> None:
        name, start, _ = self._checked(off, size, write=True)
        value &= (1 << (8 * size)) - 1
        if name == "cb":
            self.skb.cb[off - start : off - start + size] = value.to_bytes(size, "little")
        else:
            setattr(self.skb, name, value)

    def read_bytes(self, off: int, size: int) -> bytes:
        raise ProgramFault("the context cannot be passed to a helper as memory")

    def write_bytes(self, off: int, data: bytes) -> None:
        raise ProgramFault("the context cannot be passed to a helper as memory")

    def packet_load(self, offset: int, size: int) -> int | None:
        """ld_abs / ld_ind through this context."""
        return self.skb.load_helper(offset, size)
