"""The shipped scenario library (scenarios/*.jsonl, recorded on the live kernel with
`kernelsim record`) replayed against the simulated kernel: the regression suite of the
simulator's fidelity. Any difference fails, except where the simulator is known to differ:
those are strict xfails naming the divergence, so a fix shows up as an unexpected pass (then
delete the entry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelsim import Kernel, KernelConfig, SimBackend
from kernelsim.scenario import load_scenario, replay_against

LIBRARY = Path(__file__).resolve().parents[1] / "scenarios"
SCENARIOS = sorted(LIBRARY.glob("*.jsonl"))
KNOWN_DIVERGENCES: dict[str, str] = {}


def test_the_library_is_complete() -> None:
    names = {path.stem for path in SCENARIOS}
    sources = {path.stem for path in (LIBRARY / "sources").glob("*.py")}
    assert names == sources
    assert set(KNOWN_DIVERGENCES) <= names
    for path in SCENARIOS:
        scenario = load_scenario(path)
        assert scenario.header["recorded_on"] == "live"
        assert scenario.header["source"].endswith(f"sources/{path.stem}.py")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            path,
            id=path.stem,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_DIVERGENCES[path.stem])]
            if path.stem in KNOWN_DIVERGENCES
            else [],
        )
        for path in SCENARIOS
    ],
)
def test_replays_on_the_simulator_without_a_difference(path: Path) -> None:
    scenario = load_scenario(path)
    config = KernelConfig(version=scenario.kernel_version, cpus=scenario.possible_cpus)
    backend = SimBackend(Kernel(config))
    try:
        report = replay_against(scenario, backend)
    finally:
        backend.kernel.close_all()
    assert report.passed, report.describe()
