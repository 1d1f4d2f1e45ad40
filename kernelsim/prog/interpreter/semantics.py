"""The meaning of each ALU, jump and atomic operation, as the kernel's interpreter computes it.

Pure functions on unsigned 64-bit integers, used by the reference interpreter and (for the
rarer operations) by compiled programs. The kernel's rules that differ from C or Python:
- division by zero gives 0; modulo by zero leaves the dividend (64-bit) or its lower 32 bits
  zero-extended (32-bit), as the verifier's patched-in checks do;
- signed division truncates toward zero; INT_MIN / -1 is INT_MIN and INT_MIN % -1 is 0;
- shift amounts are masked to 63 (64-bit) or 31 (32-bit), as the interpreter does;
- every 32-bit operation zero-extends its result into the 64-bit register.
"""

from __future__ import annotations

from typing import Final

from bpfsys.abi import (
    BPF_ADD,
    BPF_AND,
    BPF_ARSH,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_LSH,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_RSH,
    BPF_SUB,
    BPF_XCHG,
    BPF_XOR,
)

MASK64: Final = (1 << 64) - 1
MASK32: Final = (1 << 32) - 1
SIGN64: Final = 1 << 63
SIGN32: Final = 1 << 31


def to_signed(value: int, bits: int) -> int:
    """The low `bits` of `value` as a two's complement number."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def sign_extend(value: int, bits: int) -> int:
    """The low `bits` of `value` sign-extended to an unsigned 64-bit value."""
    return to_signed(value, bits) & MASK64


def div_toward_zero(a: int, b: int) -> int:
    """C's signed division (b != 0)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def mod_toward_zero(a: int, b: int) -> int:
    """C's signed remainder (b != 0): takes the sign of the dividend."""
    return a - b * div_toward_zero(a, b)


def sdiv(dst: int, src: int, bits: int) -> int:
    """Signed division of `bits`-wide operands; by zero gives 0."""
    mask = (1 << bits) - 1
    if src & mask == 0:
        return 0
    return div_toward_zero(to_signed(dst, bits), to_signed(src, bits)) & mask


def smod(dst: int, src: int, bits: int) -> int:
    """Signed remainder; by zero leaves the dividend (its low `bits`)."""
    mask = (1 << bits) - 1
    if src & mask == 0:
        return dst & mask
    return mod_toward_zero(to_signed(dst, bits), to_signed(src, bits)) & mask


def byte_swap(value: int, bits: int) -> int:
    """Reverse the low `bits` / 8 bytes of `value` (the rest is dropped)."""
    size = bits // 8
    return int.from_bytes((value & ((1 << bits) - 1)).to_bytes(size, "little"), "big")


def alu(op: int, off: int, dst: int, src: int, bits: int) -> int:
    """`dst op src` for a `bits`-wide (64 or 32) ALU instruction; operands unsigned 64-bit."""
    mask = (1 << bits) - 1
    shift_mask = bits - 1
    d, s = dst & mask, src & mask
    if op == BPF_ADD:
        return (d + s) & mask
    if op == BPF_SUB:
        return (d - s) & mask
    if op == BPF_MUL:
        return (d * s) & mask
    if op == BPF_DIV:
        if off:
            return sdiv(d, s, bits)
        return d // s if s else 0
    if op == BPF_MOD:
        if off:
            return smod(d, s, bits)
        return d % s if s else d
    if op == BPF_OR:
        return d | s
    if op == BPF_AND:
        return d & s
    if op == BPF_XOR:
        return d ^ s
    if op == BPF_LSH:
        return (d << (src & shift_mask)) & mask
    if op == BPF_RSH:
        return d >> (src & shift_mask)
    if op == BPF_ARSH:
        return (to_signed(d, bits) >> (src & shift_mask)) & mask
    if op == BPF_NEG:
        return -d & mask
    if op == BPF_MOV:
        return to_signed(src, off) & mask if off else s
    raise ValueError(f"no ALU operation {op:#x}")


def jump_taken(op: int, dst: int, src: int, bits: int) -> bool:
    """Whether a conditional jump `op` on `bits`-wide operands is taken (JA always is)."""
    mask = (1 << bits) - 1
    a, b = dst & mask, src & mask
    if op == BPF_JA:
        return True
    if op == BPF_JEQ:
        return a == b
    if op == BPF_JNE:
        return a != b
    if op == BPF_JGT:
        return a > b
    if op == BPF_JGE:
        return a >= b
    if op == BPF_JLT:
        return a < b
    if op == BPF_JLE:
        return a <= b
    if op == BPF_JSET:
        return bool(a & b)
    sa, sb = to_signed(a, bits), to_signed(b, bits)
    if op == BPF_JSGT:
        return sa > sb
    if op == BPF_JSGE:
        return sa >= sb
    if op == BPF_JSLT:
        return sa < sb
    if op == BPF_JSLE:
        return sa <= sb
    raise ValueError(f"no jump operation {op:#x}")


def atomic_result(imm: int, old: int, src: int, r0: int, bits: int) -> int:
    """The value an atomic operation `imm` leaves in memory that held `old`."""
    mask = (1 << bits) - 1
    if imm == BPF_XCHG:
        return src & mask
    if imm == BPF_CMPXCHG:
        return src & mask if old == r0 & mask else old
    return alu(imm & 0xF0, 0, old, src, bits)
