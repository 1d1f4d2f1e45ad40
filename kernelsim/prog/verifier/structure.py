"""The verifier's passes before the abstract interpreter, in the kernel's order.

(Subprogram discovery and boundaries come first: module `subprogs`.)

1. `resolve_ld_imm64` (resolve_pseudo_ldimm64): LDX reserved fields, well-formed ld_imm64 pairs,
   map fds (EBADF for no fd, EINVAL for an fd that is not a map), the map types a sleepable
   program may use, map value pointers, unknown opcodes ("unknown opcode %02x"); function
   loads (BPF_PSEUDO_FUNC) pass. Takes a reference on each map (the caller releases them).
2. `check_cfg`: depth-first walk from insn 0, into callees at pseudo calls and function loads
   ("back-edge from insn %d to %d" unless the loader is bpf_capable, "unreachable insn %d",
   "jump into the middle of ldimm64 insn %d"); marks prune points; `liveness` computes the
   registers live before each instruction (within each function: a call defines r0-r5), and
   `precision_needed` the registers whose exact value may still matter (for pruning).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from bpfsys.abi import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_DW,
    BPF_EXIT,
    BPF_FETCH,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE,
    BPF_PSEUDO_MAP_VALUE,
    BPF_ST,
    BPF_STX,
    BPF_X,
    BpfFunc,
    MapType,
)
from bpfsys.asm import Insn
from bpfsys.kversion import KernelVersion, since
from kernelsim.maps.base import BpfMap
from kernelsim.prog.verifier.errors import VerifierError

LD_IMM64: Final = BPF_LD | BPF_DW  # 0x18
CALL: Final = BPF_JMP | BPF_CALL
EXIT: Final = BPF_JMP | BPF_EXIT


def _opcodes() -> dict[int, str]:
    """Valid opcodes (the kernel's bpf_opcode_in_insntable) with the version that added each."""
    table: dict[int, str] = {}
    for cls in (BPF_ALU, BPF_ALU64):
        for op in (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xA0, 0xB0, 0xC0):
            table[cls | op] = table[cls | op | BPF_X] = "3.18"
        table[cls | 0x80] = "3.18"
    table[BPF_ALU | 0xD0] = table[BPF_ALU | 0xD8] = "3.18"
    table[BPF_ALU64 | 0xD0] = "6.6"
    for cls, added in ((BPF_JMP, "3.18"), (BPF_JMP32, "5.1")):
        for op in (0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0):
            later = "4.14" if op >= 0xA0 and cls == BPF_JMP else added
            table[cls | op] = table[cls | op | BPF_X] = later
    table[BPF_JMP | BPF_JA] = table[CALL] = table[EXIT] = "3.18"
    table[BPF_JMP32 | BPF_JA] = "6.6"
    table[LD_IMM64] = "3.18"
    for size in (0x00, 0x08, 0x10):
        table[BPF_LD | 0x20 | size] = table[BPF_LD | 0x40 | size] = "3.18"
        table[BPF_LDX | BPF_MEMSX | size] = "6.6"
    for size in (0x00, 0x08, 0x10, 0x18):
        for cls in (BPF_LDX, BPF_ST, BPF_STX):
            table[cls | BPF_MEM | size] = "3.18"
    table[BPF_STX | BPF_ATOMIC | 0x00] = table[BPF_STX | BPF_ATOMIC | BPF_DW] = "4.1"
    return table


OPCODES: Final = _opcodes()


def is_cond_jump(insn: Insn) -> bool:
    cls, op = insn.code & 0x07, insn.code & 0xF0
    return cls in (BPF_JMP, BPF_JMP32) and op not in (BPF_JA, BPF_CALL, BPF_EXIT)


def jump_target(index: int, insn: Insn) -> int:
    """Where a jump at `index` goes (gotol takes its offset from imm)."""
    if insn.code == BPF_JMP32 | BPF_JA:
        return index + insn.imm + 1
    return index + insn.off + 1


def is_pseudo_call(insn: Insn) -> bool:
    """A bpf-to-bpf call (`call local`)."""
    return insn.code == CALL and insn.src == BPF_PSEUDO_CALL


def is_pseudo_func(insn: Insn) -> bool:
    """An ld_imm64 of a function's address (a callback for bpf_loop and friends)."""
    return insn.code == LD_IMM64 and insn.src == BPF_PSEUDO_FUNC


def callee(index: int, insn: Insn) -> int:
    """The first instruction of the function a pseudo call or function load at `index` names."""
    return index + insn.imm + 1


@attrs.frozen
class MapRef:
    """An ld_imm64 that loads a map (value_off None) or a pointer into its value."""

    map: BpfMap
    value_off: int | None


MapLookup = Callable[[int], BpfMap]
"""fd -> map; raises VerifierError(EBADF/EINVAL) with the kernel's message."""

SLEEPABLE_MAP_TYPES: Final = frozenset(
    {MapType.HASH, MapType.ARRAY, MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_HASH,
     MapType.LRU_PERCPU_HASH, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.RINGBUF,
     MapType.USER_RINGBUF, MapType.INODE_STORAGE, MapType.SK_STORAGE, MapType.TASK_STORAGE,
     MapType.CGRP_STORAGE, MapType.QUEUE, MapType.STACK, MapType.ARENA}
)  # fmt: skip
"""The map types a sleepable program may use (check_map_prog_compatibility, 6.18)."""


def resolve_ld_imm64(
    insns: Sequence[Insn],
    version: KernelVersion,
    lookup_fd: MapLookup,
    fd_array: Callable[[int], int] | None,
    used_maps: list[BpfMap],
    sleepable: bool = False,
) -> dict[int, MapRef]:
    """resolve_pseudo_ldimm64: validate and resolve map loads; `used_maps` gets each map once
    (with a reference taken)."""
    refs: dict[int, MapRef] = {}
    i = 0
    while i < len(insns):
        insn = insns[i]
        if insn.code & 0x07 == BPF_LDX and (
            insn.code & 0xE0 not in (BPF_MEM, BPF_MEMSX) or insn.imm != 0
        ):
            raise VerifierError(errno.EINVAL, "BPF_LDX uses reserved fields")
        if insn.code == LD_IMM64:
            nxt = insns[i + 1] if i + 1 < len(insns) else None
            if nxt is None or nxt.code or nxt.dst or nxt.src or nxt.off:
                raise VerifierError(errno.EINVAL, "invalid bpf_ld_imm64 insn")
            if insn.src and insn.src != BPF_PSEUDO_FUNC:
                refs[i] = _resolve_map(insn, nxt, lookup_fd, fd_array, used_maps, sleepable)
            i += 2
            continue
        added = OPCODES.get(insn.code)
        if added is None or since(added) > version:
            raise VerifierError(errno.EINVAL, f"unknown opcode {insn.code:02x}")
        i += 1
    return refs


def _resolve_map(
    insn: Insn,
    nxt: Insn,
    lookup_fd: MapLookup,
    fd_array: Callable[[int], int] | None,
    used_maps: list[BpfMap],
    sleepable: bool,
) -> MapRef:
    src = insn.src
    if src not in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_MAP_IDX,
                   BPF_PSEUDO_MAP_IDX_VALUE):  # fmt: skip
        raise VerifierError(errno.EINVAL, "unrecognized bpf_ld_imm64 insn")
    if src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX) and nxt.imm != 0:
        raise VerifierError(errno.EINVAL, "unrecognized bpf_ld_imm64 insn")
    if src in (BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE):
        if fd_array is None:
            raise VerifierError(errno.EPROTO, "fd_idx without fd_array is invalid")
        fd = fd_array(insn.imm)
    else:
        fd = insn.imm
    bpf_map = lookup_fd(fd)
    if not any(m is bpf_map for m in used_maps):
        if sleepable and bpf_map.map_type not in SLEEPABLE_MAP_TYPES:
            raise VerifierError(
                errno.EINVAL,
                "Sleepable programs can only use array, hash, ringbuf and local storage maps",
            )
        bpf_map.hold()
        used_maps.append(bpf_map)
    if src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX):
        return MapRef(bpf_map, None)
    off = nxt.imm & 0xFFFFFFFF
    if off >= 1 << 29:
        raise VerifierError(errno.EINVAL, f"direct value offset of {off} is not allowed")
    if bpf_map.map_type not in (MapType.ARRAY,):
        raise VerifierError(errno.EINVAL, "no direct value access support for this map type")
    if bpf_map.max_entries != 1 or off >= bpf_map.value_size:
        err = errno.EOPNOTSUPP if bpf_map.max_entries != 1 else errno.EINVAL
        raise VerifierError(
            err,
            f"invalid access to map value pointer, value_size={bpf_map.value_size} off={off}",
        )
    return MapRef(bpf_map, off)


