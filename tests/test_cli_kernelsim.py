"""The kernelsim command line: subcommands, exit codes, --json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scenario_support import session

from kernelsim import SimBackend
from kernelsim.cli import EXIT_DIFFERS, EXIT_OK, EXIT_USAGE, main
from kernelsim.scenario import RecordingBackend

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "tests"


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "rec.jsonl"
    with RecordingBackend(SimBackend(), path) as recorder:
        session(recorder, program=False)
    return path


def test_replay_passes_and_prints_a_table(
    recording: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(recording)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "pass" in out and "1 passed, 0 failed" in out


def test_replay_differs_and_json(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--cpus", "4", "--json", str(recording)]) == EXIT_DIFFERS
    document = json.loads(capsys.readouterr().out)
    assert document["passed"] is False
    (replay,) = document["replays"]
    assert replay["cpus"] == 4 and replay["differences"]


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kernelsim_scenario": 1}\n')
    assert main(["replay", str(bad)]) == EXIT_USAGE
    assert "truncated" in capsys.readouterr().out
    assert main(["diff", str(bad), str(bad)]) == EXIT_USAGE
    assert main(["replay"]) == EXIT_USAGE
    with pytest.raises(SystemExit) as caught:
        main(["no-such-command"])
    assert caught.value.code == EXIT_USAGE


def test_diff(recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(recording), str(recording)]) == EXIT_OK
    other = tmp_path / "other.jsonl"
    with RecordingBackend(SimBackend(), other) as recorder:
        session(recorder, value=43, program=False)
    capsys.readouterr()
    assert main(["diff", "--json", str(recording), str(other)]) == EXIT_DIFFERS
    document = json.loads(capsys.readouterr().out)
    paths = {d["path"] for d in document["differences"]}
    assert "attr.*value.in" in paths


def test_conformance_pass_and_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"no conformance suite at {CONFORMANCE}")
    for name in ("add.data", "exit.data"):
        shutil.copy(CONFORMANCE / name, tmp_path / name)
    assert main(["conformance", str(tmp_path)]) == EXIT_OK
    assert "2 passed, 0 failed" in capsys.readouterr().out
    text = (CONFORMANCE / "exit.data").read_text()
    (tmp_path / "wrong.data").write_text(text.replace("-- result\n0x0", "-- result\n0x1"))
    assert main(["conformance", "--json", str(tmp_path)]) == EXIT_DIFFERS
    document = json.loads(capsys.readouterr().out)
    assert document["failed"] == 1
    assert main(["conformance", str(tmp_path / "missing")]) == EXIT_USAGE


def test_profiles() -> None:
    assert main(["profiles"]) == EXIT_OK


def test_run_and_record_through_the_console_script(tmp_path: Path) -> None:
    """`kernelsim run` (a subprocess of the real command) sets the backend for the child;
    `--record` writes a scenario the child's calls fill."""
    script = tmp_path / "tool.py"
    script.write_text(
        "import os\n"
        "from bpfsys import bpf\n"
        "from bpfsys.abi import MapType\n"
        "print(os.environ['BPFSYS_BACKEND'])\n"
        "bpf.map_create(MapType.ARRAY, 4, 4, 1).close()\n"
        "raise SystemExit(3)\n"
    )
    out = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "kernelsim.cli", "run", "--kernel", "5.10", "--cpus", "3"]
    done = subprocess.run(
        [*command, "--record", str(out), "--", sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == f"record:{out};sim:kernel=5.10,cpus=3"
    assert main(["replay", str(out)]) == EXIT_OK
    assert main(["record", "--sim", "-o", str(tmp_path / "r.jsonl"), "--", "false"]) == 1
    assert main(["run", "--", str(tmp_path / "no-such-tool")]) == 127
    assert main(["run"]) == EXIT_USAGE
