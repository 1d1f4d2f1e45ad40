"""Register states of the abstract interpreter: what the verifier knows about each register.

A register is NOT_INIT, a scalar (bit-level `Tnum` plus unsigned/signed 64- and 32-bit bounds,
kept consistent by `sync_bounds` exactly as the kernel's reg_bounds_sync), or a pointer of
one `RegType` with a fixed offset `off` and a variable offset described by the same scalar
fields; a stack pointer also names the call frame whose stack it points into (`frameno`).
`fmt_reg` prints a register the way the kernel's print_reg_state does.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from kernelsim.prog.verifier.tnum import U32, U64, Tnum

if TYPE_CHECKING:
    from kernelsim.maps.base import BpfMap

S64_MIN: Final = -(1 << 63)
S64_MAX: Final = (1 << 63) - 1
S32_MIN: Final = -(1 << 31)
S32_MAX: Final = (1 << 31) - 1
BPF_MAX_VAR_OFF: Final = 1 << 29
UNKNOWN: Final = Tnum.unknown()


def s64(x: int) -> int:
    x &= U64
    return x - (1 << 64) if x >> 63 else x


def s32(x: int) -> int:
    x &= U32
    return x - (1 << 32) if x >> 31 else x


class RegType(enum.Enum):
    """The kernel's enum bpf_reg_type (the part modelled); the value is reg_type_str."""

    NOT_INIT = "?"
    SCALAR = "scalar"
    CTX = "ctx"
    MAP_PTR = "map_ptr"
    MAP_VALUE = "map_value"
    MAP_KEY = "map_key"
    STACK = "fp"
    PACKET_META = "pkt_meta"
    PACKET = "pkt"
    PACKET_END = "pkt_end"
    SOCK_COMMON = "sock_common"
    SOCKET = "sock"
    FLOW_KEYS = "flow_keys"
    RINGBUF_MEM = "ringbuf_mem"
    MEM = "mem"

    @property
    def is_packet(self) -> bool:
        return self in (RegType.PACKET, RegType.PACKET_META)


