"""The kernelsim pytest plugin: simulated and live kernels as fixtures, with leak checks.

Registered through the ``pytest11`` entry point, so installing kernelsim enables it.

Fixtures
--------
``sim_kernel``
    A fresh `kernelsim.Kernel`, configured by the ``kernel`` marker.
``sim_backend``
    A `SimBackend` over ``sim_kernel``, made current (`bpfsys.backend.use_backend`) for the test.
``bpf_backend``
    Parametrized over the backends ``--bpf-backend`` names (``sim``, ``live``, ``replay``;
    default ``sim``, or $KERNELSIM_TEST_BACKENDS when set), made current, the ``bpf_backend``
    parameter first in the test id (``test_x[live-3]``). ``sim`` is ``sim_backend``; ``live``
    is a `LiveBackend` -- skipped, with the reason, where this process may not use bpf() -- and,
    with ``--record-scenarios DIR``, the recorder around it; ``replay`` is a `ReplayBackend`
    over the recording of the test's ``live`` run in ``--replay-scenarios DIR`` (below).
``sim_backend_factory``
    ``make(**config)`` -> a new `SimBackend` over ``Kernel(KernelConfig(**config))``, the
    ``kernel`` marker's settings as defaults; not made current.

Markers
-------
``@pytest.mark.kernel(version="5.4", cpus=4, privileges="cap_bpf", ...)``
    Any `KernelConfig` field, for the simulated kernels of the test (the closest marker wins
    per field). The live kernel is what it is: the marker does not apply to it.
``@pytest.mark.allow_leaks``
    Opt out of the leak check.

Leak check
----------
At teardown, after the test's other fixtures are gone, a `kernelsim.faults.LeakCheck` made at
setup names what the test left: on every simulated kernel the simulated fds still open and the
kernel objects alive once every fd is closed and every pin removed (pinned objects are no
leak); in the process the fds and mappings of kernel objects gained (how the live kernel's
leaks show). Any leak fails the test at teardown, with the names.

Replay
------
``--bpf-backend=replay --replay-scenarios DIR`` runs each ``bpf_backend`` test on the recording
``--record-scenarios DIR`` made of its ``live`` run (`scenario_path`: ``test_x[replay-3]`` is
answered by the file of ``test_x[live-3]``), with no kernel and no privilege. A test without a
recording is skipped, saying which file it lacks; a call that differs from the recorded one
fails the test with `ScenarioDivergence` (both calls decoded); a passing test that left
recorded calls unmade, or swallowed a divergence, fails at teardown, saying which.

What a test does *to the kernel* besides calls (a real getpid() that a tracepoint counts, a
simulated tracepoint fired) cannot be replayed, and need not be: its effects (map contents,
ring records) are in the recording. `trigger(backend, live=..., sim=...)` does it the way the
backend needs, and nothing on a replay; `process_pid(backend)` is the pid the backend's kernel
sees this process as (on a replay, the recorded process's), for tests that find their pid in
what the kernel wrote. `backend_kind(backend)` tells the three apart through any wrapper.

Property-based tests cannot use function-scoped fixtures; `checked_sim_backend(**config)` is
the same simulated backend and leak check as a context manager, and the state machines and
writers of `kernelsim.strategies` are re-exported here (imported when first used).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import pytest

from bpfsys.backend import Backend, DelegatingBackend, LiveBackend, use_backend

if TYPE_CHECKING:
    from kernelsim.backend import SimBackend
    from kernelsim.faults.leaks import LeakCheck
    from kernelsim.kernel import Kernel, KernelConfig
    from kernelsim.scenario import ReplayBackend
    from kernelsim.strategies import (
        ModelPerfWriter,
        ModelRingBufWriter,
        PerfRingWriter,
        ProgramPerfWriter,
        ProgramRingBufWriter,
        RingBufWriter,
        SimPerfWriter,
        payload,
        perf_ring_machine,
        program_writer_unavailable,
        ringbuf_machine,
    )

__all__ = [
    "BACKEND_NAMES",
    "BackendKind",
    "ModelPerfWriter",
    "ModelRingBufWriter",
    "PerfRingWriter",
    "ProgramPerfWriter",
    "ProgramRingBufWriter",
    "RingBufWriter",
    "SimPerfWriter",
    "backend_kind",
    "bpf_backend",
    "checked_sim_backend",
    "kernel_config",
    "kernelsim_leak_check",
    "live_unavailable_reason",
    "payload",
    "perf_ring_machine",
    "process_pid",
    "program_writer_unavailable",
    "ringbuf_machine",
    "scenario_path",
    "sim_backend",
    "sim_backend_factory",
    "sim_kernel",
    "trigger",
]

BACKEND_NAMES: Final = ("sim", "live", "replay")
BackendKind = Literal["sim", "live", "replay"]
RECORDED_BACKEND: Final = "live"
"""The backend whose runs ``--record-scenarios`` records and ``replay`` replays."""
BACKENDS_ENV: Final = "KERNELSIM_TEST_BACKENDS"
_STRATEGY_EXPORTS: Final = frozenset(
    {
        "ModelPerfWriter",
        "ModelRingBufWriter",
        "PerfRingWriter",
        "ProgramPerfWriter",
        "ProgramRingBufWriter",
        "RingBufWriter",
        "SimPerfWriter",
        "payload",
        "perf_ring_machine",
        "program_writer_unavailable",
        "ringbuf_machine",
    }
)
_backends_key = pytest.StashKey[tuple[str, ...]]()
_record_key = pytest.StashKey[Path | None]()
_replay_key = pytest.StashKey[Path | None]()
_call_passed_key = pytest.StashKey[bool]()
_UNSAFE_PATH_CHARS: Final = re.compile(r"[^A-Za-z0-9_.-]+")


def __getattr__(name: str) -> Any:
    """The re-exports of `kernelsim.strategies`, imported on first use (hypothesis is a test
    dependency; the plugin loads in every pytest run)."""
    if name in _STRATEGY_EXPORTS:
        return getattr(importlib.import_module("kernelsim.strategies"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kernelsim", "kernelsim: simulated and live bpf backends")
    group.addoption(
        "--bpf-backend",
        dest="bpf_backends",
        metavar="NAMES",
        default=None,
        help=(
            "comma-separated backends the bpf_backend fixture runs on: sim, live, replay "
            f"(default: ${BACKENDS_ENV} when set, else sim)"
        ),
    )
    group.addoption(
        "--record-scenarios",
        dest="record_scenarios",
        metavar="DIR",
        default=None,
        help="record each live bpf_backend test as a scenario file in DIR",
    )
    group.addoption(
        "--replay-scenarios",
        dest="replay_scenarios",
        metavar="DIR",
        default=None,
        help="the recordings (made with --record-scenarios DIR) that --bpf-backend=replay "
        "answers each bpf_backend test from",
    )


def _chosen_backends(config: pytest.Config) -> tuple[str, ...]:
    text = config.getoption("bpf_backends") or os.environ.get(BACKENDS_ENV) or "sim"
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in BACKEND_NAMES]
    if unknown or not names:
        raise pytest.UsageError(
            f"--bpf-backend: unknown backend(s) {unknown or [text]}; choose from "
            f"{', '.join(BACKEND_NAMES)}"
        )
    return names


def _record_folder(config: pytest.Config) -> Path | None:
    folder = config.getoption("record_scenarios")
    if folder is None:
        return None
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise pytest.UsageError(f"--record-scenarios: cannot make {folder}: {exc}") from None
    return path


def _replay_folder(config: pytest.Config, backends: tuple[str, ...]) -> Path | None:
    folder = config.getoption("replay_scenarios")
    if "replay" not in backends:
        return None
    if folder is None:
        raise pytest.UsageError(
            "--bpf-backend=replay needs --replay-scenarios DIR: the recordings to replay"
        )
    path = Path(folder)
    if not path.is_dir():
        raise pytest.UsageError(f"--replay-scenarios: {folder} is not a directory")
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel(**config): KernelConfig fields (version, cpus, privileges, ...) for the "
        "test's simulated kernels",
    )
    config.addinivalue_line(
        "markers", "allow_leaks: do not fail the test for the fds, mappings or objects it leaks"
    )
    backends = _chosen_backends(config)
    config.stash[_backends_key] = backends
    config.stash[_record_key] = _record_folder(config)
    config.stash[_replay_key] = _replay_folder(config, backends)


def _parametrized_by_test(metafunc: pytest.Metafunc, argname: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if argname in names:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bpf_backend" in metafunc.fixturenames and not _parametrized_by_test(
        metafunc, "bpf_backend"
    ):
        names = metafunc.config.stash[_backends_key]
        metafunc.parametrize("bpf_backend", names, indirect=True, ids=names)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Note whether the test itself passed (a replay's teardown checks only then)."""
    report = yield
    if report.when == "call":
        item.stash[_call_passed_key] = report.passed
    return report


