"""The two errors of the scenario package.

`ScenarioError` is a file that cannot be used (malformed, truncated, of a newer format version,
or naming a symbol it never bound): it names the file, the line and the reason. It is a
ValueError: bad data, not a failed system call.

`ScenarioDivergence` is code under replay that made another call than the recording holds: it
names the position and both calls, decoded. It is deliberately not an OSError, so that code
under test that handles OSError cannot swallow it.
"""

from __future__ import annotations

import json
from typing import Any


class ScenarioError(ValueError):
    """A scenario file that cannot be used: `path`, `line` (1-based; 0 for the whole file) and
    `reason`."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[str, int, str]]:
        return (type(self), (self.path, self.line, self.reason))


def show_call(call: dict[str, Any] | None) -> str:
    """One call (an event without its results) as compact JSON, or "nothing more"."""
    if call is None:
        return "nothing more (the recording ended)"
    return json.dumps(call, sort_keys=True, separators=(", ", ": "))


class ScenarioDivergence(Exception):
    """The code under replay made `actual` where the recording has `expected` (both decoded;
    `expected` None when the recording had ended)."""

    def __init__(
        self,
        path: str,
        line: int,
        expected: dict[str, Any] | None,
        actual: dict[str, Any],
        reason: str = "",
    ) -> None:
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"{path}:{line}: the code diverged from the recording{why}\n"
            f"  expected: {show_call(expected)}\n"
            f"  actual:   {show_call(actual)}"
        )
        self.path = path
        self.line = line
        self.expected = expected
        self.actual = actual
        self.reason = reason