class Reg:
    """One register's state (mutable; states are copied at branches)."""

    __slots__ = (
        "frameno",
        "id",
        "map",
        "maybe_null",
        "mem_size",
        "off",
        "precise",
        "range",
        "ref_obj_id",
        "s32max",
        "s32min",
        "smax",
        "smin",
        "subreg_def",
        "type",
        "u32max",
        "u32min",
        "umax",
        "umin",
        "var_off",
    )  # fmt: skip

    def __init__(self) -> None:
        self.type = RegType.NOT_INIT
        self.off = 0
        self.var_off = UNKNOWN
        self.umin, self.umax, self.smin, self.smax = 0, U64, S64_MIN, S64_MAX
        self.u32min, self.u32max, self.s32min, self.s32max = 0, U32, S32_MIN, S32_MAX
        self.id = 0
        self.ref_obj_id = 0
        self.map: BpfMap | None = None
        self.range = 0
        self.maybe_null = False
        self.mem_size = 0
        self.subreg_def = False
        self.frameno = 0
        """For a stack pointer: the call frame whose stack it points into."""
        self.precise = False
        """A scalar whose exact value a later check depended on (set in kept states by the
        checker's backtracking; printed as a "P" prefix)."""

    def copy(self) -> Reg:
        new = Reg.__new__(Reg)
        new.assign(self)
        return new

    def assign(self, other: Reg) -> None:
        """Become a copy of `other` (every field; spelled out, as this is the hot path)."""
        self.type, self.off, self.var_off = other.type, other.off, other.var_off
        self.umin, self.umax, self.smin, self.smax = other.umin, other.umax, other.smin, other.smax
        self.u32min, self.u32max = other.u32min, other.u32max
        self.s32min, self.s32max = other.s32min, other.s32max
        self.id, self.ref_obj_id, self.map, self.range = (
            other.id,
            other.ref_obj_id,
            other.map,
            other.range,
        )
        self.maybe_null, self.mem_size = other.maybe_null, other.mem_size
        self.subreg_def, self.frameno = other.subreg_def, other.frameno
        self.precise = other.precise

    # -- kinds ----------------------------------------------------------------------------------
    @property
    def is_scalar(self) -> bool:
        return self.type is RegType.SCALAR

    @property
    def is_pointer(self) -> bool:
        return self.type not in (RegType.SCALAR, RegType.NOT_INIT)

    @property
    def is_const(self) -> bool:
        return self.is_scalar and self.var_off.is_const()

    @property
    def const(self) -> int:
        return self.var_off.value

    def type_str(self) -> str:
        base = self.type.value
        return f"{base}_or_null" if self.maybe_null else base

    # -- transitions ----------------------------------------------------------------------------
    def mark_not_init(self) -> None:
        self.__init__()  # type: ignore[misc]

    def mark_unbounded(self) -> None:
        self.umin, self.umax, self.smin, self.smax = 0, U64, S64_MIN, S64_MAX
        self.u32min, self.u32max, self.s32min, self.s32max = 0, U32, S32_MIN, S32_MAX

    def mark_unknown(self) -> None:
        """An unknown scalar."""
        self.mark_not_init()
        self.type = RegType.SCALAR

    def mark_known(self, value: int) -> None:
        """A known 64-bit constant scalar (every other field reset, as mark_not_init does)."""
        self.type, self.off, self.id, self.ref_obj_id, self.map = RegType.SCALAR, 0, 0, 0, None
        self.range, self.maybe_null, self.mem_size = 0, False, 0
        self.subreg_def, self.frameno, self.precise = False, 0, False
        self.set_known(value)

    @classmethod
    def known(cls, value: int) -> Reg:
        """A new register holding a known constant (an immediate operand)."""
        reg = cls.__new__(cls)
        reg.mark_known(value)
        return reg

    def set_known(self, value: int) -> None:
        value &= U64
        self.var_off = Tnum(value, 0)
        self.umin = self.umax = value
        self.smin = self.smax = value - (1 << 64) if value >> 63 else value
        low = value & U32
        self.u32min = self.u32max = low
        self.s32min = self.s32max = low - (1 << 32) if low >> 31 else low

    def mark_pointer(self, reg_type: RegType, **fields: object) -> None:
        """A pointer of `reg_type` with zero offsets (known zero variable part)."""
        self.mark_not_init()
        self.type = reg_type
        self.set_known(0)
        for name, value in fields.items():
            setattr(self, name, value)

    # -- bounds (kernel's reg_bounds_sync and friends) ------------------------------------------
    def update_bounds(self) -> None:
        v, m = self.var_off.value, self.var_off.mask
        self.smin = max(self.smin, s64(v | (m & (1 << 63))))
        self.smax = min(self.smax, s64(v | (m & S64_MAX)))
        self.umin = max(self.umin, v)
        self.umax = min(self.umax, v | m)
        v32, m32 = v & U32, m & U32
        self.s32min = max(self.s32min, s32(v32 | (m32 & (1 << 31))))
        self.s32max = min(self.s32max, s32(v32 | (m32 & S32_MAX)))
        self.u32min = max(self.u32min, v32)
        self.u32max = min(self.u32max, v32 | m32)

    def _deduce32(self) -> None:
        if self.umin >> 32 == self.umax >> 32:
            self.u32min = max(self.u32min, self.umin & U32)
            self.u32max = min(self.u32max, self.umax & U32)
            if s32(self.umin) <= s32(self.umax):
                self.s32min = max(self.s32min, s32(self.umin))
                self.s32max = min(self.s32max, s32(self.umax))
        if self.smin >> 32 == self.smax >> 32:
            if self.smin & U32 <= self.smax & U32:
                self.u32min = max(self.u32min, self.smin & U32)
                self.u32max = min(self.u32max, self.smax & U32)
            if s32(self.smin) <= s32(self.smax):
                self.s32min = max(self.s32min, s32(self.smin))
                self.s32max = min(self.s32max, s32(self.smax))
        if ((self.umin >> 32) + 1) & U32 == (self.umax >> 32) & U32 and (
            s32(self.umin) < 0 <= s32(self.umax)
        ):
            self.s32min = max(self.s32min, s32(self.umin))
            self.s32max = min(self.s32max, s32(self.umax))
        if ((self.smin >> 32) + 1) & U32 == (self.smax >> 32) & U32 and (
            s32(self.smin) < 0 <= s32(self.smax)
        ):
            self.s32min = max(self.s32min, s32(self.smin))
            self.s32max = min(self.s32max, s32(self.smax))
        if s32(self.u32min) <= s32(self.u32max):
            self.s32min = max(self.s32min, s32(self.u32min))
            self.s32max = min(self.s32max, s32(self.u32max))
        if self.s32min & U32 <= self.s32max & U32:
            self.u32min = max(self.u32min, self.s32min & U32)
            self.u32max = min(self.u32max, self.s32max & U32)

    def _deduce64(self) -> None:
        if s64(self.umin) <= s64(self.umax):
            self.smin = max(self.smin, s64(self.umin))
            self.smax = min(self.smax, s64(self.umax))
        if self.smin & U64 <= self.smax & U64:
            self.umin = max(self.umin, self.smin & U64)
            self.umax = min(self.umax, self.smax & U64)
        elif self.umax < self.smin & U64:
            self.smin = s64(self.umin)
            self.smax = min(self.smax, s64(self.umax))
        elif self.smax & U64 < self.umin:
            self.smax = s64(self.umax)
            self.smin = max(self.smin, s64(self.umin))

    def _deduce_mixed(self) -> None:
        high = U64 ^ U32
        self.umin = max(self.umin, (self.umin & high) | self.u32min)
        self.umax = min(self.umax, (self.umax & high) | self.u32max)
        self.smin = max(self.smin, s64((self.smin & high) | self.u32min))
        self.smax = min(self.smax, s64((self.smax & high) | self.u32max))
        if self.s32min >= 0 and self.smin >= S32_MIN and self.smax <= S32_MAX:
            self.smin, self.smax = self.s32min, self.s32max
            self.umin, self.umax = self.s32min, self.s32max
            self.var_off = self.var_off.intersect(Tnum.range(self.smin, self.smax))

    def bound_offset(self) -> None:
        var64 = self.var_off.intersect(Tnum.range(self.umin, self.umax))
        var32 = var64.subreg().intersect(Tnum.range(self.u32min, self.u32max))
        self.var_off = var64.clear_subreg().or_(var32)

    def sync_bounds(self) -> None:
        self.update_bounds()
        for _ in range(3):
            self._deduce32()
            self._deduce64()
            self._deduce_mixed()
        self.bound_offset()
        self.update_bounds()

    def bounds_sane(self) -> bool:
        return (
            self.umin <= self.umax
            and self.smin <= self.smax
            and self.u32min <= self.u32max
            and self.s32min <= self.s32max
        )

    def reset_32_from_64_unknown(self) -> None:
        self.u32min, self.u32max, self.s32min, self.s32max = 0, U32, S32_MIN, S32_MAX

    def zext_32_to_64(self) -> None:
        """The result of a 32-bit operation: the high half is zero."""
        self.var_off = self.var_off.subreg()
        self.umin, self.umax = self.u32min, self.u32max
        self.smin, self.smax = self.u32min, self.u32max
        self.sync_bounds()

    def coerce_to_size(self, size: int) -> None:
        """Keep the low `size` bytes (zero extension)."""
        if size == 8:
            return
        self.var_off = self.var_off.cast(size)
        keep = (1 << (size * 8)) - 1
        if self.umin >> (size * 8) == self.umax >> (size * 8):
            self.umin &= keep
            self.umax &= keep
        else:
            self.umin, self.umax = 0, keep
        self.smin, self.smax = self.umin, self.umax
        if size >= 4:
            self.u32min, self.u32max = self.umin & U32, self.umax & U32
            if self.umax <= U32 and self.umin <= self.umax:
                self.u32min, self.u32max = self.umin, self.umax
        else:
            self.u32min, self.u32max = self.umin, self.umax
        self.s32min, self.s32max = S32_MIN, S32_MAX
        self.sync_bounds()

    # -- comparisons for state pruning ----------------------------------------------------------
    def range_within(self, cur: Reg) -> bool:
        """Whether every value `cur` may hold is one this (old) register allowed."""
        return (
            self.umin <= cur.umin
            and self.umax >= cur.umax
            and self.smin <= cur.smin
            and self.smax >= cur.smax
            and self.u32min <= cur.u32min
            and self.u32max >= cur.u32max
            and self.s32min <= cur.s32min
            and self.s32max >= cur.s32max
            and _tnum_in(self.var_off, cur.var_off)
        )


