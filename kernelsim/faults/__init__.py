"""Fault injection for bpfsys code: fail chosen backend calls, spoil simulated perf ring
writes, and fail every call of a scenario in turn.

* `FaultPlan` / `FaultRule` / `Match` / `RingRule` (`kernelsim.faults.plan`): what to fail,
  as data, decided deterministically from seeds;
* `FaultBackend(inner, plan)` (`kernelsim.faults.backend`): a delegating backend applying a
  plan, logging every call with where it came from;
* `exhaustive_faults(scenario, make_backend, errnos)` (`kernelsim.faults.exhaustive`): the
  usersim-style exhaustive mode, returning a `FaultReport`;
* `LeakCheck` (`kernelsim.faults.leaks`): what a run left behind, named.

docs/faults.md is the guide.
"""

from kernelsim.faults.backend import CallRecord, FaultBackend, Frame
from kernelsim.faults.exhaustive import (
    FaultReport,
    Outcome,
    Scenario,
    SiteResult,
    exhaustive_faults,
)
from kernelsim.faults.leaks import LeakCheck
from kernelsim.faults.plan import (
    NO_FAULTS,
    Call,
    FaultPlan,
    FaultRule,
    Match,
    RingFault,
    RingRule,
    Syscall,
)

__all__ = [
    "NO_FAULTS",
    "Call",
    "CallRecord",
    "FaultBackend",
    "FaultPlan",
    "FaultReport",
    "FaultRule",
    "Frame",
    "LeakCheck",
    "Match",
    "Outcome",
    "RingFault",
    "RingRule",
    "Scenario",
    "SiteResult",
    "Syscall",
    "exhaustive_faults",
]
