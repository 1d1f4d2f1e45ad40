"""Recording never changes what the code sees; a recording replays with no kernel; a different
call is a ScenarioDivergence naming both calls; replay_against reports differing results."""

from __future__ import annotations

import ctypes
import json
import struct
from pathlib import Path

import pytest
from scenario_support import session

from bpfsys import bpf
from bpfsys.abi import BpfCmd, MapType
from bpfsys.backend import Backend, LiveBackend, backend_from_spec, use_backend
from kernelsim import Kernel, KernelConfig, SimBackend
from kernelsim.scenario import (
    RecordingBackend,
    ReplayBackend,
    ScenarioDivergence,
    diff_scenarios,
    load_scenario,
    replay_against,
)


def record(inner: Backend, path: Path, *, program: bool) -> list[object]:
    with RecordingBackend(inner, path) as recorder:
        return session(recorder, program=program)


def test_recording_on_the_simulator_changes_nothing(tmp_path: Path) -> None:
    plain = session(SimBackend(), program=False)
    seen = record(SimBackend(), tmp_path / "s.jsonl", program=False)
    assert seen == plain
    scenario = load_scenario(tmp_path / "s.jsonl")
    assert scenario.header["recorded_on"] == "sim"
    assert scenario.kernel["possible_cpus"] == 2
    first = scenario.events[0].data
    assert first["cmd"] == "MAP_CREATE" and first["ret"] == "$map1"
    assert first["attr"]["map_flags"] == ["NO_PREALLOC"]
    lookup = scenario.events[1].data
    assert lookup["cmd"] == "MAP_UPDATE_ELEM"
    assert lookup["attr"]["*value"] == {"len": 8, "in": "2a00000000000000"}
    assert scenario.events[-1].data == {"op": "close", "fd": "$map1"}


def test_replay_serves_the_recording_without_a_kernel(tmp_path: Path) -> None:
    seen = record(SimBackend(), tmp_path / "s.jsonl", program=False)
    replay = ReplayBackend(tmp_path / "s.jsonl")
    assert session(replay, program=False) == seen
    replay.finish()


def test_replay_against_other_profiles_reports_what_differs(tmp_path: Path) -> None:
    record(SimBackend(Kernel(KernelConfig(cpus=2))), tmp_path / "s.jsonl", program=False)
    report = replay_against(tmp_path / "s.jsonl", SimBackend(Kernel(KernelConfig(cpus=2))))
    assert report.passed, report.describe()
    report = replay_against(tmp_path / "s.jsonl", SimBackend(Kernel(KernelConfig(version="6.1"))))
    (failure,) = report.failures
    assert failure.summary == "bpf OBJ_GET_INFO_BY_FD"
    assert [d.path for d in failure.differences] == ["changed"]  # 6.1's bpf_map_info is shorter
    assert failure.differences[0].actual == {"info_len": 88}
    report = replay_against(tmp_path / "s.jsonl", SimBackend(Kernel(KernelConfig(cpus=4))))
    assert not report.passed
    assert any("possible" in r.summary for r in report.failures)


def test_divergence_names_both_calls_and_applies_nothing(tmp_path: Path) -> None:
    record(SimBackend(), tmp_path / "s.jsonl", program=False)
    replay = ReplayBackend(tmp_path / "s.jsonl")
    with use_backend(replay):
        m = bpf.map_create(MapType.HASH, 4, 8, 4, name="scn", flags=1)
        value = ctypes.create_string_buffer(b"\x07" * 8, 8)
        with pytest.raises(ScenarioDivergence) as caught:
            bpf.map_update_elem(m, struct.pack("<I", 2), bytes(value))
        m.take()  # the replay owns the fd (an eventfd) and closes it on release
    error = caught.value
    assert not isinstance(error, OSError)
    assert error.line == 3
    assert error.expected is not None and error.expected["attr"]["*key"]["in"] == "01000000"
    assert error.actual["attr"]["*key"]["in"] == "02000000"
    assert "expected:" in str(error) and "actual:" in str(error)
    assert value.raw == b"\x07" * 8
    replay.release()