@attrs.frozen
class Cfg:
    """What check_cfg learned: prune points, and where a state must be kept (before helpers
    that call a callback, so the verifier can tell when their iterations converge)."""

    prune_points: frozenset[int]
    force_checkpoints: frozenset[int]


CALLBACK_HELPERS: Final = frozenset(
    {BpfFunc.LOOP, BpfFunc.FOR_EACH_MAP_ELEM, BpfFunc.FIND_VMA, BpfFunc.USER_RINGBUF_DRAIN}
)
"""Helpers that call a callback synchronously (is_sync_callback_calling_function)."""


def _successors(i: int, insn: Insn) -> list[tuple[int, bool]]:
    """(successor, is_branch_edge) in the order check_cfg visits them; a pseudo call or
    function load also leads into its callee."""
    cls, op = insn.code & 0x07, insn.code & 0xF0
    if insn.code == LD_IMM64:
        return (
            [(i + 2, False), (callee(i, insn), True)] if is_pseudo_func(insn) else [(i + 2, False)]
        )
    if cls not in (BPF_JMP, BPF_JMP32):
        return [(i + 1, False)]
    if op == BPF_EXIT:
        return []
    if op == BPF_CALL:
        return (
            [(i + 1, False), (callee(i, insn), True)] if is_pseudo_call(insn) else [(i + 1, False)]
        )
    if op == BPF_JA:
        return [(jump_target(i, insn), False)]
    return [(i + 1, False), (jump_target(i, insn), True)]


