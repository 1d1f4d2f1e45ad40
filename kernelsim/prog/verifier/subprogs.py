"""Subprograms: bpf-to-bpf calls as the verifier's static passes see them (6.18).

A program is cut into subprograms at the targets of its pseudo calls (`call local`, src_reg
BPF_PSEUDO_CALL) and pseudo function loads (ld_imm64 with src_reg BPF_PSEUDO_FUNC); the main
program is subprogram 0. The kernel's passes, in bpf_check's order:

1. `find_subprogs` (add_subprog_and_kfunc): only a bpf_capable loader may call or load other
   functions (EPERM); a target outside the program is "call to invalid destination"; at most
   BPF_MAX_SUBPROGS subprograms (E2BIG).
2. `check_subprogs`: no jump leaves its subprogram ("jump out of range from insn %d to %d")
   and each subprogram ends in exit or an unconditional jump ("last insn is not an exit or
   jmp"), so none falls through into the next. Notes LD_ABS and tail calls per subprogram.
3. `check_abnormal_return` (check_btf_info without BTF): LD_ABS and tail calls only in the main
   program, since a subprogram without BTF has no known arguments.
4. After the abstract interpreter accepted the program, `check_max_stack_depth` walks the call
   graph statically (every call site, reached or not): at most MAX_CALL_FRAMES frames ("the
   call stack of %d frames is too deep !") and at most MAX_BPF_STACK bytes of stack summed
   over the frames of a call chain ("combined stack size of %d calls is %d. Too large"). Each
   frame's depth is rounded up to 16 bytes, as with the JIT (the measured machine runs with
   bpf_jit_enable=1). Tracing program types run subprograms of 64 bytes of stack or more on a
   private stack (x86-64 JIT, since 6.13): those do not count towards the sum.

Messages are 6.18's whatever the profile.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Final

import attrs

from bpfsys.abi import (
    BPF_ABS,
    BPF_CALL,
    BPF_EXIT,
    BPF_IND,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_PSEUDO_KFUNC_CALL,
    BpfFunc,
    ProgType,
)
from bpfsys.asm import Insn
from bpfsys.kversion import KernelVersion, since
from kernelsim.prog.verifier.errors import VerifierError
from kernelsim.prog.verifier.state import MAX_BPF_STACK
from kernelsim.prog.verifier.structure import (
    CALL,
    EXIT,
    callee,
    is_pseudo_call,
    is_pseudo_func,
    jump_target,
)

BPF_MAX_SUBPROGS: Final = 256
MAX_CALL_FRAMES: Final = 8
PRIV_STACK_MIN_SIZE: Final = 64
STACK_ROUND: Final = 16
"""The JIT's rounding of a frame's stack (the interpreter's would be 32, and at least 32)."""
PRIVATE_STACK_TYPES: Final = frozenset(
    {ProgType.KPROBE, ProgType.TRACEPOINT, ProgType.PERF_EVENT, ProgType.RAW_TRACEPOINT}
)
"""Types whose subprograms may get a private stack (bpf_enable_priv_stack, adaptive mode)."""
PRIVATE_STACK_SINCE: Final = since("6.13")


@attrs.frozen
class Subprog:
    """Instructions [start, end) of one subprogram, and what check_subprogs noted in them."""

    start: int
    end: int
    has_ld_abs: bool = False
    has_tail_call: bool = False


def find_subprogs(insns: Sequence[Insn], bpf_capable: bool) -> list[int]:
    """add_subprog_and_kfunc: the sorted start of every subprogram (0 first)."""
    starts = {0}
    for i, insn in enumerate(insns):
        kfunc = insn.code == CALL and insn.src == BPF_PSEUDO_KFUNC_CALL
        if not (kfunc or is_pseudo_call(insn) or is_pseudo_func(insn)):
            continue
        if not bpf_capable:
            raise VerifierError(
                errno.EPERM,
                "loading/calling other bpf or kernel functions are allowed for CAP_BPF and "
                "CAP_SYS_ADMIN",
            )
        if kfunc:
            continue  # kernel functions are refused by the checker (not modelled)
        target = callee(i, insn)
        if not 0 <= target < len(insns):
            raise VerifierError(errno.EINVAL, "call to invalid destination")
        if target not in starts and len(starts) >= BPF_MAX_SUBPROGS:
            raise VerifierError(errno.E2BIG, "too many subprograms")
        starts.add(target)
    return sorted(starts)


def check_subprogs(insns: Sequence[Insn], starts: Sequence[int]) -> list[Subprog]:
    """check_subprogs: jumps stay inside their subprogram, which ends in exit or ja."""
    ends = [*starts[1:], len(insns)]
    subprogs: list[Subprog] = []
    for start, end in zip(starts, ends, strict=True):
        ld_abs = tail_call = False
        for i in range(start, end):
            insn = insns[i]
            if insn.code == CALL and insn.src == 0 and insn.imm == BpfFunc.TAIL_CALL:
                tail_call = True
            if insn.code & 0x07 == BPF_LD and insn.code & 0xE0 in (BPF_ABS, BPF_IND):
                ld_abs = True
            cls, op = insn.code & 0x07, insn.code & 0xF0
            if cls not in (BPF_JMP, BPF_JMP32) or op in (BPF_EXIT, BPF_CALL):
                continue
            target = jump_target(i, insn)
            if not start <= target < end:
                raise VerifierError(errno.EINVAL, f"jump out of range from insn {i} to {target}")
        if insns[end - 1].code not in (EXIT, BPF_JMP | BPF_JA, BPF_JMP32 | BPF_JA):
            raise VerifierError(errno.EINVAL, "last insn is not an exit or jmp")
        subprogs.append(Subprog(start, end, ld_abs, tail_call))
    return subprogs


def check_abnormal_return(subprogs: Sequence[Subprog]) -> None:
    """LD_ABS and tail calls are refused in subprograms without BTF."""
    for sub in subprogs[1:]:
        if sub.has_ld_abs:
            raise VerifierError(errno.EINVAL, "LD_ABS is not allowed in subprogs without BTF")
        if sub.has_tail_call:
            raise VerifierError(errno.EINVAL, "tail_call is not allowed in subprogs without BTF")


def subprog_at(subprogs: Sequence[Subprog], start: int) -> int:
    """The number of the subprogram starting at `start`."""
    return next(n for n, sub in enumerate(subprogs) if sub.start == start)


def check_max_stack_depth(
    insns: Sequence[Insn],
    subprogs: Sequence[Subprog],
    depths: Sequence[int],
    prog_type: ProgType,
    version: KernelVersion,
) -> None:
    """check_max_stack_depth for the main program's call graph (see the module docstring);
    `depths` is the stack depth the checker saw per subprogram."""
    private = (
        version >= PRIVATE_STACK_SINCE
        and prog_type in PRIVATE_STACK_TYPES
        and not any(s.has_tail_call for s in subprogs)
    )
    rounded = [-(-depth // STACK_ROUND) * STACK_ROUND for depth in depths]
    own_stack = [not (private and size >= PRIV_STACK_MIN_SIZE) for size in rounded]
    # depth-first over call sites: (subprogram, next instruction to scan) per frame
    frames: list[tuple[int, int]] = []
    idx, i, depth = 0, 0, 0
    while True:
        if own_stack[idx]:
            depth += rounded[idx]
            if depth > MAX_BPF_STACK:
                raise VerifierError(
                    errno.EACCES,
                    f"combined stack size of {len(frames) + 1} calls is {depth}. Too large",
                )
        called = _next_call(insns, i, subprogs[idx].end)
        while called is None:
            if not frames:
                return
            depth -= rounded[idx] if own_stack[idx] else 0
            idx, i = frames.pop()
            called = _next_call(insns, i, subprogs[idx].end)
        site, target = called
        frames.append((idx, site + 1))
        idx, i = subprog_at(subprogs, target), target
        if len(frames) >= MAX_CALL_FRAMES:
            raise VerifierError(
                errno.E2BIG, f"the call stack of {len(frames)} frames is too deep !"
            )


def _next_call(insns: Sequence[Insn], begin: int, end: int) -> tuple[int, int] | None:
    """The first pseudo call or function load in [begin, end): (its index, its target)."""
    for i in range(begin, end):
        if is_pseudo_call(insns[i]) or is_pseudo_func(insns[i]):
            return i, callee(i, insns[i])
    return None
