"""`kernelsim exec --record`: a native program's calls in the in-process recorder's format.

bpftool creates, updates and looks up a pinned map under exec; the recording must decode, hold
what bpftool's memory held (the memory seam) and what its OBJ_GET fds are (the learning seam),
close every fd the program let go, replay against the simulator with no difference, and equal a
second recording of the same run (`kernelsim diff`)."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Final

import pytest
from exec_support import BPF_CHILD, need_exec, shared_dir, snippet_file

from kernelsim import SimBackend, cli
from kernelsim.exec import ExecSession
from kernelsim.scenario import diff_scenarios, load_scenario, replay_against

BPFTOOL: Final = shutil.which("bpftool")
PIN: Final = "/sys/fs/bpf/xr_hash"
STEPS: Final = (
    f"{BPFTOOL} map create {PIN} type hash key 4 value 4 entries 8 name xr_hash && "
    f"{BPFTOOL} map update pinned {PIN} key 1 0 0 0 value 2 0 0 0 && "
    f"{BPFTOOL} map lookup pinned {PIN} key 1 0 0 0"
)


@pytest.fixture
def bpftool() -> None:
    need_exec()
    if BPFTOOL is None:
        pytest.skip("bpftool is not installed (apt-get install bpftool)")


def record_bpftool(path: Path, capfd: pytest.CaptureFixture[str]) -> str:
    """`kernelsim exec --record path -- sh -c STEPS`; what the program printed."""
    code = cli.main(["exec", "--record", str(path), "--", "sh", "-c", STEPS])
    out, err = capfd.readouterr()
    assert code == 0, out + err
    return out


def calls(path: Path, cmd: str) -> list[dict[str, Any]]:
    return [e.data for e in load_scenario(path).events if e.data.get("cmd") == cmd]


@pytest.mark.usefixtures("bpftool")
def test_a_bpftool_run_is_recorded_as_scenario(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bpftool.jsonl"
    assert "key: 01 00 00 00  value: 02 00 00 00" in record_bpftool(path, capfd)
    scenario = load_scenario(path)  # decodes whole
    assert scenario.header["recorded_on"] == "sim"
    assert scenario.header["source"] == shlex.join(["sh", "-c", STEPS])
    assert isinstance(scenario.header["pid"], int)

    (create,) = calls(path, "MAP_CREATE")
    assert create["attr"]["map_name"] == "xr_hash" and create["ret"] == "$map1"
    (pin,) = calls(path, "OBJ_PIN")
    assert pin["attr"]["*pathname"]["in"]["text"] == PIN  # read in bpftool's memory
    gets = calls(path, "OBJ_GET")
    assert [g["object"] for g in gets] == [  # learned from the fd table, no call
        {"kind": "map", "map_type": "HASH", "key_size": 4, "value_size": 4}
    ] * 2
    (update,) = calls(path, "MAP_UPDATE_ELEM")
    assert update["attr"]["*key"]["in"] == "01000000"
    assert update["attr"]["*value"]["in"] == "02000000"
    (lookup,) = calls(path, "MAP_LOOKUP_ELEM")
    assert lookup["attr"]["map_fd"] == gets[1]["ret"]  # the program's fd, bound on delivery
    assert lookup["written"] == {"*value": "02000000"}  # what the kernel wrote into bpftool

    returned = Counter(e.data["ret"] for e in scenario.events if str(e.data.get("ret"))[:1] == "$")
    closed = Counter(e.data["fd"] for e in scenario.events if e.op == "close")
    assert closed == returned  # every fd the program held, closed once (bpftool exits)

    report = replay_against(path, SimBackend())
    assert report.passed, report.describe()


@pytest.mark.usefixtures("bpftool")
def test_two_recordings_of_one_run_do_not_differ(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    record_bpftool(a, capfd)
    record_bpftool(b, capfd)
    report = diff_scenarios(a, b)
    assert report.passed, report.describe()
    assert cli.main(["diff", str(a), str(b)]) == 0
    assert "no differences" in capfd.readouterr().out


CLOSE_AND_REUSE: Final = """
first = bpf.map_create(abi.MapType.ARRAY, 4, 4, 1, backend=backend)
number = first.fileno()
first.close()
second = bpf.map_create(abi.MapType.HASH, 4, 4, 2, backend=backend)
say("reused", second.fileno() == number)
bpf.map_update_elem(second, bytes(4), b"abcd")
second.close()
"""


def test_a_closed_fd_is_closed_in_the_recording_before_its_number_is_reused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    need_exec()
    path = tmp_path / "reuse.jsonl"
    snippet = snippet_file(shared_dir(), CLOSE_AND_REUSE)
    session = ExecSession([sys.executable, str(BPF_CHILD), "--drop", str(snippet)], record=path)
    assert session.serve() == 0
    assert "reused True" in capfd.readouterr().out
    ops = [
        (e.data["op"], e.data.get("cmd"), e.data.get("ret", e.data.get("fd")))
        for e in load_scenario(path).events
    ]
    assert ops == [
        ("bpf", "MAP_CREATE", "$map1"),
        ("close", None, "$map1"),
        ("bpf", "MAP_CREATE", "$map2"),
        ("bpf", "MAP_UPDATE_ELEM", 0),
        ("close", None, "$map2"),
    ]
    (update,) = calls(path, "MAP_UPDATE_ELEM")
    assert update["attr"]["map_fd"] == "$map2"
    assert replay_against(path, SimBackend()).passed


def test_a_recording_that_cannot_be_written_is_a_usage_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    need_exec()
    target = tmp_path / "no" / "such" / "dir.jsonl"
    assert cli.main(["exec", "--record", str(target), "--", "true"]) == 2
    assert f"cannot record to {target}" in capfd.readouterr().err
