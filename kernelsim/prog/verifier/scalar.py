"""Arithmetic on scalar registers (the kernel's adjust_scalar_min_max_vals), 64- and 32-bit.

Every operation computes a `Tnum` and unsigned/signed bounds for its width; results of 32-bit
operations are zero-extended. Operations whose range the kernel does not track (division,
modulo, shifts by an amount that may be out of range) give an unknown scalar, as the kernel's.
"""

from __future__ import annotations

from typing import Final

from kernelsim.prog.verifier.regs import Reg
from kernelsim.prog.verifier.tnum import U32, U64, Tnum

ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0,
)  # fmt: skip
TRACKED: Final = frozenset({ADD, SUB, MUL, OR, AND, LSH, RSH, XOR, ARSH, NEG})


class _View:
    """Bounds of one width: (umin, umax, smin, smax, tnum) with helpers for that width."""

    def __init__(self, bits: int, umin: int, umax: int, smin: int, smax: int, t: Tnum) -> None:
        self.bits, self.umin, self.umax, self.smin, self.smax, self.t = (
            bits,
            umin,
            umax,
            smin,
            smax,
            t,
        )
        self.umax_all = (1 << bits) - 1
        self.smin_all, self.smax_all = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def signed(self, value: int) -> int:
        value &= self.umax_all
        return value - (1 << self.bits) if value >> (self.bits - 1) else value

    def full_signed(self) -> None:
        self.smin, self.smax = self.smin_all, self.smax_all

    def full_unsigned(self) -> None:
        self.umin, self.umax = 0, self.umax_all

    def signed_from_unsigned(self) -> None:
        if self.signed(self.umin) <= self.signed(self.umax):
            self.smin, self.smax = self.signed(self.umin), self.signed(self.umax)
        else:
            self.full_signed()

    def fits_s(self, *values: int) -> bool:
        return all(self.smin_all <= v <= self.smax_all for v in values)


def _view(reg: Reg, bits: int) -> _View:
    if bits == 64:
        return _View(64, reg.umin, reg.umax, reg.smin, reg.smax, reg.var_off)
    return _View(32, reg.u32min, reg.u32max, reg.s32min, reg.s32max, reg.var_off.subreg())


