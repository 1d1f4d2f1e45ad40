"""The kernelsim pytest plugin, run the way users run it: inner pytest sessions (`pytester`)
over small test files, with the plugin loaded from its ``pytest11`` entry point."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys import bpf
from bpfsys.abi import MapType
from bpfsys.fd import OwnedFd
from bpfsys.perf_records import Sample
from kernelsim import pytest_plugin
from kernelsim.kernel import Kernel

pytest_plugins = ["pytester"]

HEADER = """
import errno, os
import pytest
from bpfsys import bpf
from bpfsys.abi import MapType
from bpfsys.backend import current_backend
from kernelsim.backend import SimBackend
"""


@pytest.fixture(scope="module", autouse=True)
def _simulator_loaded() -> None:
    """Boot a kernel in this process first: pytester drops the modules an inner session
    imported, and the simulator's subsystems register their handlers once per process."""
    Kernel()


@pytest.fixture(autouse=True)
def _default_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner sessions choose their backends themselves, whatever the outer run was given."""
    monkeypatch.delenv(pytest_plugin.BACKENDS_ENV, raising=False)


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=HEADER + textwrap.dedent(body))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


# ---------------------------------------------------------------------------------------------
# sim_kernel, sim_backend and the kernel marker
# ---------------------------------------------------------------------------------------------
def test_the_plugin_comes_from_its_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--bpf-backend=NAMES*", "*--record-scenarios=DIR*"])
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.kernel(**config):*", "@pytest.mark.allow_leaks:*"])


def test_sim_kernel_is_fresh_and_sim_backend_current(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        seen = []

        @pytest.mark.parametrize("round", [1, 2])
        def test_fresh(sim_kernel, sim_backend, round):
            assert sim_backend.kernel is sim_kernel
            assert current_backend() is sim_backend
            assert sim_kernel.live_objects() == {} and sim_kernel.open_fds() == []
            assert all(k is not sim_kernel for k in seen)
            seen.append(sim_kernel)
            with bpf.map_create(MapType.ARRAY, 4, 4, 1):
                assert sim_kernel.live_objects() == {"ArrayMap": 1}

        def test_default_profile(sim_kernel):
            from kernelsim.kernel import KernelConfig
            assert sim_kernel.config == KernelConfig()
        """,
    )
    result.assert_outcomes(passed=3)


def test_kernel_marker_configures_the_simulated_kernel(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from kernelsim.kernel import Privileges

        pytestmark = pytest.mark.kernel(version="5.4", cpus=4)

        def test_module_marker(sim_kernel):
            assert (str(sim_kernel.config.version), sim_kernel.config.cpus) == ("5.4", 4)

        @pytest.mark.kernel(cpus=8, privileges="cap_bpf")
        def test_closest_marker_wins_per_field(sim_backend):
            config = sim_backend.kernel.config
            assert (str(config.version), config.cpus) == ("5.4", 8)
            assert config.privileges is Privileges.CAP_BPF
            assert sim_backend.read_file("/sys/devices/system/cpu/possible") == b"0-7\\n"

        @pytest.mark.kernel(version="6.1")
        def test_factory_takes_marker_defaults(sim_backend_factory):
            a = sim_backend_factory()
            b = sim_backend_factory(cpus=1)
            assert (str(a.kernel.config.version), a.kernel.config.cpus) == ("6.1", 4)
            assert (str(b.kernel.config.version), b.kernel.config.cpus) == ("6.1", 1)
            assert current_backend() is not a
        """,
    )
    result.assert_outcomes(passed=3)


def test_a_bad_kernel_marker_is_an_error_naming_it(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.kernel(version="5.4", bogus=1)
        def test_unknown_field(sim_kernel):
            pass

        @pytest.mark.kernel(cpus=0)
        def test_bad_value(sim_backend):
            pass

        @pytest.mark.kernel("5.4")
        def test_positional(sim_kernel):
            pass
        """,
    )
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*test_unknown_field: kernel config {'version': '5.4', 'bogus': 1}: *bogus*",
            "*test_bad_value: kernel config {'cpus': 0}: *cpus*",
            "*test_positional: @pytest.mark.kernel takes KernelConfig fields as keyword*",
        ]
    )


