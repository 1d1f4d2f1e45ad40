"""Precision backtracking (the kernel's backtrack_insn), as far as the simulator models it.

When a conditional jump's outcome is decided by a known scalar, the kernel marks that scalar
"precise" in the states kept earlier on the path: it walks the instructions executed since
each kept state backwards, following where the value came from (`r1 = r2` hands the mark to
r2, `r1 += r2` adds r2, a fill from the stack hands it to the spilled slot, a constant ends
it), and marks the registers and spilled slots still wanted in each kept state. The marks show
in the log as a "P" before the value ("old state: R0=P0" of an infinite loop).

`backtrack` applies one instruction to the wanted sets (registers, stack slots of the frame);
it answers False where the simulator stops following (calls, returns, atomics, stack
accesses through other registers than r10), which marks fewer registers than the kernel would.
The checker's pruning does not use these marks (it uses the static `precision_needed`).
"""

from __future__ import annotations

from bpfsys.abi import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_EXIT,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_LDX,
    BPF_ST,
    BPF_STX,
    BPF_X,
)
from bpfsys.asm import Insn
from kernelsim.prog.verifier.state import FP
from kernelsim.prog.verifier.structure import LD_IMM64


def _slot(off: int) -> int:
    return (-off - 1) // 8


def backtrack(insn: Insn, regs: set[int], slots: set[int]) -> bool:
    """Move the wanted `regs` and `slots` from after `insn` to before it; False: give up."""
    cls, op = insn.code & 0x07, insn.code & 0xF0
    dst, src = insn.dst, insn.src
    if cls in (BPF_ALU, BPF_ALU64):
        if dst in regs:
            if op == 0xB0:  # mov: the value comes from src (or is a constant)
                regs.discard(dst)
                if insn.code & BPF_X:
                    regs.add(src)
            elif insn.code & BPF_X and op not in (0x80, 0xD0):
                regs.add(src)
        return True
    if cls == BPF_LDX:
        if dst in regs:
            regs.discard(dst)
            if src == FP:
                slots.add(_slot(insn.off))
        return True
    if cls in (BPF_ST, BPF_STX):
        if insn.code & 0xE0 == BPF_ATOMIC:
            return False
        if dst == FP and _slot(insn.off) in slots:
            slots.discard(_slot(insn.off))
            if cls == BPF_STX:
                regs.add(src)
        return True
    if cls == BPF_LD:
        regs.difference_update({dst} if insn.code == LD_IMM64 else range(6))
        return True
    if cls not in (BPF_JMP, BPF_JMP32) or op == BPF_JA:
        return True
    if op == BPF_CALL:
        if insn.src:
            return False  # a subprogram or kernel function: not followed
        regs.discard(0)
        return not regs & {1, 2, 3, 4, 5}
    if op == BPF_EXIT:
        return False
    if insn.code & BPF_X and (dst in regs or src in regs):
        regs.update((dst, src))
    return True
