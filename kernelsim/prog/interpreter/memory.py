"""Typed memory for running programs: regions with bounds, pointers as tagged integers.

Theory of operation
-------------------
A program's registers hold plain 64-bit integers. A pointer is an integer whose high 32 bits
name a *slot* of the run's `AddressSpace` and whose low 32 bits are the offset plus 2**31, so
pointer arithmetic is ordinary integer arithmetic and an offset that wanders up to 2 GiB below
or above a region stays attributable to it. Each slot holds one `Region`: a byte buffer, a kind
(stack, context, map value, packet, ring reservation, plain memory, map handle), a name for
messages and whether the program may write it. Every load and store is checked against the
region's bounds; an access the verifier would have refused (no region, out of bounds, a write
to read-only memory, an atomic on memory that does not take atomics) raises `ProgramFault`.

Rules:
- a region's address is fixed while it is mapped; slots of unmapped regions are reused last-in
  first-out, so the same run gives the same addresses every time;
- the integer 0 (NULL) and small integers are never pointers (slots start at 0xffff8880);
- loads and stores are little-endian, as on the hosts the kernel runs these programs on.
Contexts (struct __sk_buff, xdp_md, ...) subclass `Region` and translate field accesses, as
the verifier's convert_ctx_access does.
"""

from __future__ import annotations

import enum
import struct
import sys
from typing import Any, Final

from kernelsim.prog.interpreter.errors import ProgramFault

if sys.byteorder != "little":  # pragma: no cover - the fast stack views assume it
    raise ImportError("kernelsim's interpreter models a little-endian machine")

SLOT_SHIFT: Final = 32
FIRST_SLOT: Final = 0xFFFF8880
"""The high 32 bits of the first region's addresses (a kernel direct-map-like address)."""
OFFSET_BIAS: Final = 1 << 31
"""Offset 0 of a region sits in the middle of its slot."""
MASK32: Final = 0xFFFFFFFF
MASK64: Final = 0xFFFFFFFFFFFFFFFF
UNSIGNED: Final = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"),
                   8: struct.Struct("<Q")}  # fmt: skip


class RegionKind(enum.Enum):
    """What a region is; decides which accesses the verifier would allow."""

    STACK = "stack"
    CONTEXT = "context"
    MAP_VALUE = "map value"
    PACKET = "packet"
    RINGBUF = "ring buffer reservation"
    MEMORY = "memory"
    MAP = "map"
    """A map handle (what ld_imm64 of a map fd gives): passed to helpers, never dereferenced."""
    FUNCTION = "function"
    """A subprogram (what ld_imm64 of BPF_PSEUDO_FUNC gives): a callback passed to helpers."""


ATOMIC_KINDS: Final = frozenset({RegionKind.STACK, RegionKind.MAP_VALUE, RegionKind.MEMORY})


class Region:
    """A bounded piece of memory a program may point into.

    `buf` is the backing store (a bytearray or a writable memoryview, shared with its owner:
    a map's value, the packet, the stack); `obj` is what the region stands for (the BpfMap
    of a map handle or value), for helpers.
    """

    def __init__(
        self,
        kind: RegionKind,
        name: str,
        buf: bytearray | memoryview,
        *,
        writable: bool = True,
        obj: Any = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.buf = buf
        self.writable = writable
        self.obj = obj
        self.address = 0
        """Where offset 0 is mapped (set by AddressSpace.map)."""

    @property
    def size(self) -> int:
        return len(self.buf)

    def _check(self, off: int, size: int, access: str) -> None:
        if off < 0 or off + size > len(self.buf):
            raise ProgramFault(
                f"{access} of {size} bytes at offset {off} of the {self.name} "
                f"({len(self.buf)} bytes): out of bounds"
            )

    def load(self, off: int, size: int) -> int:
        """The unsigned little-endian value of `size` bytes at `off`."""
        self._check(off, size, "read")
        return int(UNSIGNED[size].unpack_from(self.buf, off)[0])

    def store(self, off: int, size: int, value: int) -> None:
        """Write the low `size` bytes of `value` at `off`."""
        self._check(off, size, "write")
        if not self.writable:
            raise ProgramFault(f"write into the {self.name}, which is read-only")
        UNSIGNED[size].pack_into(self.buf, off, value & ((1 << (8 * size)) - 1))

    def read_bytes(self, off: int, size: int) -> bytes:
        self._check(off, size, "read")
        return bytes(self.buf[off : off + size])

    def write_bytes(self, off: int, data: bytes) -> None:
        self._check(off, len(data), "write")
        if not self.writable:
            raise ProgramFault(f"write into the {self.name}, which is read-only")
        self.buf[off : off + len(data)] = data

    def __repr__(self) -> str:
        return (
            f"<Region {self.kind.value} {self.name!r} {len(self.buf)} bytes at {self.address:#x}>"
        )


class AddressSpace:
    """The regions a run can reach, by address."""

    def __init__(self) -> None:
        self._slots: dict[int, Region] = {}
        self._free: list[int] = []
        self._next = FIRST_SLOT

    def map(self, region: Region) -> int:
        """Give `region` an address; return it (the address of offset 0)."""
        slot = self._free.pop() if self._free else self._next
        if slot == self._next:
            if slot > MASK32:
                raise ProgramFault("too many memory regions in one run")
            self._next += 1
        self._slots[slot] = region
        region.address = (slot << SLOT_SHIFT) + OFFSET_BIAS
        return region.address

    def unmap(self, region: Region) -> None:
        """Forget `region`: pointers into it no longer reach anything."""
        slot = region.address >> SLOT_SHIFT
        if self._slots.get(slot) is region:
            del self._slots[slot]
            self._free.append(slot)

    def region_at(self, addr: int, size: int, access: str) -> tuple[Region, int]:
        """The region `addr` points into and the offset there; ProgramFault when none."""
        region = self._slots.get(addr >> SLOT_SHIFT)
        if region is None:
            raise ProgramFault(
                f"{access} of {size} bytes at {addr:#x}, which is not a pointer to any memory"
            )
        return region, (addr & MASK32) - OFFSET_BIAS

    def load(self, addr: int, size: int) -> int:
        region = self._slots.get(addr >> SLOT_SHIFT)
        if region is None:
            self.region_at(addr, size, "read")
        assert region is not None
        return region.load((addr & MASK32) - OFFSET_BIAS, size)

    def store(self, addr: int, size: int, value: int) -> None:
        region = self._slots.get(addr >> SLOT_SHIFT)
        if region is None:
            self.region_at(addr, size, "write")
        assert region is not None
        region.store((addr & MASK32) - OFFSET_BIAS, size, value)

    def read_bytes(self, addr: int, size: int) -> bytes:
        region, off = self.region_at(addr, size, "read")
        return region.read_bytes(off, size)

    def write_bytes(self, addr: int, data: bytes) -> None:
        region, off = self.region_at(addr, len(data), "write")
        region.write_bytes(off, data)

    def atomic_region(self, addr: int, size: int) -> tuple[Region, int]:
        """The region of an atomic operation, which must be one that takes atomics."""
        region, off = self.region_at(addr, size, "atomic")
        if region.kind not in ATOMIC_KINDS:
            raise ProgramFault(f"atomic operation on the {region.name}, which does not take them")
        return region, off