# ---------------------------------------------------------------------------------------------
# Kernels and leak checks
# ---------------------------------------------------------------------------------------------
def kernel_config(node: pytest.Item | None = None, **overrides: Any) -> KernelConfig:
    """The KernelConfig of the ``kernel`` markers on `node` (the closest wins per field), with
    `overrides` on top; ValueError naming the problem for bad settings."""
    from kernelsim.kernel import KernelConfig

    settings: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("kernel")) if node is not None else []):
        if mark.args:
            raise ValueError(
                "@pytest.mark.kernel takes KernelConfig fields as keyword arguments only, "
                f"got {mark.args!r}"
            )
        settings.update(mark.kwargs)
    settings.update(overrides)
    try:
        return KernelConfig(**settings)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"kernel config {settings!r}: {exc}") from None


def _new_kernel(node: pytest.Item, check: LeakCheck, **overrides: Any) -> Kernel:
    """A watched kernel configured for `node`; a bad configuration fails the test."""
    from kernelsim.kernel import Kernel

    try:
        config = kernel_config(node, **overrides)
    except ValueError as exc:
        problem = str(exc)
    else:
        return check.watch(Kernel(config))
    pytest.fail(f"{node.nodeid}: {problem}", pytrace=False)


def _leak_failure(node: pytest.Item, leaks: list[str]) -> None:
    if leaks and node.get_closest_marker("allow_leaks") is None:
        listing = "\n".join(f"  - {leak}" for leak in leaks)
        pytest.fail(
            f"{node.nodeid} leaked (mark it allow_leaks to accept this):\n{listing}",
            pytrace=False,
        )


