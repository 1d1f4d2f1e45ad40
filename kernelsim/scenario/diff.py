"""`diff_scenarios`: two recordings of one session, compared event by event.

The events are paired in order, calls with calls and ring events with ring events (the ring
events of one side that the other lacks are reported, not paired with calls). Each pair is
compared as `replay_against` compares results (volatile values match anything); an event only
one side has is a difference of its own. The headers' kernels are reported when they differ.
Typical use: the same program recorded on two kernels, or before and after a change.
"""

from __future__ import annotations

import os
from itertools import zip_longest

from kernelsim.scenario.against import Difference, EventResult, ReplayReport, compare, summary
from kernelsim.scenario.format import Event, Scenario, load_scenario


def _line(event: Event | None) -> int:
    return 0 if event is None else event.line


def diff_scenarios(
    a: str | os.PathLike[str] | Scenario, b: str | os.PathLike[str] | Scenario
) -> ReplayReport:
    """The differences between two scenarios (module docstring); lines are those of `a`
    (of `b` for events only `b` has)."""
    left = a if isinstance(a, Scenario) else load_scenario(a)
    right = b if isinstance(b, Scenario) else load_scenario(b)
    results: list[EventResult] = []
    kernel = compare(left.kernel, right.kernel, "kernel")
    if kernel:
        results.append(EventResult(1, "header", tuple(kernel)))
    pairs = zip_longest(left.events, right.events)
    for mine, theirs in pairs:
        if mine is None or theirs is None:
            present = mine if mine is not None else theirs
            assert present is not None
            side = "only in A" if mine is not None else "only in B"
            diff = Difference(
                "event", present.data if mine else None, None if mine else present.data
            )
            results.append(
                EventResult(_line(present), f"{summary(present.data)} ({side})", (diff,))
            )
            continue
        differences = compare(mine.data, theirs.data)
        results.append(EventResult(mine.line, summary(mine.data), tuple(differences)))
    return ReplayReport(left.path, right.path, tuple(results))
