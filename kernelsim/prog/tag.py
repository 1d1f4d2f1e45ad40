"""The program tag, as the kernel's bpf_prog_calc_tag computes it.

The digest is taken over the instructions as loaded, with the fd (imm) of each ld_imm64 that
loads a map (BPF_PSEUDO_MAP_FD) or a map value (BPF_PSEUDO_MAP_VALUE) zeroed, and the imm of
its second half zeroed too (the value offset), since fds differ between loads. The tag is the
first 8 bytes of the digest: SHA-1 before 6.18, SHA-256 since (measured on 6.18).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from bpfsys.abi import BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_TAG_SIZE

_SLOT: Final = struct.Struct("<BBhi")
_LD_IMM64: Final = 0x18


def tag_input(insns: bytes) -> bytes:
    """The bytes the kernel hashes: `insns` with map fds (and value offsets) zeroed."""
    out = bytearray()
    was_ld_map = False
    for at in range(0, len(insns) - len(insns) % 8, 8):
        code, regs, off, imm = _SLOT.unpack_from(insns, at)
        src = regs >> 4
        if (
            not was_ld_map
            and code == _LD_IMM64
            and src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE)
        ):
            was_ld_map, imm = True, 0
        elif was_ld_map and code == 0 and regs == 0 and off == 0:
            was_ld_map, imm = False, 0
        else:
            was_ld_map = False
        out += _SLOT.pack(code, regs, off, imm)
    return bytes(out)


def prog_tag(insns: bytes, sha256: bool) -> bytes:
    """The 8-byte tag of the program `insns` (SHA-256 when `sha256`, else SHA-1)."""
    digest = (hashlib.sha256 if sha256 else hashlib.sha1)(tag_input(insns)).digest()
    return digest[:BPF_TAG_SIZE]