@pytest.fixture
def kernelsim_leak_check(request: pytest.FixtureRequest) -> Iterator[LeakCheck]:
    """The test's leak check: set up before the kernels it watches, finished after them."""
    from kernelsim.faults.leaks import LeakCheck

    check = LeakCheck()
    yield check
    _leak_failure(request.node, check.finish())


@pytest.fixture
def sim_kernel(request: pytest.FixtureRequest, kernelsim_leak_check: LeakCheck) -> Kernel:
    """A fresh simulated kernel configured by the ``kernel`` marker; leak-checked."""
    return _new_kernel(request.node, kernelsim_leak_check)


@pytest.fixture
def sim_backend(sim_kernel: Kernel) -> Iterator[SimBackend]:
    """A SimBackend over ``sim_kernel``, current for the test."""
    from kernelsim.backend import SimBackend

    backend = SimBackend(sim_kernel)
    with use_backend(backend):
        yield backend


@pytest.fixture
def sim_backend_factory(
    request: pytest.FixtureRequest, kernelsim_leak_check: LeakCheck
) -> Callable[..., SimBackend]:
    """``make(**config)``: a SimBackend over a new kernel, the marker's settings as defaults."""
    from kernelsim.backend import SimBackend

    def make(**config: Any) -> SimBackend:
        return SimBackend(_new_kernel(request.node, kernelsim_leak_check, **config))

    return make


@cache
def live_unavailable_reason() -> str | None:
    """Why the live kernel cannot be used by this process, or None when bpf() works (a
    one-entry ARRAY map is created and closed to find out)."""
    from bpfsys.abi import BpfCmd, MapCreateAttr, MapType

    try:
        backend = LiveBackend()
    except OSError as exc:
        return f"no live backend on this machine: {exc}"
    attr = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    try:
        fd = backend.bpf(BpfCmd.MAP_CREATE, attr, len(bytes(attr)))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return f"live kernel: bpf() not permitted for this process ({os.strerror(exc.errno)})"
        return f"live kernel: bpf() unavailable ({exc})"
    backend.close(fd)
    return None


def scenario_path(folder: Path, node: pytest.Item) -> Path:
    """Where ``--record-scenarios`` records the live run of `node`: its node id, made a file
    name, with the ``.jsonl`` of scenario files."""
    return _file_of(folder, node.nodeid)


def _file_of(folder: Path, nodeid: str) -> Path:
    return folder / (_UNSAFE_PATH_CHARS.sub("_", nodeid).strip("_") + ".jsonl")


def recorded_nodeid(node: pytest.Item) -> str | None:
    """The node id of the ``live`` run of `node`, a ``bpf_backend`` test on another backend:
    its backend's id (first in the test id) swapped for ``live``; None when the test id does
    not start with it (the test parametrizes ``bpf_backend`` itself)."""
    callspec = getattr(node, "callspec", None)
    if callspec is None or not isinstance(callspec.params.get("bpf_backend"), str):
        return None
    name = callspec.params["bpf_backend"]
    first, dash, rest = callspec.id.partition("-")
    if first != name:
        return None
    base = node.nodeid[: len(node.nodeid) - len(callspec.id) - 2]
    return f"{base}[{RECORDED_BACKEND}{dash}{rest}]"


def _replay_backend(request: pytest.FixtureRequest) -> ReplayBackend:
    """The replay of the test's recording; skipped without one, failed for a bad one."""
    from kernelsim.scenario import ReplayBackend, ScenarioError

    folder = request.config.stash[_replay_key]
    assert folder is not None  # pytest_configure made sure
    nodeid = recorded_nodeid(request.node)
    if nodeid is None:
        pytest.skip(f"no recording name for {request.node.nodeid}: its id lacks bpf_backend")
    path = _file_of(folder, nodeid)
    if not path.is_file():
        pytest.skip(
            f"no recording of {nodeid} in {folder} (make it with --bpf-backend={RECORDED_BACKEND}"
            f" --record-scenarios {folder})"
        )
    try:
        return ReplayBackend(path)
    except ScenarioError as exc:
        pytest.fail(f"{request.node.nodeid}: cannot replay {exc}", pytrace=False)