def _tnum_in(a: Tnum, b: Tnum) -> bool:
    """Whether tnum `b` is a subset of `a`."""
    if b.mask & ~a.mask:
        return False
    return a.value == b.value & ~a.mask


# -- printing (kernel's print_reg_state) ------------------------------------------------------------
def fmt_snum(value: int) -> str:
    value = s64(value)
    return str(value) if -32768 <= value <= 32767 else f"{value & U64:#x}"


def fmt_unum(value: int) -> str:
    return str(value) if value <= 0xFFFF else f"{value:#x}"


def _fmt_ranges(reg: Reg) -> list[str]:
    def snum32(v: int) -> int:
        return v if -32768 <= v <= 32767 else v & U32

    entries: list[list[object]] = [
        ["smin", reg.smin & U64, reg.smin == S64_MIN],
        ["smax", reg.smax & U64, reg.smax == S64_MAX],
        ["umin", reg.umin, reg.umin == 0],
        ["umax", reg.umax, reg.umax == U64],
        ["smin32", snum32(reg.s32min) & U64, reg.s32min == S32_MIN],
        ["smax32", snum32(reg.s32max) & U64, reg.s32max == S32_MAX],
        ["umin32", reg.u32min, reg.u32min == 0],
        ["umax32", reg.u32max, reg.u32max == U32],
    ]
    parts: list[str] = []
    for i, (name, val, omit) in enumerate(entries):
        if omit:
            continue
        assert isinstance(name, str) and isinstance(val, int)
        neg1 = name[0] == "s" and s64(val) < 0
        names = [name]
        for j in range(i + 2, len(entries), 2):
            other = entries[j]
            oname, oval = other[0], other[1]
            assert isinstance(oname, str) and isinstance(oval, int)
            if other[2] or oval != val:
                continue
            if (oname[0] == "s" and s64(oval) < 0) != neg1:
                continue
            other[2] = True
            names.append(oname)
        text = fmt_snum(val) if name[0] == "s" else fmt_unum(val)
        parts.append("=".join(names) + "=" + text)
    return parts


