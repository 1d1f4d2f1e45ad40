"""Exhaustive fault runs: fail every call of a scenario in turn, as eBPF-for-Windows' usersim
does, and report the call sites whose failure was mishandled.

Theory of operation
-------------------
`exhaustive_faults(scenario, make_backend, errnos)`:

1. *Counting run.* The scenario runs once on a fresh backend behind a `FaultBackend` with no
   rules; its calls are the call sites. It must pass and leak nothing: a scenario that fails
   or leaks without faults is a usage error (raised as it is, or as AssertionError).
2. *Faulted runs.* For each call site i and each errno e, the scenario runs again on a fresh
   backend, call i failing with e (`FaultPlan.fail_call(i, e)`). The run's outcome is
   ABSORBED (the scenario returned: the failure was handled), RAISED (an OSError came out --
   a SyscallError, or an OSError from a backend -- which is how a failure should surface),
   ESCAPED (anything else came out) or DIVERGED (call i of this run was another syscall or
   command than in the counting run: the scenario is not deterministic, and the site was not
   tested; fds and paths may differ, as names made unique per process do).
3. *Leaks.* After each run the exception (if any) is dropped and the garbage collected, with
   ResourceWarnings recorded -- each one names an fd or attachment that only the garbage
   collector closed -- and then a `LeakCheck` names the simulated fds left open, the kernel
   objects left alive and the fds and mappings left.

A site fails when its outcome is ESCAPED or DIVERGED or when it leaked. The scenario gets the
fault backend as its argument and as the current backend (`use_backend`).
"""

from __future__ import annotations

import contextlib
import enum
import errno as _errno
import gc
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias

import attrs

from bpfsys.backend import Backend, use_backend
from kernelsim.faults.backend import CallRecord, FaultBackend, Frame
from kernelsim.faults.leaks import LeakCheck
from kernelsim.faults.plan import NO_FAULTS, Call, FaultPlan, errno_name

if TYPE_CHECKING:
    from kernelsim.backend import SimBackend

__all__ = ["FaultReport", "Outcome", "Scenario", "SiteResult", "exhaustive_faults"]

Scenario: TypeAlias = Callable[[Backend], None]


class Outcome(enum.StrEnum):
    """What one faulted run did (rule 2)."""

    ABSORBED = "absorbed"
    RAISED = "raised"
    ESCAPED = "escaped"
    DIVERGED = "diverged"


