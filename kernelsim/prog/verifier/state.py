"""The verifier state of one path: registers, stack, held references.

The stack is MAX_BPF_STACK bytes below r10, each byte INVALID (never written), MISC (written,
unknown), ZERO (written zero) or SPILL (part of a spilled register, kept per 8-byte slot as a
`Reg`). Byte `off` (-512..-1) lives in slot `(-off - 1) // 8` at index `(-off - 1) % 8`, the
kernel's layout, so the printed slot text ("fp-8=0000????") reads as the kernel's does.
`equivalent` is the kernel's states_equal for pruning (see docs/fidelity/prog.md for what is
compared more strictly than the kernel does).
"""

from __future__ import annotations

import enum
from typing import Final

from kernelsim.prog.verifier.regs import Reg, RegType, fmt_reg

MAX_BPF_STACK: Final = 512
SLOTS: Final = MAX_BPF_STACK // 8
FP: Final = 10


class Slot(enum.IntEnum):
    INVALID = 0
    SPILL = 1
    MISC = 2
    ZERO = 3


SLOT_CHAR: Final = {Slot.INVALID: "?", Slot.SPILL: "r", Slot.MISC: "m", Slot.ZERO: "0"}


class StoredState:
    """A state kept at a prune point (the kernel's bpf_verifier_state_list entry)."""

    __slots__ = ("branches", "parent", "state")

    def __init__(self, state: State, parent: StoredState | None) -> None:
        self.state = state
        self.branches = 1
        self.parent = parent


class State:
    """One path's state (mutable; `copy` at branches)."""

    __slots__ = ("allocated", "parent", "refs", "regs", "spills", "types")

    def __init__(self) -> None:
        self.regs = [Reg() for _ in range(11)]
        self.types = bytearray(MAX_BPF_STACK)
        """Per stack byte, index -off-1 (so index 0 is fp-1)."""
        self.spills: dict[int, Reg] = {}
        self.allocated = 0
        self.refs: list[tuple[int, int]] = []
        """Acquired references: (id, insn index)."""
        self.parent: StoredState | None = None

    def copy(self) -> State:
        new = State.__new__(State)
        new.regs = [r.copy() for r in self.regs]
        new.types = bytearray(self.types)
        new.spills = {k: v.copy() for k, v in self.spills.items()}
        new.allocated = self.allocated
        new.refs = list(self.refs)
        new.parent = self.parent
        return new

    # -- stack slots ----------------------------------------------------------------------------
    def slot_type(self, spi: int, j: int) -> Slot:
        return Slot(self.types[spi * 8 + j])

    def byte_type(self, off: int) -> Slot:
        return Slot(self.types[-off - 1])

    def set_byte(self, off: int, kind: Slot) -> None:
        self.types[-off - 1] = kind

    def is_spilled(self, spi: int) -> bool:
        return self.types[spi * 8 + 7] == Slot.SPILL

    def scrub_spill(self, spi: int) -> None:
        """Turn a spilled slot's bytes into MISC (a partial overwrite)."""
        if self.is_spilled(spi) or any(self.types[spi * 8 + j] == Slot.SPILL for j in range(8)):
            for j in range(8):
                if self.types[spi * 8 + j] == Slot.SPILL:
                    self.types[spi * 8 + j] = Slot.MISC
            self.spills.pop(spi, None)

    def grow(self, off: int) -> None:
        need = -off
        need = (need + 7) // 8 * 8
        self.allocated = max(self.allocated, need)

    def all_regs(self) -> list[Reg]:
        """Registers and spilled registers (bpf_for_each_reg_in_vstate)."""
        return self.regs + list(self.spills.values())

    # -- printing (print_verifier_state) --------------------------------------------------------
    def text(self, regs: set[int] | None, slots: set[int] | None) -> str:
        """ " R1=ctx() R10=fp0 fp-8=..." for the given registers/slots (None: all)."""
        parts: list[str] = []
        for i, reg in enumerate(self.regs):
            if reg.type is RegType.NOT_INIT or (regs is not None and i not in regs):
                continue
            parts.append(f" R{i}={fmt_reg(reg)}")
        for spi in range(self.allocated // 8):
            if slots is not None and spi not in slots:
                continue
            chars = [self.slot_type(spi, j) for j in range(8)]
            if all(c == Slot.INVALID for c in chars):
                continue
            text = "".join(SLOT_CHAR[c] for c in chars)
            if chars[7] == Slot.SPILL and spi in self.spills:
                first = next(j for j in range(8) if chars[j] == Slot.SPILL)
                text = text[:first] + fmt_reg(self.spills[spi])
            parts.append(f" fp{-(spi + 1) * 8}={text}")
        if self.refs:
            parts.append(" refs=" + ",".join(str(ref_id) for ref_id, _ in self.refs))
        return "".join(parts)

    # -- pruning (states_equal) -----------------------------------------------------------------
    def equivalent(self, cur: State, live: int, allow_uninit_stack: bool) -> bool:
        """Whether `cur` (at the same instruction) is covered by this explored state."""
        idmap: dict[int, int] = {}
        for i in range(11):
            if live >> i & 1 and not _regsafe(self.regs[i], cur.regs[i], idmap):
                return False
        for index in range(self.allocated):
            old_t = self.types[index]
            if old_t == Slot.INVALID or (allow_uninit_stack and old_t == Slot.MISC):
                continue
            if index >= cur.allocated or old_t != cur.types[index]:
                return False
            if index % 8 == 7 and old_t == Slot.SPILL:
                spi = index // 8
                old_r, cur_r = self.spills.get(spi), cur.spills.get(spi)
                if old_r is None or cur_r is None or not _regsafe(old_r, cur_r, idmap):
                    return False
        if len(self.refs) != len(cur.refs):
            return False
        return all(
            _check_id(a, b, idmap) for (a, _), (b, _) in zip(self.refs, cur.refs, strict=True)
        )

    def identical(self, cur: State) -> bool:
        """Exact equality (infinite loop detection)."""
        if self.types != cur.types or self.refs != cur.refs:
            return False
        for a, b in zip(self.all_regs(), cur.all_regs(), strict=False):
            if any(getattr(a, n) != getattr(b, n) for n in Reg.__slots__):
                return False
        return set(self.spills) == set(cur.spills)


def _check_id(old: int, cur: int, idmap: dict[int, int]) -> bool:
    if not old and not cur:
        return True
    if not old or not cur:
        return False
    seen = idmap.setdefault(old, cur)
    return seen == cur


def _regsafe(old: Reg, cur: Reg, idmap: dict[int, int]) -> bool:
    if old.type is RegType.NOT_INIT:
        return True
    if cur.type is RegType.NOT_INIT or old.type is not cur.type:
        return False
    if old.maybe_null != cur.maybe_null:
        return False
    if old.is_scalar:
        return old.range_within(cur)
    if old.off != cur.off or old.map is not cur.map or old.mem_size != cur.mem_size:
        return False
    if old.type.is_packet and old.range > cur.range:
        return False
    if not old.range_within(cur):
        return False
    return _check_id(old.id, cur.id, idmap)
