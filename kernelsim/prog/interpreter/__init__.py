"""Running eBPF programs: a compiling engine, a reference interpreter, typed memory, helpers.

Public API:
- `Executable(insns, maps)` / `BpfProgram.executable()`: a decoded program; `run(env, r1, r2)`;
- `RunEnv(helpers, kernel=..., cpu=..., budget=..., engine=Engine.COMPILED)`: one run's state;
- `KERNEL_HELPERS`, `kernel_helper(BpfFunc.X)`: the kernel's helper table and its registry;
- `BpfRuntimeError` (and `BudgetExceeded`): a refused operation, naming the instruction;
- `TraceBuffer`: the per-kernel trace buffer bpf_trace_printk appends to;
- `run_conformance(dir)`: the bpf_conformance suite as uBPF's plugin runs it.
"""

import kernelsim.prog.interpreter.kernel_helpers  # noqa: F401 - registers the kernel's helpers
from kernelsim.prog.interpreter.conformance import ConformanceResult, run_conformance
from kernelsim.prog.interpreter.errors import BpfRuntimeError, BudgetExceeded
from kernelsim.prog.interpreter.helpers import KERNEL_HELPERS, HelperTable, kernel_helper
from kernelsim.prog.interpreter.runtime import Engine, Executable, RunEnv
from kernelsim.prog.interpreter.trace_buffer import TraceBuffer, TraceEvent

__all__ = [
    "KERNEL_HELPERS",
    "BpfRuntimeError",
    "BudgetExceeded",
    "ConformanceResult",
    "Engine",
    "Executable",
    "HelperTable",
    "RunEnv",
    "TraceBuffer",
    "TraceEvent",
    "kernel_helper",
    "run_conformance",
]