def _tb_frames(tb: TracebackType | None, keep: int = 3) -> tuple[Frame, ...]:
    """The innermost `keep` frames of a traceback, innermost first."""
    frames: list[Frame] = []
    while tb is not None:
        frames.append(Frame.of(tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return tuple(reversed(frames[-keep:]))


@attrs.frozen
class _Error:
    """What came out of a run, without keeping the exception (and its frames) alive."""

    text: str
    errno: int | None
    is_os_error: bool
    raised_at: tuple[Frame, ...]

    @classmethod
    def of(cls, exc: Exception) -> _Error:
        err = exc.errno if isinstance(exc, OSError) else None
        return cls(
            f"{type(exc).__name__}: {exc}",
            err,
            isinstance(exc, OSError),
            _tb_frames(exc.__traceback__),
        )


@attrs.frozen
class _Run:
    calls: tuple[CallRecord, ...]
    error: _Error | None
    leaks: tuple[str, ...]


@contextlib.contextmanager
def _young_garbage() -> Iterator[None]:
    """Keep what the block allocates in the youngest generation (automatic collection off) and
    collect that generation on the way out: the block's cycles go, cheaply."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect(0)
        if enabled:
            gc.enable()


def _run(scenario: Scenario, backend: SimBackend, plan: FaultPlan, *, catch: bool) -> _Run:
    """One run of `scenario` on `backend` under `plan` (rule 3 for its leaks). With `catch`
    False an exception propagates as it is."""
    check = LeakCheck()
    check.watch(backend.kernel)
    faults = FaultBackend(backend, plan)
    error: _Error | None = None
    with warnings.catch_warnings(record=True) as caught, _young_garbage():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", ResourceWarning)
        try:
            with use_backend(faults):
                scenario(faults)
        except Exception as exc:
            if not catch:
                raise
            error = _Error.of(exc)
        calls = tuple(faults.calls)
    gc_closed = [f"{w.category.__name__}: {w.message}" for w in caught]
    return _Run(calls, error, (*gc_closed, *check.finish()))


@attrs.frozen
class SiteResult:
    """One call site failed with one errno, and what came of it."""

    site: CallRecord
    """The call as the counting run made it."""
    errno: int
    outcome: Outcome
    error: str | None = None
    """The exception that came out ("Type: message"), if any."""
    error_errno: int | None = None
    raised_at: tuple[Frame, ...] = ()
    """Where it was raised, innermost frame first."""
    leaks: tuple[str, ...] = ()
    diverged_call: Call | None = None
    """What the run did at this point instead (DIVERGED)."""

    @property
    def failed(self) -> bool:
        return self.outcome in (Outcome.ESCAPED, Outcome.DIVERGED) or bool(self.leaks)

    @property
    def errno_changed(self) -> bool:
        """An OSError came out with another errno than the one injected."""
        return self.outcome is Outcome.RAISED and self.error_errno != self.errno

    def format(self) -> str:
        head = (
            f"call #{self.site.index} {self.site.call} failing with {errno_name(self.errno)}: "
            f"{self.outcome.value}"
        )
        lines = [head, f"    called at {self.site.where}"]
        if self.diverged_call is not None:
            lines.append(f"    the run made {self.diverged_call} there instead")
        if self.error is not None:
            where = " <- ".join(str(frame) for frame in self.raised_at)
            lines.append(f"    {self.error}")
            lines.append(f"    raised at {where}")
        lines += [f"    leaked: {leak}" for leak in self.leaks]
        return "\n".join(lines)


@attrs.frozen
class FaultReport:
    """Every site x errno of an exhaustive run (module docstring)."""

    calls: tuple[CallRecord, ...]
    """The counting run's calls: the call sites."""
    errnos: tuple[int, ...]
    results: tuple[SiteResult, ...]

    @property
    def failures(self) -> list[SiteResult]:
        return [result for result in self.results if result.failed]

    @property
    def escapes(self) -> list[SiteResult]:
        return [result for result in self.results if result.outcome is Outcome.ESCAPED]

    @property
    def leaks(self) -> list[SiteResult]:
        return [result for result in self.results if result.leaks]

    @property
    def ok(self) -> bool:
        return not self.failures

    def outcomes(self) -> dict[Outcome, int]:
        """How many runs ended each way."""
        counts = dict.fromkeys(Outcome, 0)
        for result in self.results:
            counts[result.outcome] += 1
        return counts

    def summary(self) -> str:
        names = ", ".join(errno_name(err) for err in self.errnos)
        tally = ", ".join(f"{n} {outcome.value}" for outcome, n in self.outcomes().items() if n)
        return (
            f"{len(self.calls)} call sites x ({names}): {tally}; "
            f"{len(self.escapes)} escaped, {len(self.leaks)} leaked"
        )

    def format(self, *, every_site: bool = False) -> str:
        """The summary, then each failing site (every site with `every_site`)."""
        shown = self.results if every_site else self.failures
        return "\n".join([self.summary(), *(result.format() for result in shown)])

    def __str__(self) -> str:
        return self.format()

    def assert_ok(self) -> None:
        """AssertionError listing the failing sites, unless there are none."""
        if not self.ok:
            raise AssertionError(self.format())


def _judge(site: CallRecord, err: int, run: _Run) -> SiteResult:
    """Rule 2: the outcome of failing `site` with `err`."""
    reached = run.calls[site.index].call if site.index < len(run.calls) else None
    if reached is None or reached.kind != site.call.kind:
        return SiteResult(site, err, Outcome.DIVERGED, leaks=run.leaks, diverged_call=reached)
    if run.error is None:
        return SiteResult(site, err, Outcome.ABSORBED, leaks=run.leaks)
    outcome = Outcome.RAISED if run.error.is_os_error else Outcome.ESCAPED
    return SiteResult(
        site,
        err,
        outcome,
        error=run.error.text,
        error_errno=run.error.errno,
        raised_at=run.error.raised_at,
        leaks=run.leaks,
    )


def exhaustive_faults(
    scenario: Scenario,
    make_backend: Callable[[], SimBackend],
    errnos: Iterable[int] = (_errno.EPERM,),
    *,
    sites: Sequence[int] | None = None,
) -> FaultReport:
    """Run `scenario` once to count its calls, then once per call and errno with that call
    failing (module docstring); `make_backend` gives a fresh simulated backend per run.
    `sites` limits the faulted runs to those call numbers (default: every call)."""
    errs = tuple(errnos)
    if not errs or any(err <= 0 for err in errs):
        raise ValueError(f"errnos must be positive errno values, got {errs}")
    counting = _run(scenario, make_backend(), NO_FAULTS, catch=False)
    if counting.leaks:
        raise AssertionError(
            "the scenario leaks without faults:\n" + "\n".join(f"  {x}" for x in counting.leaks)
        )
    chosen = range(len(counting.calls)) if sites is None else sites
    results = [
        _judge(
            counting.calls[index],
            err,
            _run(scenario, make_backend(), FaultPlan.fail_call(index, err), catch=True),
        )
        for index in chosen
        for err in errs
    ]
    return FaultReport(counting.calls, errs, tuple(results))