def _finish_replay(node: pytest.Item, replay: ReplayBackend) -> None:
    """After a passing test: every recorded call made, no divergence swallowed."""
    from kernelsim.scenario import ScenarioDivergence

    if not node.stash.get(_call_passed_key, False):
        replay.release()  # failed or skipped: what it left undone says nothing more
        return
    try:
        replay.finish()
    except ScenarioDivergence as exc:
        pytest.fail(f"{node.nodeid}: the replay ended unfinished: {exc}", pytrace=False)


@pytest.fixture
def bpf_backend(
    request: pytest.FixtureRequest, kernelsim_leak_check: LeakCheck
) -> Iterator[Backend]:
    """Each backend of ``--bpf-backend`` in turn, current for the test."""
    name = getattr(request, "param", request.config.stash[_backends_key][0])
    if name == "sim":
        yield request.getfixturevalue("sim_backend")
        return
    if name == "replay":
        replay = _replay_backend(request)
        try:
            with use_backend(replay):
                yield replay
        finally:
            _finish_replay(request.node, replay)
        return
    reason = live_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    folder = request.config.stash[_record_key]
    if folder is None:
        with use_backend(LiveBackend()) as live:
            yield live
        return
    from kernelsim.scenario import RecordingBackend

    path = scenario_path(folder, request.node)
    source = f"pytest {request.node.nodeid}"
    with RecordingBackend(LiveBackend(), path, source=source) as recorder, use_backend(recorder):
        yield recorder


# ---------------------------------------------------------------------------------------------
# What a test does to the kernel besides calls
# ---------------------------------------------------------------------------------------------
def _innermost(backend: Backend) -> Backend:
    """The backend under any delegating wrappers (recorder, fault injector)."""
    while isinstance(backend, DelegatingBackend):
        backend = backend.inner
    return backend


def _kernel_of(backend: Backend) -> Kernel | None:
    """The simulated kernel that answers `backend`, if one does."""
    kernel: Kernel | None = getattr(_innermost(backend), "kernel", None)
    return kernel


def backend_kind(backend: Backend) -> BackendKind:
    """What answers `backend`'s calls, through any wrapper: a simulated kernel (``sim``), a
    recording (``replay``), or the live kernel (``live``: anything else)."""
    from kernelsim.scenario import ReplayBackend

    if isinstance(_innermost(backend), ReplayBackend):
        return "replay"
    return "live" if _kernel_of(backend) is None else "sim"


def trigger(
    backend: Backend, *, live: Callable[[], object], sim: Callable[[Kernel], object]
) -> None:
    """Make the backend's kernel see an event that is no backend call: `live()` on the live
    kernel (a real system call the program under test counts), `sim(kernel)` on a simulated
    one (``kernel.fire_tracepoint(...)``), nothing on a replay, whose recording already holds
    what the event did (the map contents and ring records read after it)."""
    kind = backend_kind(backend)
    kernel = _kernel_of(backend)
    if kind == "live":
        live()
    elif kind == "sim" and kernel is not None:
        sim(kernel)


def process_pid(backend: Backend) -> int:
    """The pid the backend's kernel sees this process as: this process's on the live kernel,
    the simulated task's on a simulator, the recorded process's on a replay (ValueError for a
    recording that does not say)."""
    from kernelsim.scenario import ReplayBackend
    from kernelsim.scenario.recorder import caller_pid

    inner = _innermost(backend)
    if not isinstance(inner, ReplayBackend):
        return caller_pid(inner)  # what a recording of this backend writes as its pid
    if inner.recorded_pid is None:
        raise ValueError(f"{inner.path}: the recording has no pid (record it again)")
    return inner.recorded_pid


# ---------------------------------------------------------------------------------------------
# Without fixtures
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def checked_sim_backend(**config: Any) -> Iterator[SimBackend]:
    """A SimBackend over a new ``Kernel(KernelConfig(**config))``, current inside the block;
    on a clean exit, AssertionError naming whatever the block leaked (the kernel is torn down
    either way). For tests that cannot take fixtures, as hypothesis tests."""
    from kernelsim.backend import SimBackend
    from kernelsim.faults.leaks import LeakCheck
    from kernelsim.kernel import Kernel

    check = LeakCheck()
    backend = SimBackend(check.watch(Kernel(kernel_config(None, **config))))
    try:
        with use_backend(backend):
            yield backend
    except BaseException:
        check.finish()
        raise
    leaks = check.finish()
    if leaks:
        raise AssertionError("leaked:\n" + "\n".join(f"  - {leak}" for leak in leaks))
