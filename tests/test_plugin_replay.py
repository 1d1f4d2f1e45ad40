"""The pytest plugin's replay mode (``--bpf-backend=replay --replay-scenarios DIR``) and its
helpers for what a test does to the kernel besides calls (`trigger`, `process_pid`,
`backend_kind`); and the acceptance: the example project's suite passes from its recordings
of the live kernel, as uid 65534, with no live kernel access.

The inner sessions (`pytester`) replay recordings made here on the simulator with the file name
the plugin gives the ``live`` run of the inner test (``test_inner.py_test_x_live.jsonl``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest

from bpfsys import bpf
from bpfsys.abi import MapType
from bpfsys.backend import Backend, LiveBackend, use_backend
from kernelsim import Kernel, KernelConfig, SimBackend, pytest_plugin
from kernelsim.pytest_plugin import backend_kind, process_pid, trigger
from kernelsim.scenario import RecordingBackend, ReplayBackend

pytest_plugins = ["pytester"]

ROOT: Final = Path(__file__).resolve().parent.parent
EXAMPLE: Final = ROOT / "examples" / "tracepoint_counter"
RECORDINGS: Final = EXAMPLE / "recordings"
REPLAYED_TESTS: Final = (
    "test_counts_start_empty_for_this_process",
    "test_counts_this_process",
    "test_the_program_is_attached",
    "test_unknown_syscall_is_enoent_and_leaves_nothing",
    "test_close_is_idempotent",
)
"""The example's bpf_backend tests (its two sim_backend tests run on the simulator)."""
NOBODY: Final = 65534
SESSION: Final = '''
import struct
import pytest
from bpfsys import bpf
from bpfsys.abi import MapType

def session():
    """Create, update, look up and close an array map; what the lookup found."""
    with bpf.map_create(MapType.ARRAY, 4, 8, 2) as fd:
        bpf.map_update_elem(fd, struct.pack("<I", 1), struct.pack("<Q", 42))
        return bpf.map_lookup_elem(fd, struct.pack("<I", 1), 8)
'''


@pytest.fixture(scope="module", autouse=True)
def _simulator_loaded() -> None:
    """Boot a kernel in this process first: pytester drops the modules an inner session
    imported, and the simulator's subsystems register their handlers once per process."""
    Kernel()


@pytest.fixture(autouse=True)
def _default_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pytest_plugin.BACKENDS_ENV, raising=False)


def recorded_session(folder: Path, name: str, ids: str = "live") -> Path:
    """Record `SESSION` on the simulator as the plugin names the run of test `name` whose
    parameter ids are `ids`."""
    scope: dict[str, Callable[[], bytes]] = {}
    exec(SESSION, scope)  # our own snippet, as the inner test file runs it
    folder.mkdir(exist_ok=True)
    path = folder / f"test_inner.py_{name}_{ids}.jsonl"
    with RecordingBackend(SimBackend(), path) as recorder, use_backend(recorder):
        assert scope["session"]() == (42).to_bytes(8, "little")
    return path


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=SESSION + textwrap.dedent(body))
    return pytester.runpytest("-p", "no:cacheprovider", "-rs", *args)


def replaying(folder: Path) -> tuple[str, str]:
    return "--bpf-backend=replay", f"--replay-scenarios={folder}"


# ---------------------------------------------------------------------------------------------
# The replay mode
# ---------------------------------------------------------------------------------------------
def test_a_recorded_test_passes_from_its_recording(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    recorded_session(tmp_path, "test_x")
    body = """
        from bpfsys.backend import current_backend
        from kernelsim.pytest_plugin import backend_kind
        from kernelsim.scenario import ReplayBackend

        def test_x(bpf_backend):
            assert isinstance(bpf_backend, ReplayBackend) and current_backend() is bpf_backend
            assert backend_kind(bpf_backend) == "replay"
            assert session() == (42).to_bytes(8, "little")
        """
    result = run(pytester, body, *replaying(tmp_path), "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_x[[]replay[]] PASSED*"])


def test_other_parameters_keep_their_ids_after_the_backend(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    recorded_session(tmp_path, "test_x", ids="live-1")
    body = """
        @pytest.mark.parametrize("n", [1, 2])
        def test_x(bpf_backend, n):
            assert session() == (42).to_bytes(8, "little")
        """
    result = run(pytester, body, *replaying(tmp_path))
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*no recording of test_inner.py::test_x[[]live-2[]]*"])


def test_a_test_without_a_recording_is_skipped_naming_it(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    body = """
        def test_never_recorded(bpf_backend):
            raise AssertionError("must not run")
        """
    result = run(pytester, body, *replaying(tmp_path))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED*no recording of test_inner.py::test_never_recorded[[]live[]] in *"
            "(make it with --bpf-backend=live --record-scenarios *)"
        ]
    )


