"""Fault plans: which calls fail, with which errno, and which perf ring writes go wrong.

Theory of operation
-------------------
A `FaultPlan` is data: frozen rules, decided without any I/O by an `Injector`, so the same plan
over the same sequence of calls fails the same calls every run.

Rules:

1. *Calls.* Every backend call is described as a `Call`: the syscall (`Syscall`), the bpf
   command or ioctl request (`command`), and the fd or path it names. A `Match` selects calls
   by syscall, command and path (an fnmatch pattern); a field left None matches anything, so
   ``Match()`` matches every call.
2. *Counting.* Each rule counts the calls it matches, on its own, from 1. A rule with `nth`
   fires on its n-th match only (once); a rule with `probability` fires on each match with that
   probability, drawn from its own ``random.Random(seed)``, one draw per match -- so whether a
   rule fires never depends on the other rules.
3. *First rule wins.* Every matching rule counts the call; the first (in plan order) that fires
   decides it, and the call fails with that rule's errno instead of reaching the kernel.
4. *Ring writes.* `RingRule`s count the records the simulated kernel writes into perf rings
   (forward rings; write_backward rings are left alone) and spoil the ones they fire on, as a
   `RingFault` says: DROP, TORN or SHORT (see `RingFault`). They follow rules 2 and 3 among
   themselves.
"""

from __future__ import annotations

import enum
import errno as _errno
import fnmatch
import random
from collections.abc import Iterable
from typing import Final

import attrs

from bpfsys.abi import BpfCmd, perf_ioctl_name

__all__ = [
    "NO_FAULTS",
    "Call",
    "FaultPlan",
    "FaultRule",
    "Injector",
    "Match",
    "RingFault",
    "RingInjector",
    "RingRule",
    "Syscall",
    "errno_name",
]


class Syscall(enum.StrEnum):
    """The calls of the `Backend` protocol."""

    BPF = "bpf"
    PERF_EVENT_OPEN = "perf_event_open"
    IOCTL = "ioctl"
    MMAP = "mmap"
    MUNMAP = "munmap"
    CLOSE = "close"
    READ_FILE = "read_file"
    WRITE_FILE = "write_file"
    POLL = "poll"


def errno_name(err: int) -> str:
    """EPERM, EINTR, ... (524 is the kernel's ENOTSUPP); the number when it has no name."""
    return "ENOTSUPP" if err == 524 else _errno.errorcode.get(err, str(err))


def _command_name(syscall: Syscall, command: int) -> str:
    if syscall is Syscall.BPF:
        try:
            return f"BPF_{BpfCmd(command).name}"
        except ValueError:
            return str(command)
    return perf_ioctl_name(command) if syscall is Syscall.IOCTL else str(command)


@attrs.frozen
class Call:
    """One backend call as rules see it."""

    syscall: Syscall = attrs.field(converter=Syscall)
    command: int | None = None
    """The bpf command or the ioctl request."""
    fd: int | None = None
    path: str | None = None

    @property
    def kind(self) -> tuple[Syscall, int | None]:
        """The syscall and command: what one run and the next must agree on (fds and paths
        may differ between them)."""
        return self.syscall, self.command

    def __str__(self) -> str:
        args: list[str] = []
        if self.command is not None:
            args.append(_command_name(self.syscall, self.command))
        if self.fd is not None:
            args.append(f"fd={self.fd}")
        if self.path is not None:
            args.append(repr(self.path))
        return f"{self.syscall.value}({', '.join(args)})"


def _optional_syscall(value: Syscall | str | None) -> Syscall | None:
    return None if value is None else Syscall(value)


@attrs.frozen
class Match:
    """Which calls a rule counts (rule 1): None fields match anything."""

    syscall: Syscall | None = attrs.field(default=None, converter=_optional_syscall)
    command: int | None = attrs.field(default=None)
    path: str | None = None
    """An fnmatch pattern for the path of read_file / write_file."""

    @command.validator
    def _check_command(self, _: object, value: int | None) -> None:
        if value is not None and self.syscall not in (Syscall.BPF, Syscall.IOCTL):
            raise ValueError("command only narrows bpf and ioctl calls")

    def matches(self, call: Call) -> bool:
        if self.syscall is not None and call.syscall is not self.syscall:
            return False
        if self.command is not None and call.command != self.command:
            return False
        return self.path is None or (
            call.path is not None and fnmatch.fnmatchcase(call.path, self.path)
        )

    def __str__(self) -> str:
        if self.syscall is None:
            return "any call"
        return str(Call(self.syscall, self.command, None, self.path))