def _within(i: int, insn: Insn) -> list[int]:
    """Successors inside the same function (liveness does not follow calls)."""
    edges = _successors(i, insn)
    if is_pseudo_call(insn) or is_pseudo_func(insn):
        edges = edges[:1]
    return [s for s, _ in edges]


def check_cfg(insns: Sequence[Insn], allow_loops: bool) -> Cfg:
    """The kernel's check_cfg (see the module docstring)."""
    count = len(insns)
    discovered, explored = 1, 2
    state = [0] * count
    prune: set[int] = set()
    force: set[int] = set()
    for i, insn in enumerate(insns):
        if is_cond_jump(insn):
            prune.add(i)
        elif insn.code == CALL:
            prune.add(i + 1)
            if is_pseudo_call(insn):
                prune.add(i)
            elif insn.src == 0 and insn.imm in CALLBACK_HELPERS:
                prune.add(i)
                force.add(i)
        elif is_pseudo_func(insn):
            prune.update((i, i + 2))
    stack = [0]
    state[0] = discovered
    next_edge = [0] * count
    while stack:
        t = stack[-1]
        edges = _successors(t, insns[t])
        pushed = False
        while next_edge[t] < len(edges):
            w, branch = edges[next_edge[t]]
            next_edge[t] += 1
            if not 0 <= w < count:
                raise VerifierError(errno.EINVAL, f"jump out of range from insn {t} to {w}")
            if branch or insns[t].code & 0xF7 == BPF_JMP | BPF_JA:
                prune.add(w)
            if state[w] == 0:
                state[w] = discovered
                stack.append(w)
                pushed = True
                break
            if state[w] == discovered and not allow_loops:
                raise VerifierError(errno.EINVAL, f"back-edge from insn {t} to {w}")
        if not pushed:
            state[t] = explored
            stack.pop()
    i = 0
    while i < count:
        if state[i] != explored:
            raise VerifierError(errno.EINVAL, f"unreachable insn {i}")
        if insns[i].code == LD_IMM64:
            if i + 1 < count and state[i + 1]:
                raise VerifierError(errno.EINVAL, f"jump into the middle of ldimm64 insn {i}")
            i += 1
        i += 1
    return Cfg(frozenset(prune), frozenset(force))


