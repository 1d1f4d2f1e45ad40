"""What the helper modules share: the run's kernel and current task, program memory writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernelsim.current import Current
from kernelsim.prog.interpreter.errors import ProgramFault

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.prog.interpreter.runtime import RunEnv


def kernel_of(env: RunEnv) -> Kernel:
    """The kernel the program runs on (ProgramFault for a run without one)."""
    if env.kernel is None:
        raise ProgramFault("this helper needs a kernel, and the run has none")
    return env.kernel


def current_of(env: RunEnv) -> Current:
    """The kernel's current task and run context."""
    return kernel_of(env).subsystem(Current)


def write_out(env: RunEnv, address: int, data: bytes) -> None:
    """Write `data` into the program's memory at `address` (nothing for empty data)."""
    if data:
        env.space.write_bytes(address, data)
