"""Instruction text as the kernel's verifier log prints it (kernel/bpf/disasm.c)."""

from __future__ import annotations

from typing import Final

from bpfsys.abi import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOV,
    BPF_NEG,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_ST,
    BPF_STX,
    BPF_TO_BE,
    BPF_XCHG,
    BpfFunc,
)
from bpfsys.asm import Insn

ALU_OP_TEXT: Final = {
    0x00: "+=", 0x10: "-=", 0x20: "*=", 0x30: "/=", 0x40: "|=", 0x50: "&=", 0x60: "<<=",
    0x70: ">>=", 0x90: "%=", 0xA0: "^=", 0xB0: "=", 0xC0: "s>>=",
}  # fmt: skip
JMP_OP_TEXT: Final = {
    0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&", 0x50: "!=", 0x60: "s>", 0x70: "s>=",
    0xA0: "<", 0xB0: "<=", 0xC0: "s<", 0xD0: "s<=",
}  # fmt: skip
ATOMIC_OP_TEXT: Final = {0x00: "add", 0x40: "or", 0x50: "and", 0xA0: "xor"}
SIZE_TEXT: Final = {0x00: "u32", 0x08: "u16", 0x10: "u8", 0x18: "u64"}
SIGNED_SIZE_TEXT: Final = {0x00: "s32", 0x08: "s16", 0x10: "s8"}


def helper_name(func_id: int) -> str:
    """The kernel's func_id_name: "bpf_map_lookup_elem" or "unknown"."""
    try:
        return f"bpf_{BpfFunc(func_id).name.lower()}"
    except ValueError:
        return "unknown"


def _off(off: int) -> str:
    return f"{off:+d}"


def _alu(insn: Insn) -> str:
    code, cls, op = insn.code, insn.code & 0x07, insn.code & 0xF0
    r = "w" if cls == BPF_ALU else "r"
    if op == BPF_END:
        if cls == BPF_ALU64:
            return f"({code:02x}) r{insn.dst} = bswap{insn.imm} r{insn.dst}"
        order = "be" if code & 0x08 == BPF_TO_BE else "le"
        return f"({code:02x}) r{insn.dst} = {order}{insn.imm} r{insn.dst}"
    if op == BPF_NEG:
        return f"({code:02x}) {r}{insn.dst} = -{r}{insn.dst}"
    if op == BPF_MOV and insn.off and code & 0x08:
        return f"({code:02x}) {r}{insn.dst} = (s{insn.off}){r}{insn.src}"
    text = ALU_OP_TEXT.get(op, "?")
    if op in (0x30, 0x90) and insn.off == 1:
        text = "s" + text
    if code & 0x08 == BPF_K:
        return f"({code:02x}) {r}{insn.dst} {text} {insn.imm}"
    return f"({code:02x}) {r}{insn.dst} {text} {r}{insn.src}"


def _atomic(insn: Insn) -> str:
    code, size = insn.code, insn.code & 0x18
    r = "r" if size == BPF_DW else "w"
    width = "64" if size == BPF_DW else ""
    mem = f"({SIZE_TEXT[size]} *)(r{insn.dst} {_off(insn.off)})"
    op = insn.imm & 0xF0
    if insn.imm in ATOMIC_OP_TEXT:
        return f"({code:02x}) lock *{mem} {ALU_OP_TEXT[op]} r{insn.src}"
    if insn.imm & ~0xF0 == BPF_FETCH and op in ATOMIC_OP_TEXT:
        return (
            f"({code:02x}) {r}{insn.src} = atomic{width}_fetch_{ATOMIC_OP_TEXT[op]}"
            f"({mem}, {r}{insn.src})"
        )
    if insn.imm == BPF_XCHG:
        return f"({code:02x}) {r}{insn.src} = atomic{width}_xchg({mem}, {r}{insn.src})"
    if insn.imm == BPF_CMPXCHG:
        return f"({code:02x}) {r}0 = atomic{width}_cmpxchg({mem}, {r}0, {r}{insn.src})"
    return f"BUG_{code:02x}"


def _jmp(insn: Insn) -> str:
    code, op = insn.code, insn.code & 0xF0
    if code == BPF_JMP | BPF_CALL:
        if insn.src == BPF_PSEUDO_CALL:
            return f"({code:02x}) call pc{_off(insn.imm)}"
        if insn.src == BPF_PSEUDO_KFUNC_CALL:
            return f"({code:02x}) call kernel-function"
        return f"({code:02x}) call {helper_name(insn.imm)}#{insn.imm}"
    if op == BPF_JA:
        if code & 0x07 == BPF_JMP32:
            return f"({code:02x}) gotol pc{_off(insn.imm)}"
        return f"({code:02x}) goto pc{_off(insn.off)}"
    if code == BPF_JMP | BPF_EXIT:
        return f"({code:02x}) exit"
    r = "w" if code & 0x07 == BPF_JMP32 else "r"
    text = JMP_OP_TEXT.get(op, "?")
    if code & 0x08 == BPF_K:
        return f"({code:02x}) if {r}{insn.dst} {text} {insn.imm & 0xFFFFFFFF:#x} goto pc{_off(insn.off)}"
    return f"({code:02x}) if {r}{insn.dst} {text} {r}{insn.src} goto pc{_off(insn.off)}"


def insn_text(insn: Insn, imm64: int | None = None) -> str:
    """One instruction's text (no index, no newline). `imm64` is the 64-bit immediate of an
    ld_imm64 as the verifier shows it (a map's address for map loads)."""
    code, cls, mode = insn.code, insn.code & 0x07, insn.code & 0xE0
    size = insn.code & 0x18
    if cls in (BPF_ALU, BPF_ALU64):
        return _alu(insn)
    if cls == BPF_STX and mode == BPF_MEM:
        mem = f"*({SIZE_TEXT[size]} *)(r{insn.dst} {_off(insn.off)})"
        return f"({code:02x}) {mem} = r{insn.src}"
    if cls == BPF_STX and mode == BPF_ATOMIC:
        return _atomic(insn)
    if cls == BPF_ST and mode == BPF_MEM:
        return f"({code:02x}) *({SIZE_TEXT[size]} *)(r{insn.dst} {_off(insn.off)}) = {insn.imm}"
    if cls == BPF_LDX and mode == BPF_MEM:
        return f"({code:02x}) r{insn.dst} = *({SIZE_TEXT[size]} *)(r{insn.src} {_off(insn.off)})"
    if cls == BPF_LDX and mode == BPF_MEMSX and size in SIGNED_SIZE_TEXT:
        text = SIGNED_SIZE_TEXT[size]
        return f"({code:02x}) r{insn.dst} = *({text} *)(r{insn.src} {_off(insn.off)})"
    if cls == BPF_LD and mode == 0x20:
        return f"({code:02x}) r0 = *({SIZE_TEXT[size]} *)skb[{insn.imm}]"
    if cls == BPF_LD and mode == 0x40:
        return f"({code:02x}) r0 = *({SIZE_TEXT[size]} *)skb[r{insn.src} + {insn.imm}]"
    if cls == BPF_LD and mode == 0 and size == BPF_DW:
        value = (insn.imm & 0xFFFFFFFF) if imm64 is None else imm64
        return f"({code:02x}) r{insn.dst} = {value:#x}"
    if cls in (BPF_JMP, BPF_JMP32):
        return _jmp(insn)
    return f"({code:02x}) BUG_{code:02x}"
