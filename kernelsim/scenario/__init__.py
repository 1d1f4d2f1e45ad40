"""Scenarios: syscall sessions recorded, replayed and compared.

A scenario file (JSON Lines, docs/scenarios.md) holds a session of backend calls decoded by
name -- commands, attr fields, flags, fds and ids as symbols, the memory behind pointers --
with their results, the bytes of mapped rings as the consumer found them, and the kernel it was
recorded on. Hand-written scenarios may add simulator steps and expectations.

* `RecordingBackend(inner, path)`: any backend, recording every call;
* `ReplayBackend(path)`: the recording served to the code under test, with no kernel
  (`ScenarioDivergence` when the code makes another call);
* `replay_against(path, backend)`: the recorded calls issued on another backend, each differing
  result reported (`ReplayReport`);
* `diff_scenarios(a, b)`: two recordings of one session compared event by event;
* `load_scenario(path)`: a file read and checked whole (`ScenarioError`).
"""

from kernelsim.scenario.against import Difference, EventResult, ReplayReport, replay_against
from kernelsim.scenario.diff import diff_scenarios
from kernelsim.scenario.errors import ScenarioDivergence, ScenarioError
from kernelsim.scenario.format import FORMAT_VERSION, Scenario, load_scenario
from kernelsim.scenario.recorder import RecordingBackend
from kernelsim.scenario.replay import ReplayBackend

__all__ = [
    "FORMAT_VERSION",
    "Difference",
    "EventResult",
    "RecordingBackend",
    "ReplayBackend",
    "ReplayReport",
    "Scenario",
    "ScenarioDivergence",
    "ScenarioError",
    "diff_scenarios",
    "load_scenario",
    "replay_against",
]