# ---------------------------------------------------------------------------------------------
# bpf_backend
# ---------------------------------------------------------------------------------------------
BACKEND_PROBE = """
from bpfsys.backend import LiveBackend

def test_backend(bpf_backend, sim_kernel):
    assert current_backend() is bpf_backend
    if isinstance(bpf_backend, SimBackend):
        assert bpf_backend.kernel is sim_kernel
    else:
        assert isinstance(bpf_backend, LiveBackend)
    with bpf.map_create(MapType.ARRAY, 4, 4, 1) as fd:
        bpf.map_update_elem(fd, bytes(4), b"abcd")
        assert bpf.map_lookup_elem(fd, bytes(4), 4) == b"abcd"
"""


def test_bpf_backend_is_sim_by_default(pytester: pytest.Pytester) -> None:
    result = run(pytester, BACKEND_PROBE, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_backend[[]sim[]] PASSED*"])


def test_bpf_backend_runs_on_each_chosen_backend(pytester: pytest.Pytester) -> None:
    if pytest_plugin.live_unavailable_reason() is not None:
        pytest.skip(str(pytest_plugin.live_unavailable_reason()))
    result = run(pytester, BACKEND_PROBE, "-v", "--bpf-backend=live,sim")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*test_backend[[]live[]] PASSED*", "*test_backend[[]sim[]] PASSED*"]
    )


def test_the_environment_chooses_when_the_option_is_absent(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pytest_plugin.BACKENDS_ENV, "sim,live")
    result = run(pytester, BACKEND_PROBE, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_backend[[]sim[]]", "*test_backend[[]live[]]"])
    result = run(pytester, BACKEND_PROBE, "--collect-only", "-q", "--bpf-backend=sim")
    assert "live" not in result.stdout.str()


def test_an_unknown_backend_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run(pytester, BACKEND_PROBE, "--bpf-backend=sim,kvm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--bpf-backend: unknown backend(s) [[]'kvm'[]]; choose from sim, live, replay"]
    )


def test_live_is_skipped_with_the_reason_where_bpf_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        textwrap.dedent(
            """
            from kernelsim import pytest_plugin

            real = pytest_plugin.live_unavailable_reason

            def pytest_configure(config):
                pytest_plugin.live_unavailable_reason = lambda: "live kernel: bpf() not permitted"

            def pytest_unconfigure(config):
                pytest_plugin.live_unavailable_reason = real
            """
        )
    )
    result = run(pytester, BACKEND_PROBE, "-rs", "--bpf-backend=sim,live")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*live kernel: bpf() not permitted"])


def test_a_test_may_parametrize_bpf_backend_itself(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.parametrize("bpf_backend", ["sim"], indirect=True)
        def test_only_sim(bpf_backend):
            assert isinstance(bpf_backend, SimBackend)
        """,
        "--bpf-backend=sim,live",
    )
    result.assert_outcomes(passed=1)


def test_records_each_live_test(pytester: pytest.Pytester, tmp_path: Path) -> None:
    if pytest_plugin.live_unavailable_reason() is not None:
        pytest.skip(str(pytest_plugin.live_unavailable_reason()))
    from kernelsim.scenario import load_scenario

    folder = tmp_path / "recorded"
    probe = """
        from kernelsim.scenario import RecordingBackend

        def test_backend(bpf_backend):
            assert current_backend() is bpf_backend
            assert isinstance(bpf_backend, (SimBackend, RecordingBackend))
            with bpf.map_create(MapType.ARRAY, 4, 4, 1) as fd:
                bpf.map_update_elem(fd, bytes(4), b"abcd")
                assert bpf.map_lookup_elem(fd, bytes(4), 4) == b"abcd"
        """
    result = run(pytester, probe, "--bpf-backend=sim,live", f"--record-scenarios={folder}")
    result.assert_outcomes(passed=2)
    (recording,) = folder.iterdir()
    assert recording.name == "test_inner.py_test_backend_live.jsonl"
    scenario = load_scenario(recording)
    assert scenario.header["source"] == "pytest test_inner.py::test_backend[live]"
    assert [event.op for event in scenario.events] == ["bpf", "bpf", "bpf", "close"]


# ---------------------------------------------------------------------------------------------
# The leak check
# ---------------------------------------------------------------------------------------------
def test_a_simulated_fd_left_open_fails_the_test_with_its_object(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_leaks(sim_backend):
            bpf.map_create(MapType.HASH, 4, 8, 16, name="leaky").take()
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*test_leaks leaked (mark it allow_leaks to accept this):",
            "*- simulated fds left open: fd * <HashMap id=1 HASH key=4 value=8 max=16>",
        ]
    )


def test_allow_leaks_opts_out(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.allow_leaks
        def test_leaks(sim_kernel, sim_backend):
            bpf.map_create(MapType.HASH, 4, 8, 16).take()
        """,
    )
    result.assert_outcomes(passed=1)