def _uses_defs(insn: Insn, call_args: Callable[[int], int]) -> tuple[int, int]:
    """Register bitmasks (used, defined) of one instruction, for liveness."""
    cls, op, mode = insn.code & 0x07, insn.code & 0xF0, insn.code & 0xE0
    dst, src = 1 << insn.dst, 1 << insn.src
    if cls in (BPF_ALU, BPF_ALU64):
        used = 0 if op == 0xB0 else dst
        if insn.code & BPF_X and op not in (0x80, 0xD0):
            used |= src
        return used, dst
    if cls == BPF_LDX:
        return src, dst
    if cls == BPF_ST:
        return dst, 0
    if cls == BPF_STX:
        if mode == BPF_ATOMIC and insn.imm & BPF_FETCH:
            fetched = 1 if insn.imm == 0xF1 else src
            return dst | src | (1 if insn.imm == 0xF1 else 0), fetched
        return dst | src, 0
    if cls == BPF_LD:
        if insn.code == LD_IMM64:
            return 0, dst
        return (1 << 6) | (src if mode == 0x40 else 0), 0x3F
    if op == BPF_CALL:
        if insn.src == BPF_PSEUDO_CALL:
            return 0x3E, 0x3F
        return (1 << (call_args(insn.imm) + 1)) - 2, 0x3F
    if op == BPF_EXIT:
        return 1, 0
    if op == BPF_JA:
        return 0, 0
    return dst | (src if insn.code & BPF_X else 0), 0


def _backward(insns: Sequence[Insn], transfer: Callable[[int, int], int]) -> list[int]:
    """A backward dataflow over each function's instructions to a fixpoint: the register set
    before instruction i is transfer(i, union of the sets before its successors)."""
    count = len(insns)
    sets = [0] * count
    succ = [[s for s in _within(i, insn) if s < count] for i, insn in enumerate(insns)]
    changed = True
    while changed:
        changed = False
        for i in range(count - 1, -1, -1):
            out = 0
            for s in succ[i]:
                out |= sets[s]
            new = transfer(i, out)
            if new != sets[i]:
                sets[i] = new
                changed = True
    return sets


def liveness(insns: Sequence[Insn], call_args: Callable[[int], int]) -> list[int]:
    """Registers (bitmask) live before each instruction; r10 is always live."""
    info = [_uses_defs(insn, call_args) for insn in insns]

    def transfer(i: int, out: int) -> int:
        used, defined = info[i]
        return used | (out & ~defined) | (1 << 10)

    return _backward(insns, transfer)


def precision_needed(
    insns: Sequence[Insn], call_args: Callable[[int], int], exit_needs_r0: Callable[[int], bool]
) -> list[int]:
    """Registers (bitmask) whose exact scalar value may matter after each instruction: those
    whose value can flow into a conditional jump, a register ALU operand (pointer arithmetic),
    a helper or subprogram argument, a store, or a checked return value (`exit_needs_r0`).
    A superset of what the kernel's precision backtracking marks, so a scalar outside it may be
    ignored when pruning, as the kernel ignores imprecise scalars."""

    def transfer(i: int, out: int) -> int:
        insn = insns[i]
        cls, op = insn.code & 0x07, insn.code & 0xF0
        dst, src = 1 << insn.dst, 1 << insn.src
        use_x = bool(insn.code & BPF_X)
        if cls in (BPF_ALU, BPF_ALU64):
            if op == 0xB0:  # mov: the value moves
                return (out & ~dst) | (src if use_x and out & dst else 0)
            return out | dst | src if use_x and op not in (0x80, 0xD0) else out
        if cls == BPF_LDX:
            return (out & ~dst) | src
        if cls == BPF_ST:
            return out | dst
        if cls == BPF_STX:
            return out | dst | src | (1 if insn.imm == 0xF1 else 0)
        if cls == BPF_LD:
            if insn.code == LD_IMM64:
                return out & ~dst
            return (out & ~0x3F) | (src if insn.code & 0xE0 == 0x40 else 0)
        if op == BPF_CALL:
            args = 0x3E if insn.src == BPF_PSEUDO_CALL else (1 << (call_args(insn.imm) + 1)) - 2
            return (out & ~0x3F) | args
        if op == BPF_EXIT:
            return 1 if exit_needs_r0(i) else 0
        if op == BPF_JA:
            return out
        return out | dst | (src if use_x else 0)

    return _backward(insns, transfer)
