"""Running a loaded program on the simulated kernel: settings, clock and statistics.

Theory of operation
-------------------
`run_on_kernel(kernel, prog, setup, cpu)` is the one way the simulated kernel runs a
`BpfProgram` (test runs, and events when subsystems fire programs): a fresh `RunEnv` with the
kernel's helpers, `setup(env)` maps the context (and packet) regions and gives r1, the program
runs on the engine and budget of the kernel's `ExecutionSettings`, and then

- the virtual clock advances by the run's cost, RUN_OVERHEAD_NS + NS_PER_INSN per executed
  instruction, so durations are deterministic;
- while `kernel.stats_enabled` > 0 the program's run_cnt grows by one and run_time_ns by the
  cost, as the kernel's __bpf_prog_run does with the bpf_stats_enabled_key on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs

from kernelsim.prog.interpreter.helpers import KERNEL_HELPERS
from kernelsim.prog.interpreter.runtime import DEFAULT_BUDGET, Engine, RunEnv

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.prog.program import BpfProgram

RUN_OVERHEAD_NS: Final = 20
NS_PER_INSN: Final = 1


class ExecutionSettings:
    """How a kernel runs programs: `kernel.subsystem(ExecutionSettings)`."""

    def __init__(self, kernel: Kernel) -> None:
        self.engine = Engine.COMPILED
        self.budget = DEFAULT_BUDGET
        """Instructions one run may execute before BudgetExceeded."""


@attrs.frozen
class RunOutcome:
    retval: int
    """r0 at exit (64 bits)."""
    cost_ns: int
    """What the run advanced the clock by."""


def run_on_kernel(
    kernel: Kernel, prog: BpfProgram, setup: Callable[[RunEnv], int], cpu: int = 0
) -> RunOutcome:
    """Run `prog` once; BpfRuntimeError when it does something the verifier would refuse."""
    settings = kernel.subsystem(ExecutionSettings)
    env = RunEnv(
        KERNEL_HELPERS, kernel=kernel, cpu=cpu, budget=settings.budget, engine=settings.engine
    )
    r1 = setup(env)
    retval = prog.executable().run(env, r1)
    cost = RUN_OVERHEAD_NS + NS_PER_INSN * (settings.budget - env.budget)
    kernel.advance(cost)
    if kernel.stats_enabled > 0:
        prog.run_cnt += 1
        prog.run_time_ns += cost
    return RunOutcome(retval, cost)