def test_pinned_objects_are_no_leak(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_pins(sim_backend):
            with bpf.map_create(MapType.ARRAY, 4, 4, 1) as fd:
                bpf.obj_pin(fd, "/sys/fs/bpf/kept")
            assert sim_backend.kernel.live_objects() == {"ArrayMap": 1}
        """,
    )
    result.assert_outcomes(passed=1)


def test_teardown_runs_after_the_fixtures_that_use_the_kernel(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.fixture
        def counts(sim_backend):
            with bpf.map_create(MapType.HASH, 4, 8, 16) as fd:
                yield fd

        def test_uses_a_fixture_that_closes_late(counts):
            bpf.map_update_elem(counts, bytes(4), bytes(8))
        """,
    )
    result.assert_outcomes(passed=1)


def test_a_leaked_mapping_is_named(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from bpfsys.perf_buffer import PerfBuffer

        kept = []

        def test_keeps_the_mapping(sim_backend):
            buffer = PerfBuffer.open(0, 1)
            buffer.reader.release()
            kept.append(buffer.mapping)
            buffer.fd.close()

        def teardown_module():
            kept[0].close()
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*- mappings left: /memfd:perf_event_ring (deleted) x1"])


def test_an_object_kept_alive_without_fd_or_pin_is_named(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_holds_a_reference(sim_backend):
            with bpf.map_create(MapType.ARRAY, 4, 4, 1) as fd:
                sim_backend.kernel.fds.lookup(fd.fileno()).hold()
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*- kernel objects alive after every fd was closed and every pin removed: ArrayMap x1"]
    )


def test_factory_kernels_are_checked_and_named(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_two_kernels(sim_backend_factory):
            old = sim_backend_factory(version="5.4")
            new = sim_backend_factory()
            bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=new).take()
            bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=old).close()
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*- kernel 2 (6.18): simulated fds left open: fd * <ArrayMap *"])
    assert "kernel 1" not in result.stdout.str()


def test_a_live_fd_left_open_fails_the_test(pytester: pytest.Pytester) -> None:
    if pytest_plugin.live_unavailable_reason() is not None:
        pytest.skip(str(pytest_plugin.live_unavailable_reason()))
    result = run(
        pytester,
        """
        leaked = []

        def test_leaks(bpf_backend):
            leaked.append(bpf.map_create(MapType.ARRAY, 4, 4, 1).take())

        def teardown_module():
            os.close(leaked[0])
        """,
        "--bpf-backend=live",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*- fds left open: fd * (anon_inode:bpf-map)"])


# ---------------------------------------------------------------------------------------------
# Without fixtures
# ---------------------------------------------------------------------------------------------
def array_map() -> OwnedFd:
    return bpf.map_create(MapType.ARRAY, 4, 4, 1)


def test_checked_sim_backend_is_current_and_names_leaks() -> None:
    with pytest_plugin.checked_sim_backend(version="5.10", cpus=3) as sim:
        assert str(sim.kernel.config.version) == "5.10"
        with array_map() as fd:
            assert fd.backend is sim
    leaks = pytest.raises(AssertionError, match=r"simulated fds left open: fd \d+ <ArrayMap")
    with leaks, pytest_plugin.checked_sim_backend():
        array_map().take()


def test_checked_sim_backend_lets_the_block_s_error_through() -> None:
    with pytest.raises(KeyError), pytest_plugin.checked_sim_backend():
        array_map().take()
        raise KeyError("the test's own failure comes first")


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(0, 300), max_size=12))
def test_re_exports_serve_property_tests(lengths: list[int]) -> None:
    with pytest_plugin.checked_sim_backend() as sim:
        writer = pytest_plugin.SimPerfWriter(2 * sim.kernel.config.page_size, sim)
        try:
            written = [
                pytest_plugin.payload(seq, n)
                for seq, n in enumerate(lengths)
                if writer.output(pytest_plugin.payload(seq, n))
            ]
            raw = [r.raw or b"" for r in writer.reader.records() if isinstance(r, Sample)]
        finally:
            writer.close()
    assert [data[: len(want)] for data, want in zip(raw, written, strict=True)] == written


def test_strategies_are_re_exported() -> None:
    from kernelsim import strategies

    for name in ("perf_ring_machine", "ringbuf_machine", "ModelPerfWriter", "SimPerfWriter"):
        assert getattr(pytest_plugin, name) is getattr(strategies, name)
    with pytest.raises(AttributeError):
        _ = pytest_plugin.no_such_thing