def test_a_lookup_after_the_recording_ends_diverges(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with RecordingBackend(SimBackend(), path) as recorder, use_backend(recorder):
        bpf.map_create(MapType.ARRAY, 4, 4, 1).close()
    replay = ReplayBackend(path)
    with use_backend(replay):
        bpf.map_create(MapType.ARRAY, 4, 4, 1).close()
        with pytest.raises(ScenarioDivergence, match="the recording has ended"):
            bpf.map_create(MapType.ARRAY, 4, 4, 1)
    replay.release()


def test_finish_names_the_first_call_not_made(tmp_path: Path) -> None:
    record(SimBackend(), tmp_path / "s.jsonl", program=False)
    replay = ReplayBackend(tmp_path / "s.jsonl")
    with pytest.raises(ScenarioDivergence) as caught:
        replay.finish()
    assert caught.value.expected is not None
    assert caught.value.expected["cmd"] == "MAP_CREATE"


def test_replay_against_reports_a_changed_result(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    record(SimBackend(), path, program=False)
    lines = path.read_text().splitlines()
    event = json.loads(lines[3])
    assert event["cmd"] == "MAP_LOOKUP_ELEM"
    event["written"]["*value"] = "2b00000000000000"
    lines[3] = json.dumps(event)
    path.write_text("\n".join(lines) + "\n")
    report = replay_against(path, SimBackend())
    assert [r.line for r in report.failures] == [4]
    (difference,) = report.failures[0].differences
    assert difference.path == "written.*value"
    assert (difference.expected, difference.actual) == ("2b00000000000000", "2a00000000000000")
    assert diff_scenarios(path, path).passed


def test_backend_specs_record_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "spec.jsonl"
    recorder = backend_from_spec(f"record:{path};sim:kernel=5.15,cpus=3")
    assert isinstance(recorder, RecordingBackend)
    assert recorder.profile["version"] == "5.15" and recorder.profile["possible_cpus"] == 3
    with use_backend(recorder):
        bpf.map_create(MapType.ARRAY, 4, 4, 1).close()
    recorder.close_recording()
    replay = backend_from_spec(f"replay:{path}")
    assert isinstance(replay, ReplayBackend)
    with use_backend(replay):
        bpf.map_create(MapType.ARRAY, 4, 4, 1).close()
    replay.finish()
    with pytest.raises(ValueError, match="BPFSYS_BACKEND"):
        backend_from_spec(f"replay:{tmp_path / 'missing.jsonl'}")


def test_bogus_pointers_are_recorded_as_faults(tmp_path: Path) -> None:
    """A pointer the kernel cannot read is recorded as such, and replays as a fault."""
    from bpfsys.abi import MapElemAttr

    path = tmp_path / "fault.jsonl"
    sim = SimBackend()
    with (
        RecordingBackend(sim, path) as recorder,
        use_backend(recorder),
        bpf.map_create(MapType.ARRAY, 4, 4, 1) as m,
    ):
        attr = MapElemAttr(map_fd=m.fileno(), key=16, value=16)
        with pytest.raises(OSError) as caught:
            recorder.bpf(BpfCmd.MAP_UPDATE_ELEM, attr, ctypes.sizeof(attr))
        assert caught.value.errno == 14
    event = load_scenario(path).events[1].data
    assert event["attr"]["*key"] == {"len": 4, "fault": "0x10"}
    assert event["errno"] == "EFAULT"
    assert replay_against(path, SimBackend()).passed


@pytest.mark.live
def test_recording_live_and_replaying_without_a_kernel(live: Backend, tmp_path: Path) -> None:
    """A live session with a program load, info and a test run replays with no kernel."""
    assert isinstance(live, LiveBackend)
    path = tmp_path / "live.jsonl"
    seen = record(live, path, program=True)
    assert seen == session(LiveBackend(), program=True)
    scenario = load_scenario(path)
    assert scenario.header["recorded_on"] == "live"
    load = next(e.data for e in scenario.events if e.data.get("cmd") == "PROG_LOAD")
    assert "lddw %r1, map_fd($map1)" in load["attr"]["*insns"]["in"]["insns"]
    info = [e.data for e in scenario.events if e.data.get("cmd") == "OBJ_GET_INFO_BY_FD"]
    assert info[-1]["written"]["*info"]["*map_ids"] == {"ids": ["@map1"], "len": 4}
    replay = ReplayBackend(path)
    assert session(replay, program=True) == seen
    replay.finish()
