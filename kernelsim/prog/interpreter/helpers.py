"""Helper tables: helper id -> the Python function that implements it.

Theory of operation
-------------------
A program calls helper `id` with r1..r5; the engine looks the id up in the run's
`HelperTable` and calls `impl(env, r1, r2, r3, r4, r5)`, whose int result (masked to 64 bits by
the caller) becomes r0. A helper reaches memory through `env.space` (typed regions, so a bad
pointer is a `ProgramFault` naming the access), the kernel through `env.kernel`, and ends the
run or replaces the frame by raising `ProgramExit` / `TailCall`. A missing id is a
`ProgramFault` naming the helper.

`KERNEL_HELPERS` is the simulated kernel's table. Subsystems add theirs with
`@kernel_helper(BpfFunc.X)` in their own module (perf_event_output, ringbuf_* ...); the module
just has to be imported (kernelsim.subsystems imports every subsystem at kernel start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from bpfsys.abi import BpfFunc
from kernelsim.prog.interpreter.errors import ProgramFault

if TYPE_CHECKING:
    from kernelsim.prog.interpreter.runtime import RunEnv

Helper: TypeAlias = "Callable[[RunEnv, int, int, int, int, int], int]"


def helper_name(helper_id: int) -> str:
    try:
        return f"bpf_{BpfFunc(helper_id).name.lower()}"
    except ValueError:
        return f"#{helper_id}"


class HelperTable(dict[int, "Helper"]):
    """Helpers by id. `name` says whose table it is, for messages."""

    def __init__(self, name: str, named: Callable[[int], str] = helper_name) -> None:
        super().__init__()
        self.name = name
        self.named = named

    def __missing__(self, helper_id: int) -> Helper:
        raise ProgramFault(
            f"helper {helper_id} ({self.named(helper_id)}) is not available in {self.name}"
        )

    def register(self, helper_id: int) -> Callable[[Helper], Helper]:
        """Decorator: `impl` implements `helper_id` in this table."""

        def add(impl: Helper) -> Helper:
            if helper_id in self:
                raise RuntimeError(f"two implementations of helper {helper_id} in {self.name}")
            self[helper_id] = impl
            return impl

        return add


KERNEL_HELPERS = HelperTable("the simulated kernel")
"""The helpers of the simulated kernel, filled by `@kernel_helper` across kernelsim."""


def kernel_helper(func: BpfFunc) -> Callable[[Helper], Helper]:
    """Register the kernel's implementation of helper `func`."""
    return KERNEL_HELPERS.register(int(func))
