"""`struct xdp_md` as XDP programs see it, over the test run's frame.

The frame's linear part (metadata, then packet data) is one packet region; xdp_md's data,
data_end and data_meta read as pointers into it (the verifier turns these u32 loads into
pointer loads), ingress_ifindex and rx_queue_index as numbers. xdp_md is read-only, and every
field takes 4-byte loads only.
"""

from __future__ import annotations

from typing import Final

from kernelsim.prog.interpreter.errors import ProgramFault
from kernelsim.prog.interpreter.memory import Region, RegionKind

XDP_MD_SIZE: Final = 24
XDP_FIELDS: Final = ("data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index",
                     "egress_ifindex")  # fmt: skip


class XdpContext(Region):
    """xdp_md over `packet` (linear part: `meta_len` bytes of metadata, then the data)."""

    def __init__(self, packet: Region, meta_len: int, ingress_ifindex: int, rx_queue: int) -> None:
        super().__init__(RegionKind.CONTEXT, "context (struct xdp_md)", bytearray(XDP_MD_SIZE))
        self.packet = packet
        self.meta_len = meta_len
        self.ingress_ifindex = ingress_ifindex
        self.rx_queue = rx_queue

    def load(self, off: int, size: int) -> int:
        if size != 4 or off % 4 or not 0 <= off < XDP_MD_SIZE:
            raise ProgramFault(f"invalid bpf_context access off={off} size={size}")
        name = XDP_FIELDS[off // 4]
        base = self.packet.address
        values = {
            "data": base + self.meta_len,
            "data_end": base + self.packet.size,
            "data_meta": base,
            "ingress_ifindex": self.ingress_ifindex,
            "rx_queue_index": self.rx_queue,
            "egress_ifindex": 0,
        }
        return values[name]

    def store(self, off: int, size: int, value: int) -> None:
        raise ProgramFault(f"invalid bpf_context access off={off} size={size}: xdp_md is read-only")

    def read_bytes(self, off: int, size: int) -> bytes:
        raise ProgramFault("the context cannot be passed to a helper as memory")

    def write_bytes(self, off: int, data: bytes) -> None:
        raise ProgramFault("the context cannot be passed to a helper as memory")