def test_a_divergence_fails_the_test_with_both_calls(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    recorded_session(tmp_path, "test_x")
    body = """
        def test_x(bpf_backend):
            with bpf.map_create(MapType.ARRAY, 4, 8, 3):  # 3 entries, not 2
                pass
        """
    result = run(pytester, body, *replaying(tmp_path))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ScenarioDivergence: *test_inner.py_test_x_live.jsonl:2: the code diverged from "
            "the recording",
            '*expected: {"attr": {"key_size": 4, "map_type": "ARRAY", "max_entries": 2, *',
            '*actual:   {"attr": {"key_size": 4, "map_type": "ARRAY", "max_entries": 3, *',
        ]
    )
    assert "ERROR at teardown" not in result.stdout.str()


def test_a_swallowed_divergence_fails_at_teardown(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    recorded_session(tmp_path, "test_x")
    body = """
        def test_x(bpf_backend):
            try:
                bpf.map_create(MapType.HASH, 4, 8, 2).close()
            except Exception:
                pass  # code that hides every error
        """
    result = run(pytester, body, *replaying(tmp_path))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_x*",
            "*test_x[[]replay[]]: the replay ended unfinished: *:2: the code diverged*",
            '*expected: {"attr": {"key_size": 4, "map_type": "ARRAY", *',
            '*actual:   {"attr": {"key_size": 4, "map_type": "HASH", *',
        ]
    )


def test_recorded_calls_left_unmade_fail_at_teardown(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    recorded_session(tmp_path, "test_x")
    body = """
        def test_x(bpf_backend):
            bpf.map_create(MapType.ARRAY, 4, 8, 2).take()  # and nothing more
        """
    result = run(pytester, body, *replaying(tmp_path))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the replay ended unfinished: *:3: the code diverged from the recording",
            '*expected: {"attr": {"*key": *, "cmd": "MAP_UPDATE_ELEM", *',
            '*actual:   {"op": "nothing more (the code finished)"}',
        ]
    )


def test_replay_mode_needs_its_folder(pytester: pytest.Pytester, tmp_path: Path) -> None:
    body = """
        def test_x(bpf_backend):
            pass
        """
    result = run(pytester, body, "--bpf-backend=sim,replay")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bpf-backend=replay needs --replay-scenarios DIR*"])
    result = run(pytester, body, *replaying(tmp_path / "missing"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--replay-scenarios: */missing is not a directory"])


def test_a_bad_recording_fails_the_test_naming_the_line(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    path = recorded_session(tmp_path, "test_x")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # the end marker lost
    body = """
        def test_x(bpf_backend):
            raise AssertionError("must not run")
        """
    result = run(pytester, body, *replaying(tmp_path))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_x[[]replay[]]: cannot replay *: truncated*"])


def test_recording_then_replaying_a_live_test(pytester: pytest.Pytester, tmp_path: Path) -> None:
    reason = pytest_plugin.live_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    body = """
        import os
        from kernelsim.pytest_plugin import backend_kind, process_pid

        def test_x(bpf_backend):
            assert session() == (42).to_bytes(8, "little")
            assert backend_kind(bpf_backend) in ("live", "replay")
            assert process_pid(bpf_backend) == os.getpid()  # pytester: this process records
        """
    result = run(pytester, body, "--bpf-backend=live", f"--record-scenarios={tmp_path}")
    result.assert_outcomes(passed=1)
    (recording,) = tmp_path.iterdir()
    assert recording.name == "test_inner.py_test_x_live.jsonl"
    replay = ReplayBackend(recording)
    assert replay.recorded_pid == os.getpid()
    replay.release()
    result = run(pytester, body, *replaying(tmp_path), "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_x[[]replay[]] PASSED*"])


# ---------------------------------------------------------------------------------------------
# trigger, process_pid, backend_kind
# ---------------------------------------------------------------------------------------------
def test_backend_kind_sees_through_wrappers(tmp_path: Path) -> None:
    path = recorded_session(tmp_path, "test_kind")
    sim = SimBackend()
    with RecordingBackend(sim, tmp_path / "again.jsonl") as recorder:
        assert backend_kind(recorder) == backend_kind(sim) == "sim"
    with RecordingBackend(LiveBackend(), tmp_path / "live.jsonl") as recorder:
        assert backend_kind(recorder) == backend_kind(LiveBackend()) == "live"
    replay = ReplayBackend(path)
    assert backend_kind(replay) == "replay"
    replay.release()


def test_trigger_does_what_each_kind_of_backend_needs(tmp_path: Path) -> None:
    done: list[object] = []

    def fire(backend: Backend) -> None:
        trigger(backend, live=lambda: done.append("live"), sim=done.append)

    sim = SimBackend()
    fire(sim)
    assert done == [sim.kernel]
    fire(LiveBackend())
    assert done[1:] == ["live"]
    replay = ReplayBackend(recorded_session(tmp_path, "test_trigger"))
    fire(replay)
    assert len(done) == 2  # a replay's recording holds what the event did
    replay.release()


def test_process_pid_is_the_pid_the_kernel_sees(tmp_path: Path) -> None:
    assert process_pid(LiveBackend()) == os.getpid()
    sim = SimBackend(Kernel(KernelConfig(pid=4321)))
    assert process_pid(sim) == 4321
    path = tmp_path / "pid.jsonl"
    with RecordingBackend(sim, path) as recorder:
        assert process_pid(recorder) == 4321
        bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=recorder).close()
    replay = ReplayBackend(path)
    assert process_pid(replay) == 4321
    replay.release()
    header, *rest = path.read_text().splitlines()
    older = {k: v for k, v in json.loads(header).items() if k != "pid"}  # before pids were
    path.write_text("\n".join([json.dumps(older), *rest]) + "\n")
    replay = ReplayBackend(path)
    with pytest.raises(ValueError, match="the recording has no pid"):
        process_pid(replay)
    replay.release()


# ---------------------------------------------------------------------------------------------
# The acceptance: the example's suite from its live recordings, with no kernel
# ---------------------------------------------------------------------------------------------
def example_replay_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "examples/tracepoint_counter",
        "-p",
        "no:cacheprovider",
        "-v",
        "-rs",
        "--bpf-backend=replay",
        f"--replay-scenarios={RECORDINGS}",
    ]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != pytest_plugin.BACKENDS_ENV}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def assert_the_example_replayed(done: subprocess.CompletedProcess[str]) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for name in REPLAYED_TESTS:
        assert f"test_syscall_counter.py::{name}[replay] PASSED" in output, output
    assert "7 passed" in output and "skipped" not in output, output


