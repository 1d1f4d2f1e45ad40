"""Tristate numbers ("tnums"), the verifier's bit-level knowledge of a 64-bit value.

A tnum is (value, mask): a bit set in `mask` is unknown; a bit clear in `mask` is known and
equal to that bit of `value` (value & mask is always 0). The operations are those of the
kernel's kernel/bpf/tnum.c; every value is an unsigned 64-bit integer.
"""

from __future__ import annotations

from typing import Final, NamedTuple

U64: Final = (1 << 64) - 1
U32: Final = (1 << 32) - 1


class Tnum(NamedTuple):
    """(value, mask); a tuple, so comparing and copying tnums is cheap."""

    value: int
    mask: int

    @classmethod
    def const(cls, value: int) -> Tnum:
        return cls(value & U64, 0)

    @classmethod
    def unknown(cls) -> Tnum:
        return cls(0, U64)

    @classmethod
    def range(cls, lo: int, hi: int) -> Tnum:
        """The smallest tnum holding every value of [lo, hi] (unsigned)."""
        chi = lo ^ hi
        bits = chi.bit_length()
        if bits > 63:
            return cls.unknown()
        delta = (1 << bits) - 1
        return cls(lo & ~delta & U64, delta)

    def is_const(self) -> bool:
        return self.mask == 0

    def is_unknown(self) -> bool:
        return self.mask == U64

    def add(self, other: Tnum) -> Tnum:
        sm = (self.mask + other.mask) & U64
        sv = (self.value + other.value) & U64
        sigma = (sm + sv) & U64
        chi = sigma ^ sv
        mu = chi | self.mask | other.mask
        return Tnum(sv & ~mu & U64, mu & U64)

    def sub(self, other: Tnum) -> Tnum:
        dv = (self.value - other.value) & U64
        alpha = (dv + self.mask) & U64
        beta = (dv - other.mask) & U64
        chi = alpha ^ beta
        mu = chi | self.mask | other.mask
        return Tnum(dv & ~mu & U64, mu & U64)

    def neg(self) -> Tnum:
        return Tnum.const(0).sub(self)

    def and_(self, other: Tnum) -> Tnum:
        alpha = self.value | self.mask
        beta = other.value | other.mask
        v = self.value & other.value
        return Tnum(v, alpha & beta & ~v & U64)

    def or_(self, other: Tnum) -> Tnum:
        v = self.value | other.value
        mu = self.mask | other.mask
        return Tnum(v, mu & ~v & U64)

    def xor(self, other: Tnum) -> Tnum:
        v = self.value ^ other.value
        mu = self.mask | other.mask
        return Tnum(v & ~mu & U64, mu)

    def mul(self, other: Tnum) -> Tnum:
        a, b = self, other
        acc_v = (a.value * b.value) & U64
        acc_m = Tnum(0, 0)
        while a.value or a.mask:
            if a.value & 1:
                acc_m = acc_m.add(Tnum(0, b.mask))
            elif a.mask & 1:
                acc_m = acc_m.add(Tnum(0, b.value | b.mask))
            a = a.rshift(1)
            b = b.lshift(1)
        return Tnum(acc_v, 0).add(acc_m)

    def lshift(self, shift: int) -> Tnum:
        return Tnum((self.value << shift) & U64, (self.mask << shift) & U64)

    def rshift(self, shift: int) -> Tnum:
        return Tnum(self.value >> shift, self.mask >> shift)

    def arshift(self, shift: int, bits: int) -> Tnum:
        """Arithmetic right shift of the low `bits` (32 or 64) bits."""
        width = (1 << bits) - 1

        def sar(x: int) -> int:
            x &= width
            if x >> (bits - 1):
                x -= 1 << bits
            return (x >> shift) & width

        return Tnum(sar(self.value), sar(self.mask))

    def intersect(self, other: Tnum) -> Tnum:
        v = self.value | other.value
        mu = self.mask & other.mask
        return Tnum(v & ~mu & U64, mu)

    def cast(self, size: int) -> Tnum:
        """Keep the low `size` bytes."""
        keep = (1 << (size * 8)) - 1
        return Tnum(self.value & keep, self.mask & keep)

    def subreg(self) -> Tnum:
        return self.cast(4)

    def clear_subreg(self) -> Tnum:
        return self.rshift(32).lshift(32)

    def with_subreg(self, sub: Tnum) -> Tnum:
        return self.clear_subreg().or_(sub.subreg())

    def is_aligned(self, size: int) -> bool:
        return size == 0 or not ((self.value | self.mask) & (size - 1))

    def __str__(self) -> str:
        return f"({self.value:#x}; {self.mask:#x})"