def _compute(op: int, d: _View, s: _View, bits: int) -> _View:
    r = _View(bits, 0, (1 << bits) - 1, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, Tnum.unknown())
    top = r.umax_all
    if op == ADD:
        if r.fits_s(d.smin + s.smin, d.smax + s.smax):
            r.smin, r.smax = d.smin + s.smin, d.smax + s.smax
        if d.umax + s.umax <= top:
            r.umin, r.umax = d.umin + s.umin, d.umax + s.umax
        r.t = d.t.add(s.t)
    elif op == SUB:
        if r.fits_s(d.smin - s.smax, d.smax - s.smin):
            r.smin, r.smax = d.smin - s.smax, d.smax - s.smin
        if d.umin >= s.umax:
            r.umin, r.umax = d.umin - s.umax, d.umax - s.umin
        r.t = d.t.sub(s.t)
    elif op == MUL:
        if d.umax * s.umax <= top:
            r.umin, r.umax = d.umin * s.umin, d.umax * s.umax
        corners = [a * b for a in (d.smin, d.smax) for b in (s.smin, s.smax)]
        if r.fits_s(*corners):
            r.smin, r.smax = min(corners), max(corners)
        r.t = d.t.mul(s.t)
    elif op == AND:
        r.t = d.t.and_(s.t)
        r.umin, r.umax = r.t.value, min(d.umax, s.umax)
        r.signed_from_unsigned()
    elif op == OR:
        r.t = d.t.or_(s.t)
        r.umin, r.umax = max(d.umin, s.umin), r.t.value | r.t.mask
        r.signed_from_unsigned()
    elif op == XOR:
        r.t = d.t.xor(s.t)
        r.umin, r.umax = r.t.value, r.t.value | r.t.mask
        r.signed_from_unsigned()
    elif op == LSH:
        lo, hi = s.umin, s.umax
        if d.umax <= top >> hi:
            r.umin, r.umax = d.umin << lo, d.umax << hi
        r.t = d.t.lshift(lo) if lo == hi else Tnum.unknown().cast(bits // 8)
        r.signed_from_unsigned()
    elif op == RSH:
        lo, hi = s.umin, s.umax
        r.umin, r.umax = d.umin >> hi, d.umax >> lo
        r.t = d.t.rshift(lo) if lo == hi else Tnum.range(r.umin, r.umax)
    elif op == ARSH:
        lo, hi = s.umin, s.umax
        if lo == hi:
            r.smin, r.smax = d.smin >> lo, d.smax >> lo
            r.t = d.t.arshift(lo, bits)
    return r


def _write(reg: Reg, r: _View, bits: int) -> None:
    if bits == 64:
        reg.var_off = r.t
        reg.umin, reg.umax, reg.smin, reg.smax = r.umin, r.umax, r.smin, r.smax
        reg.reset_32_from_64_unknown()
        reg.sync_bounds()
        return
    reg.var_off = r.t.subreg()
    reg.u32min, reg.u32max, reg.s32min, reg.s32max = r.umin, r.umax, r.smin, r.smax
    reg.umin, reg.umax = 0, U64
    reg.zext_32_to_64()


_CONST_OPS: Final = frozenset({ADD, SUB, MUL, OR, AND, LSH, RSH, XOR, ARSH})


def _const_result(op: int, a: int, b: int, bits: int) -> int | None:
    """The result of an operation on two known values (None: a shift out of range, which the
    general path makes unknown). The same as the general path computes, only faster."""
    top = (1 << bits) - 1
    a, b = a & top, b & top
    if op in (LSH, RSH, ARSH) and b >= bits:
        return None
    if op == ADD:
        return (a + b) & top
    if op == SUB:
        return (a - b) & top
    if op == MUL:
        return (a * b) & top
    if op == OR:
        return a | b
    if op == AND:
        return a & b
    if op == XOR:
        return a ^ b
    if op == LSH:
        return (a << b) & top
    if op == RSH:
        return a >> b
    signed = a - (1 << bits) if a >> (bits - 1) else a
    return (signed >> b) & top


def alu(reg: Reg, op: int, src: Reg, bits: int) -> None:
    """reg = reg <op> src for a scalar `reg` and scalar `src` (NEG ignores src)."""
    if op == NEG:
        zero = Reg.known(0)
        copy = reg.copy()
        reg.assign(zero)
        alu(reg, SUB, copy, bits)
        return
    if reg.var_off.is_const() and src.var_off.is_const() and op in _CONST_OPS:
        value = _const_result(op, reg.var_off.value, src.var_off.value, bits)
        if value is not None:
            reg.set_known(value)
            reg.id = 0
            return
    s = _view(src, bits)
    if op not in TRACKED or (op in (LSH, RSH, ARSH) and s.umax >= bits):
        reg.mark_unknown()
        if bits == 32:
            reg.zext_32_to_64()
        return
    d = _view(reg, bits)
    if d.umin > d.umax or s.umin > s.umax:
        reg.mark_unknown()
        return
    _write(reg, _compute(op, d, s, bits), bits)
    reg.id = 0


def byte_swap(reg: Reg, bits: int, to_be: bool, alu64: bool) -> None:
    """BPF_END on a scalar: known values are swapped, others become unknown."""
    if not reg.var_off.is_const():
        reg.mark_unknown()
        return
    value = reg.var_off.value & ((1 << bits) - 1)
    if alu64 or to_be:
        value = int.from_bytes(value.to_bytes(bits // 8, "little"), "big")
    reg.mark_known(value)


def sign_extend(reg: Reg, from_bits: int, bits: int) -> None:
    """movsx: sign-extend the low `from_bits` into a `bits`-wide result."""
    if reg.var_off.is_const():
        value = reg.var_off.value & ((1 << from_bits) - 1)
        if value >> (from_bits - 1):
            value -= 1 << from_bits
        reg.mark_known(value & (U64 if bits == 64 else U32))
        return
    reg.mark_unknown()
    lo, hi = -(1 << (from_bits - 1)), (1 << (from_bits - 1)) - 1
    if bits == 64:
        reg.smin, reg.smax = lo, hi
    else:
        reg.s32min, reg.s32max = lo, hi
        reg.umin, reg.umax, reg.smin, reg.smax = 0, U32, 0, U32
        reg.var_off = Tnum.unknown().subreg()
    reg.sync_bounds()