def test_the_recordings_are_there() -> None:
    """Recorded with `pytest examples/tracepoint_counter --bpf-backend=live
    --record-scenarios examples/tracepoint_counter/recordings` (as root)."""
    names = sorted(path.name for path in RECORDINGS.glob("*.jsonl"))
    prefix = "examples_tracepoint_counter_test_syscall_counter.py_"
    assert names == sorted(f"{prefix}{name}_live.jsonl" for name in REPLAYED_TESTS)
    for path in RECORDINGS.glob("*.jsonl"):
        replay = ReplayBackend(path)  # each loads and checks whole
        assert replay.scenario.header["recorded_on"] == "live"
        assert replay.recorded_pid is not None
        replay.release()


GUARD: Final = '''
"""No live kernel: any LiveBackend call fails the test that makes it."""
from bpfsys.backend import LiveBackend

def _refuse(self, *args, **kwargs):
    raise AssertionError("a live kernel call during a replay")

for _name in ("bpf", "perf_event_open", "ioctl", "mmap"):
    setattr(LiveBackend, _name, _refuse)
'''


def test_the_example_passes_from_its_recordings_with_live_calls_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "no_live_kernel.py").write_text(GUARD)
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    command = [*example_replay_command(), "-p", "no_live_kernel"]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert_the_example_replayed(done)


UNPRIVILEGED: Final = (
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=-all,+dac_read_search",
    "--ambient-caps=-all,+dac_read_search",
    "--bounding-set=-all,+dac_read_search",
)
"""uid/gid 65534 with one capability, CAP_DAC_READ_SEARCH: the interpreter may sit where only
root reads (a pyenv under /root); it gives nothing of bpf() or perf_event_open()."""
LIVE_PROBE: Final = """
import errno
from bpfsys.abi import BpfCmd, MapCreateAttr, MapType
from bpfsys.backend import LiveBackend
attr = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
try:
    LiveBackend().bpf(BpfCmd.MAP_CREATE, attr, len(bytes(attr)))
except OSError as exc:
    print(errno.errorcode[exc.errno])
else:
    print("ALLOWED")
"""


def unprivileged_unavailable_reason() -> str | None:
    """Why this machine cannot show the replay needs no privilege, or None."""
    if os.geteuid() != 0:
        return "becoming uid 65534 needs root"
    if shutil.which("setpriv") is None:
        return "no setpriv (util-linux) to run the suite as uid 65534"
    probe = subprocess.run(
        [*UNPRIVILEGED, sys.executable, "-c", LIVE_PROBE],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return f"python does not run as uid 65534 here: {probe.stderr.strip()[-300:]}"
    if probe.stdout.strip() != "EPERM":
        return (
            f"bpf() as uid 65534 answers {probe.stdout.strip()} here, not EPERM "
            "(kernel.unprivileged_bpf_disabled is 0?): passing would not prove no live call"
        )
    return None


def test_the_example_passes_from_its_recordings_as_nobody() -> None:
    """uid 65534 without CAP_BPF/CAP_SYS_ADMIN: any bpf() reaching the kernel fails with EPERM
    (checked first, by the probe), so the suite passing shows every call was the recording's."""
    reason = unprivileged_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    done = subprocess.run(
        [*UNPRIVILEGED, *example_replay_command()],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert_the_example_replayed(done)
