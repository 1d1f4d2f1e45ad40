"""The kernel's Jenkins hash (include/linux/jhash.h): jhash over bytes, jhash2 over u32 words.

Bit-exact with the kernel on little-endian machines, so a simulated bloom filter created with
BPF_F_ZERO_SEED sets the same bits (and gives the same false positives) as the live one, and a
simulated hash map puts its keys in the same buckets. Every hash map insert hashes its key, so the
rounds are written out: 32-bit words are Python ints kept below 2**32 by masking once per step
(the bits a rotation or a subtraction carries above bit 31 never reach the low 32 bits), and
`jhash2_of_size` / `jhash_of_size` give a hash function for data of one fixed size (a map's keys)
with the start value and the word unpacking worked out once.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache
from typing import Final

JHASH_INITVAL: Final = 0xDEADBEEF
_M: Final = 0xFFFFFFFF


@cache
def _unpack_words(count: int) -> Callable[[bytes], tuple[int, ...]]:
    """Unpacks `count` little-endian u32 words."""
    return struct.Struct(f"<{count}I").unpack


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """__jhash_mix."""
    a = ((a - c) ^ ((c << 4) | (c >> 28))) & _M
    c = (c + b) & _M
    b = ((b - a) ^ ((a << 6) | (a >> 26))) & _M
    a = (a + c) & _M
    c = ((c - b) ^ ((b << 8) | (b >> 24))) & _M
    b = (b + a) & _M
    a = ((a - c) ^ ((c << 16) | (c >> 16))) & _M
    c = (c + b) & _M
    b = ((b - a) ^ ((a << 19) | (a >> 13))) & _M
    a = (a + c) & _M
    c = ((c - b) ^ ((b << 4) | (b >> 28))) & _M
    b = (b + a) & _M
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    """__jhash_final: the final c."""
    c = ((c ^ b) - ((b << 14) | (b >> 18))) & _M
    a = ((a ^ c) - ((c << 11) | (c >> 21))) & _M
    b = ((b ^ a) - ((a << 25) | (a >> 7))) & _M
    c = ((c ^ b) - ((b << 16) | (b >> 16))) & _M
    a = ((a ^ c) - ((c << 4) | (c >> 28))) & _M
    b = ((b ^ a) - ((a << 14) | (a >> 18))) & _M
    return ((c ^ b) - ((b << 24) | (b >> 8))) & _M


def _hash_words(words: tuple[int, ...], start: int) -> int:
    """The rounds over `words` (three at a time, the last one to three through the final mix,
    missing words 0) from a = b = c = `start`."""
    a = b = c = start
    count = len(words)
    pos = 0
    while count - pos > 3:
        a, b, c = _mix((a + words[pos]) & _M, (b + words[pos + 1]) & _M, (c + words[pos + 2]) & _M)
        pos += 3
    rest = count - pos
    if rest == 0:
        return c
    a += words[pos]
    if rest > 1:
        b += words[pos + 1]
    if rest > 2:
        c += words[pos + 2]
    return _final(a & _M, b & _M, c & _M)


def jhash2(data: bytes, initval: int) -> int:
    """jhash2 over the little-endian u32 words of `data` (len(data) a multiple of 4)."""
    count = len(data) >> 2
    return _hash_words(
        _unpack_words(count)(data[: count << 2]), (JHASH_INITVAL + (count << 2) + initval) & _M
    )


def jhash(data: bytes, initval: int) -> int:
    """jhash over the bytes of `data`."""
    length = len(data)
    start = (JHASH_INITVAL + length + initval) & _M
    if not length:
        return start
    # Whole 12-byte rounds while more than 12 bytes remain, then the 1..12-byte tail padded with
    # zeros to three words: the same words as padding the data to whole rounds.
    rounds = (length - 1) // 12 + 1
    padded = data + bytes(rounds * 12 - length)
    return _hash_words(_unpack_words(rounds * 3)(padded), start)


def jhash2_of_size(size: int, initval: int) -> Callable[[bytes], int]:
    """jhash2 with seed `initval` for data of `size` bytes (a multiple of 4)."""
    count = size >> 2
    start = (JHASH_INITVAL + (count << 2) + initval) & _M
    if count == 0:
        return lambda data: start
    unpack = _unpack_words(count)
    if count > 3:
        return lambda data: _hash_words(unpack(data), start)
    pad = (0,) * (3 - count)

    def short(data: bytes) -> int:
        a, b, c = unpack(data) + pad
        return _final((start + a) & _M, (start + b) & _M, (start + c) & _M)

    return short


def jhash_of_size(size: int, initval: int) -> Callable[[bytes], int]:
    """jhash with seed `initval` for data of `size` bytes."""
    start = (JHASH_INITVAL + size + initval) & _M
    if size == 0:
        return lambda data: start
    rounds = (size - 1) // 12 + 1
    unpack = _unpack_words(rounds * 3)
    pad = bytes(rounds * 12 - size)
    if rounds > 1:
        return lambda data: _hash_words(unpack(data + pad), start)

    def short(data: bytes) -> int:
        a, b, c = unpack(data + pad)
        return _final((start + a) & _M, (start + b) & _M, (start + c) & _M)

    return short
