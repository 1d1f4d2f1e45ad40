"""Conditional jumps on scalars: whether a branch is decided, and what each side learns.

`branch_taken(a, b, op, bits)` is the kernel's is_scalar_branch_taken (1, 0, or None when both
sides are possible); `refine(a, b, op, bits)` narrows both registers for the side where
`a <op> b` holds (regs_refine_cond_op). The other side uses `NEGATE[op]` (JSET's negation is
`JSET_FALSE`, a pseudo-operation).
"""

from __future__ import annotations

from typing import Final

from kernelsim.prog.verifier.regs import S32_MAX, S32_MIN, S64_MAX, S64_MIN, Reg, s32, s64
from kernelsim.prog.verifier.tnum import U32, U64, Tnum

JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, JLT, JLE, JSLT, JSLE = (
    0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0,
)  # fmt: skip
JSET_FALSE: Final = 0x41
NEGATE: Final = {
    JEQ: JNE, JNE: JEQ, JGT: JLE, JLE: JGT, JGE: JLT, JLT: JGE, JSGT: JSLE, JSLE: JSGT,
    JSGE: JSLT, JSLT: JSGE, JSET: JSET_FALSE, JSET_FALSE: JSET,
}  # fmt: skip
FLIP: Final = {
    JEQ: JEQ, JNE: JNE, JSET: JSET, JSET_FALSE: JSET_FALSE, JGT: JLT, JLT: JGT, JGE: JLE,
    JLE: JGE, JSGT: JSLT, JSLT: JSGT, JSGE: JSLE, JSLE: JSGE,
}  # fmt: skip
"""a <op> b is b <FLIP[op]> a."""


def _bounds(reg: Reg, bits: int) -> tuple[int, int, int, int, Tnum]:
    if bits == 64:
        return reg.umin, reg.umax, reg.smin, reg.smax, reg.var_off
    return reg.u32min, reg.u32max, reg.s32min, reg.s32max, reg.var_off.subreg()


def branch_taken(a: Reg, b: Reg, op: int, bits: int) -> int | None:
    au, aU, as_, aS, at = _bounds(a, bits)
    bu, bU, bs, bS, bt = _bounds(b, bits)
    if op == JEQ:
        if at.is_const() and bt.is_const():
            return int(at.value == bt.value)
        if au > bU or aU < bu or as_ > bS or aS < bs:
            return 0
        if (at.value ^ bt.value) & ~(at.mask | bt.mask):
            return 0
        return None
    if op == JNE:
        taken = branch_taken(a, b, JEQ, bits)
        return None if taken is None else 1 - taken
    if op == JSET:
        if at.value & bt.value:
            return 1
        if not ((at.value | at.mask) & (bt.value | bt.mask)):
            return 0
        return None
    if op == JSET_FALSE:
        taken = branch_taken(a, b, JSET, bits)
        return None if taken is None else 1 - taken
    table = {
        JGT: (au > bU, aU <= bu), JGE: (au >= bU, aU < bu),
        JLT: (aU < bu, au >= bU), JLE: (aU <= bu, au > bU),
        JSGT: (as_ > bS, aS <= bs), JSGE: (as_ >= bS, aS < bs),
        JSLT: (aS < bs, as_ >= bS), JSLE: (aS <= bs, as_ > bS),
    }  # fmt: skip
    always, never = table[op]
    return 1 if always else 0 if never else None


def _set(reg: Reg, bits: int, umin: int, umax: int, smin: int, smax: int) -> None:
    if bits == 64:
        reg.umin, reg.umax, reg.smin, reg.smax = umin, umax, smin, smax
    else:
        reg.u32min, reg.u32max, reg.s32min, reg.s32max = umin, umax, smin, smax


def refine(a: Reg, b: Reg, op: int, bits: int) -> None:
    """Narrow scalars `a` and `b` assuming `a <op> b` holds."""
    au, aU, as_, aS, at = _bounds(a, bits)
    bu, bU, bs, bS, bt = _bounds(b, bits)
    if op == JEQ:
        lo_u, hi_u, lo_s, hi_s = max(au, bu), min(aU, bU), max(as_, bs), min(aS, bS)
        _set(a, bits, lo_u, hi_u, lo_s, hi_s)
        _set(b, bits, lo_u, hi_u, lo_s, hi_s)
        t = at.intersect(bt)
        for reg in (a, b):
            reg.var_off = t if bits == 64 else reg.var_off.with_subreg(t)
    elif op == JNE:
        for x, y in ((a, b), (b, a)):
            _, _, _, _, yt = _bounds(y, bits)
            if not yt.is_const():
                continue
            xu, xU, xs, xS, _ = _bounds(x, bits)
            value = yt.value
            sval = s64(value) if bits == 64 else s32(value)
            xu = xu + 1 if xu == value else xu
            xU = xU - 1 if xU == value else xU
            xs = xs + 1 if xs == sval else xs
            xS = xS - 1 if xS == sval else xS
            _set(x, bits, xu, xU, xs, xS)
    elif op in (JSET, JSET_FALSE):
        if not bt.is_const():
            return
        value = bt.value
        if op == JSET:
            if value & (value - 1):
                return
            t = at.or_(Tnum.const(value))
        else:
            t = at.and_(Tnum.const(~value & (U64 if bits == 64 else U32)))
        a.var_off = t if bits == 64 else a.var_off.with_subreg(t)
    elif op in (JGT, JGE, JLT, JLE):
        if op in (JLT, JLE):
            refine(b, a, FLIP[op], bits)
            return
        strict = 1 if op == JGT else 0
        _set(a, bits, max(au, bu + strict), aU, as_, aS)
        _set(b, bits, bu, min(bU, aU - strict), bs, bS)
    elif op in (JSGT, JSGE, JSLT, JSLE):
        if op in (JSLT, JSLE):
            refine(b, a, FLIP[op], bits)
            return
        strict = 1 if op == JSGT else 0
        _set(a, bits, au, aU, max(as_, bs + strict), aS)
        _set(b, bits, bu, bU, bs, min(bS, aS - strict))
    for reg in (a, b):
        if reg.is_scalar:
            _clamp(reg)
            reg.sync_bounds()


def _clamp(reg: Reg) -> None:
    reg.umin, reg.umax = max(reg.umin, 0), min(reg.umax, U64)
    reg.smin, reg.smax = max(reg.smin, S64_MIN), min(reg.smax, S64_MAX)
    reg.u32min, reg.u32max = max(reg.u32min, 0), min(reg.u32max, U32)
    reg.s32min, reg.s32max = max(reg.s32min, S32_MIN), min(reg.s32max, S32_MAX)