def _check_when(nth: int | None, probability: float | None) -> None:
    """A rule fires on its `nth` match or with a `probability`: exactly one of the two."""
    if (nth is None) == (probability is None):
        raise ValueError("give exactly one of nth and probability")
    if nth is not None and nth < 1:
        raise ValueError(f"nth counts from 1, got {nth}")
    if probability is not None and not 0.0 < probability <= 1.0:
        raise ValueError(f"probability must be in (0, 1], got {probability}")


def _fires(nth: int | None, probability: float | None, count: int, rng: random.Random) -> bool:
    """Rule 2 for a rule's `count`-th match."""
    if nth is not None:
        return count == nth
    assert probability is not None
    return rng.random() < probability


def _when(nth: int | None, probability: float | None, seed: int) -> str:
    return f"match #{nth}" if nth is not None else f"p={probability} seed={seed}"


@attrs.frozen
class FaultRule:
    """Fail the calls `match` selects -- its `nth` match, or each with `probability` (drawn
    from `seed`) -- with `errno`."""

    match: Match = attrs.field(factory=Match)
    errno: int = attrs.field(default=_errno.EPERM, validator=attrs.validators.gt(0))
    nth: int | None = None
    probability: float | None = None
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        _check_when(self.nth, self.probability)

    def __str__(self) -> str:
        when = _when(self.nth, self.probability, self.seed)
        return f"{errno_name(self.errno)} on {self.match}, {when}"


class RingFault(enum.StrEnum):
    """What goes wrong with one record the simulated kernel writes into a perf ring."""

    DROP = "drop"
    """The record is not written and counts as lost, as if the ring were full: the next record
    that fits is preceded by PERF_RECORD_LOST."""
    TORN = "torn"
    """The record is written but data_head is published short of its end, as a reader racing
    the writer would see it: its header reaches past data_head (the reader's torn-record case)
    until the next record publishes the full head."""
    SHORT = "short"
    """The record is written whole but its header's size says 8 (the header alone), so a reader
    takes the rest of its bytes for records of their own."""


@attrs.frozen
class RingRule:
    """Spoil the `nth` record written into a perf ring (counted over every ring of the kernel
    mapped through the fault backend), or each with `probability`, as `fault` says."""

    fault: RingFault = attrs.field(converter=RingFault)
    nth: int | None = None
    probability: float | None = None
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        _check_when(self.nth, self.probability)

    def __str__(self) -> str:
        return f"{self.fault.value} ring record, {_when(self.nth, self.probability, self.seed)}"


def _call_rules(rules: Iterable[FaultRule]) -> tuple[FaultRule, ...]:
    return tuple(rules)


def _ring_rules(rules: Iterable[RingRule]) -> tuple[RingRule, ...]:
    return tuple(rules)


@attrs.frozen
class FaultPlan:
    """The rules of one run: call rules (`rules`) and ring rules (`ring`)."""

    rules: tuple[FaultRule, ...] = attrs.field(default=(), converter=_call_rules)
    ring: tuple[RingRule, ...] = attrs.field(default=(), converter=_ring_rules)

    @classmethod
    def fail_call(cls, index: int, err: int) -> FaultPlan:
        """Fail call number `index` (from 0) of the run, whatever it is, with `err`."""
        return cls((FaultRule(Match(), err, nth=index + 1),))

    def __str__(self) -> str:
        parts = [str(rule) for rule in (*self.rules, *self.ring)]
        return "; ".join(parts) if parts else "no faults"


class Injector:
    """Decides calls for a plan's call rules (rules 2 and 3); one per run."""

    def __init__(self, rules: tuple[FaultRule, ...]) -> None:
        self._rules = rules
        self._counts = [0] * len(rules)
        self._random = [random.Random(rule.seed) for rule in rules]

    def decide(self, call: Call) -> FaultRule | None:
        """The rule that fails `call`, or None to let it through."""
        fired: FaultRule | None = None
        for index, rule in enumerate(self._rules):
            if not rule.match.matches(call):
                continue
            self._counts[index] += 1
            hit = _fires(rule.nth, rule.probability, self._counts[index], self._random[index])
            if hit and fired is None:
                fired = rule
        return fired


class RingInjector:
    """Decides ring writes for a plan's ring rules (rules 2-4); one per run."""

    def __init__(self, rules: tuple[RingRule, ...]) -> None:
        self._rules = rules
        self._count = 0
        self._random = [random.Random(rule.seed) for rule in rules]

    def decide(self) -> RingFault | None:
        """The fault for the next record written into a forward ring, or None."""
        self._count += 1
        fired: RingFault | None = None
        for rule, rng in zip(self._rules, self._random, strict=True):
            if _fires(rule.nth, rule.probability, self._count, rng) and fired is None:
                fired = rule.fault
        return fired


NO_FAULTS: Final = FaultPlan()
"""The empty plan: every call goes through (a counting run)."""
