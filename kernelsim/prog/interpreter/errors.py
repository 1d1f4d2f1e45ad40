"""What can go wrong while a program runs, as the simulator reports it.

Theory of operation
-------------------
The kernel never runs a program its verifier refused; the simulator runs programs without that
proof (conformance programs, fuzzed ones), so every check the verifier would have made
statically is made when the instruction executes. Low layers (memory, helpers, contexts) raise
`ProgramFault` with the reason only; the engine that knows the instruction index turns it into
`BpfRuntimeError`, which names the index, the instruction's text and the reason. Two control
transfers that are not errors travel as exceptions too, because they cross frames:
`ProgramExit` (a helper ends the whole run with a value: uBPF's unwind helper, ld_abs out of
range) and `TailCall` (bpf_tail_call replaces the running frame by another program).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ProgramFault(Exception):
    """A refused operation, without its location (the engine adds it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BpfRuntimeError(Exception):
    """A program did something the kernel's verifier would have refused.

    `index` is the instruction slot, `text` its assembler form, `reason` what was wrong.
    """

    def __init__(self, index: int, text: str, reason: str) -> None:
        super().__init__(f"insn {index} ({text}): {reason}")
        self.index = index
        self.text = text
        self.reason = reason


class BudgetExceeded(BpfRuntimeError):
    """The run executed more instructions than its budget allows."""


class ProgramExit(Exception):
    """End the whole run now with r0 = `value`."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class TailCall(Exception):
    """Replace the running frame by `target(env, ctx)`; raised by bpf_tail_call."""

    def __init__(self, target: Callable[[Any, int], int], ctx: int) -> None:
        super().__init__()
        self.target = target
        self.ctx = ctx
