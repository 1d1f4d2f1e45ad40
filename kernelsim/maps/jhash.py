"""The kernel's Jenkins hash (include/linux/jhash.h): jhash over bytes, jhash2 over u32 words.

Bit-exact with the kernel on little-endian machines, so a simulated bloom filter created with
BPF_F_ZERO_SEED sets the same bits (and gives the same false positives) as the live one.
"""

from __future__ import annotations

from typing import Final

JHASH_INITVAL: Final = 0xDEADBEEF
_M: Final = 0xFFFFFFFF


def _rol(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = ((a - c) & _M) ^ _rol(c, 4)
    c = (c + b) & _M
    b = ((b - a) & _M) ^ _rol(a, 6)
    a = (a + c) & _M
    c = ((c - b) & _M) ^ _rol(b, 8)
    b = (b + a) & _M
    a = ((a - c) & _M) ^ _rol(c, 16)
    c = (c + b) & _M
    b = ((b - a) & _M) ^ _rol(a, 19)
    a = (a + c) & _M
    c = ((c - b) & _M) ^ _rol(b, 4)
    b = (b + a) & _M
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c = ((c ^ b) - _rol(b, 14)) & _M
    a = ((a ^ c) - _rol(c, 11)) & _M
    b = ((b ^ a) - _rol(a, 25)) & _M
    c = ((c ^ b) - _rol(b, 16)) & _M
    a = ((a ^ c) - _rol(c, 4)) & _M
    b = ((b ^ a) - _rol(a, 14)) & _M
    c = ((c ^ b) - _rol(b, 24)) & _M
    return c


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data) - 3, 4)]


def jhash2(data: bytes, initval: int) -> int:
    """jhash2 over the little-endian u32 words of `data` (len(data) a multiple of 4)."""
    words = _words(data)
    a = b = c = (JHASH_INITVAL + (len(words) << 2) + initval) & _M
    while len(words) > 3:
        a, b, c = _mix((a + words[0]) & _M, (b + words[1]) & _M, (c + words[2]) & _M)
        words = words[3:]
    if not words:
        return c
    tail = words + [0] * (3 - len(words))
    return _final((a + tail[0]) & _M, (b + tail[1]) & _M, (c + tail[2]) & _M)


def jhash(data: bytes, initval: int) -> int:
    """jhash over the bytes of `data`."""
    length = len(data)
    a = b = c = (JHASH_INITVAL + length + initval) & _M
    pos = 0
    while length - pos > 12:
        w = _words(data[pos : pos + 12])
        a, b, c = _mix((a + w[0]) & _M, (b + w[1]) & _M, (c + w[2]) & _M)
        pos += 12
    rest = data[pos:]
    if not rest:
        return c
    tail = rest + bytes(12 - len(rest))
    w = _words(tail)
    return _final((a + w[0]) & _M, (b + w[1]) & _M, (c + w[2]) & _M)