def fmt_reg(reg: Reg, frameno: int = 0) -> str:
    """The kernel's text for one register state ("ctx()", "fp-8", "scalar(...)", "5") as the
    state of frame `frameno` prints it (a pointer into another frame's stack is "fp[0]-8")."""
    mark = "P" if reg.is_scalar and reg.precise else ""
    if reg.is_scalar and reg.var_off.is_const():
        return mark + fmt_snum(reg.var_off.value)
    text = mark + reg.type_str()
    if reg.type is RegType.STACK:
        if reg.frameno != frameno:
            text += f"[{reg.frameno}]"
        if reg.var_off.is_const():
            return text + fmt_snum(reg.var_off.value + reg.off)
    fields: list[str] = []
    if reg.id:
        fields.append(f"id={reg.id}")
    if reg.ref_obj_id:
        fields.append(f"ref_obj_id={reg.ref_obj_id}")
    if reg.type in (RegType.MAP_PTR, RegType.MAP_VALUE, RegType.MAP_KEY) and reg.map is not None:
        name = reg.map.name.split(b"\0", 1)[0]
        if name:
            fields.append(f"map={name.decode('ascii', 'replace')}")
        fields.append(f"ks={reg.map.key_size},vs={reg.map.value_size}")
    if not reg.is_scalar and reg.off:
        fields.append(f"off={fmt_snum(reg.off)}")
    if reg.type.is_packet:
        fields.append(f"r={fmt_unum(reg.range)}")
    if reg.type in (RegType.MEM, RegType.RINGBUF_MEM):
        fields.append(f"sz={fmt_unum(reg.mem_size)}")
    if reg.var_off.is_const():
        if reg.var_off.value:
            fields.append(f"imm={fmt_snum(reg.var_off.value)}")
    else:
        fields.extend(_fmt_ranges(reg))
        if not reg.var_off.is_unknown():
            fields.append(f"var_off={reg.var_off}")
    return f"{text}({','.join(fields)})"
