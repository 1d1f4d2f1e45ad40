"""The kernel's trace buffer as bpf_trace_printk fills it: `kernel.subsystem(TraceBuffer)`.

The interpreter appends one `TraceEvent` per bpf_trace_printk call; tracefs renders and serves
them (trace_pipe consumes with `take`, `trace` reads with `events`). Listeners registered with
`subscribe` are called after every append (e.g. to make trace_pipe readable for poll).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

TRACE_BUFFER_EVENTS: Final = 65536
"""Events kept before the oldest are overwritten (the ring of the real buffer, in events)."""


@attrs.frozen
class TraceEvent:
    """One bpf_trace_printk line: `message` is the formatted text (no trailing newline
    unless the format had one)."""

    timestamp_ns: int
    cpu: int
    pid: int
    comm: str
    message: bytes


class TraceBuffer:
    """The per-kernel trace buffer."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._events: deque[TraceEvent] = deque(maxlen=TRACE_BUFFER_EVENTS)
        self._listeners: list[Callable[[], None]] = []

    def append(self, event: TraceEvent) -> None:
        self._events.append(event)
        for listener in self._listeners:
            listener()

    def events(self) -> list[TraceEvent]:
        """Everything buffered, oldest first (what reading `trace` shows)."""
        return list(self._events)

    def take(self) -> list[TraceEvent]:
        """Everything buffered, removed from the buffer (what reading `trace_pipe` does)."""
        taken = list(self._events)
        self._events.clear()
        return taken

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)
