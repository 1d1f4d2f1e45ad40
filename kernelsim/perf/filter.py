"""The ftrace event filter (PERF_EVENT_IOC_SET_FILTER): parse a filter string, match records.

Theory of operation
-------------------
A port of kernel/trace/trace_events_filter.c, errors included, because its errnos are odd and
callers see them: `calc_stack` first counts predicates and parentheses (a ')' too many is
EPERM, a '(' too many ENOENT, an unclosed quote ESRCH: the kernel returns its internal -1, -2,
-3 as errnos; no predicate at all is EINVAL); `predicate_parse` then builds the branch program
of the kernel's three passes, and anything after a predicate other than "&&", "||", ")" or the
end is EPERM; `parse_pred` reads one "field op value" (an unknown field, an operator that does
not exist or does not fit the field, a value that is not a number for a numeric field or not a
quoted string for a string field: EINVAL). Numbers follow kstrtoull/kstrtoll with base 0
(0x hex, 0 octal), signed fields allow a leading '-'.

Matching (`EventFilter.matches`) runs the program as filter_match_preds does: each predicate
reads its field from the raw record (numbers by the field's size and signedness, static and
__data_loc strings, the current CPU and comm for the generic fields).
"""

from __future__ import annotations

import enum
import errno
import fnmatch
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from kernelsim.errors import fail
from kernelsim.perf.trace_event import (
    COMMON_FIELDS,
    GENERIC_FIELDS,
    EventField,
    FilterType,
    GenericField,
)

MAX_FILTER_STR_VAL: Final = 256
_NUM_BUF: Final = 24
_INVERT: Final = 1
_PROCESS_AND: Final = 2
_PROCESS_OR: Final = 4
_TOO_MANY_CLOSE: Final = -1
_TOO_MANY_OPEN: Final = -2
_MISSING_QUOTE: Final = -3


class Op(enum.Enum):
    """The filter operators in the kernel's search order ('<=' before '<')."""

    GLOB = "~"
    NE = "!="
    EQ = "=="
    LE = "<="
    LT = "<"
    GE = ">="
    GT = ">"
    BAND = "&"


class Match(enum.Enum):
    """How a string pattern matches (enum regex_type)."""

    FULL = "full"
    FRONT_ONLY = "front"
    MIDDLE_ONLY = "middle"
    END_ONLY = "end"
    GLOB = "glob"


Field = EventField | GenericField


@attrs.frozen
class Predicate:
    """One "field op value"."""

    field: Field
    op: Op
    number: int = 0
    pattern: bytes = b""
    match: Match = Match.FULL
    negate: bool = False


@attrs.frozen
class RecordContext:
    """What a predicate reads: the raw record, and the CPU and comm of the current task."""

    record: bytes
    cpu: int = 0
    comm: bytes = b""


@attrs.define
class _Entry:
    pred: Predicate | None
    target: int
    when_to_branch: bool = False


@attrs.frozen
class EventFilter:
    """A parsed filter: the kernel's predicate program."""

    text: str
    program: tuple[tuple[Predicate, bool, int], ...]
    """(predicate, when_to_branch, target): when the predicate's result equals when_to_branch,
    evaluation continues after entry `target`; running off the end (index n) is TRUE, reaching
    n + 1 is FALSE."""

    def matches(self, context: RecordContext) -> bool:
        """Whether the record passes the filter (filter_match_preds)."""
        index = 0
        count = len(self.program)
        while index < count:
            pred, when, target = self.program[index]
            index = target + 1 if _evaluate(pred, context) == when else index + 1
        return index == count


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------
def _isspace(c: int) -> bool:
    return c in b" \t\n\v\f\r"


def _isalnum(c: int) -> bool:
    return chr(c).isascii() and chr(c).isalnum()


def _calc_stack(s: bytes) -> tuple[int, int, int]:
    """(status, max parenthesis depth, predicates) as calc_stack counts them."""
    is_pred = False
    nr_preds = 0
    depth = 1
    max_depth = 1
    quote = 0
    i = 0
    while s[i]:
        c = s[i]
        i += 1
        if _isspace(c):
            continue
        if quote:
            if c == quote:
                quote = 0
            continue
        if c in b"'\"":
            quote = c
        elif c in b"|&" and s[i] == c:
            is_pred = False
            continue
        elif c == ord("("):
            is_pred = False
            depth += 1
            max_depth = max(max_depth, depth)
            continue
        elif c == ord(")"):
            is_pred = False
            if depth == 1:
                return _TOO_MANY_CLOSE, 0, 0
            depth -= 1
            continue
        if not is_pred:
            nr_preds += 1
            is_pred = True
    if quote:
        return _MISSING_QUOTE, 0, 0
    if depth != 1:
        return _TOO_MANY_OPEN, 0, 0
    return 0, max_depth, nr_preds


def _find_field(name: str, fields: Sequence[EventField]) -> Field | None:
    for event_field in (*fields, *COMMON_FIELDS):
        if event_field.name == name:
            return event_field
    for generic in GENERIC_FIELDS:
        if generic.name == name:
            return generic
    return None


def _field_type(field: Field) -> FilterType:
    return field.filter_type


def _kstrto(text: bytes, signed: bool) -> int | None:
    """kstrtoll / kstrtoull with base 0; None where the kernel fails."""
    negative = text.startswith(b"-")
    if negative and not signed:
        return None
    digits = text[1:] if negative else text
    if digits[:2].lower() == b"0x":
        base, digits = 16, digits[2:]
    elif digits.startswith(b"0") and len(digits) > 1:
        base, digits = 8, digits[1:]
    else:
        base = 10
    if not digits:
        return None
    try:
        value = int(digits.decode("ascii"), base)
    except ValueError:
        return None
    if signed:
        value = -value if negative else value
        return value if -(1 << 63) <= value < (1 << 63) else None
    return value if value < (1 << 64) else None


def _regex(pattern: bytes, op: Op) -> tuple[bytes, Match, bool]:
    """(search text, match type, negate) as filter_build_regex/filter_parse_regex build them."""
    if op is not Op.GLOB:
        return pattern, Match.FULL, False
    negate = pattern.startswith(b"!")
    if negate:
        pattern = pattern[1:]
    kind = Match.FULL
    for i, c in enumerate(pattern):
        if c == ord("*"):
            if i == 0:
                kind = Match.END_ONLY
            elif i == len(pattern) - 1:
                kind = Match.MIDDLE_ONLY if kind is Match.END_ONLY else Match.FRONT_ONLY
                pattern = pattern[:i]
                break
            else:
                return pattern, Match.GLOB, negate
        elif c in b"[?\\":
            return pattern, Match.GLOB, negate
    if pattern.startswith(b"*"):
        pattern = pattern[1:]
    return pattern, kind, negate


def _parse_pred(s: bytes, start: int, fields: Sequence[EventField]) -> tuple[int, Predicate]:
    """Parse the predicate at s[start:]; (characters used, predicate), or raise the errno."""
    i = start
    while _isspace(s[i]):
        i += 1
    name_start = i
    while _isalnum(s[i]) or s[i] == ord("_"):
        i += 1
    if i == name_start:
        fail(errno.EPERM, "filter: expected a field name")
    name = s[name_start:i].decode("ascii")
    field = _find_field(name, fields)
    if field is None:
        fail(errno.EINVAL, f"filter: no field {name!r}")
    while _isspace(s[i]):
        i += 1
    op = next((o for o in Op if s[i : i + len(o.value)] == o.value.encode()), None)
    if op is None:
        fail(errno.EINVAL, f"filter: no operator at {s[i:]!r}")
    i += len(op.value)
    while _isspace(s[i]):
        i += 1
    value_start = i
    ftype = _field_type(field)
    if s[i] in b"'\"":
        quote = s[i]
        if op not in (Op.NE, Op.GLOB, Op.EQ):
            fail(errno.EINVAL, f"filter: {op.value} does not apply to strings")
        if not ftype.is_string:
            fail(errno.EINVAL, f"filter: {name} is not a string field")
        i += 1
        while s[i] and s[i] != quote:
            i += 1
        if not s[i]:
            fail(errno.EINVAL, "filter: missing closing quote")
        text = s[value_start + 1 : i]
        if len(text) >= MAX_FILTER_STR_VAL:
            fail(errno.EINVAL, "filter: string operand too long")
        pattern, kind, negate = _regex(text, op)
        i += 1
        pred = Predicate(field, op, pattern=pattern, match=kind, negate=negate ^ (op is Op.NE))
        return i - start, pred
    if chr(s[i]).isdigit() or s[i] == ord("-"):
        if ftype.is_string:
            fail(errno.EINVAL, f"filter: {name} is a string field, the value must be quoted")
        if op is Op.GLOB:
            fail(errno.EINVAL, "filter: ~ does not apply to numbers")
        if s[i] == ord("-"):
            i += 1
        while _isalnum(s[i]):
            i += 1
        text = s[value_start:i]
        if len(text) >= _NUM_BUF:
            fail(errno.EINVAL, "filter: number too long")
        number = _kstrto(text, field.signed)
        if number is None:
            fail(errno.EINVAL, f"filter: {text!r} is not a number for {name}")
        return i - start, Predicate(field, op, number=number, negate=op is Op.NE)
    fail(errno.EINVAL, f"filter: invalid value at {s[i:]!r} (did you forget quotes?)")


def _update_preds(prog: list[_Entry], n: int, invert: bool) -> None:
    t = prog[n].target
    s = prog[t].target
    prog[t].target = n
    prog[t].when_to_branch = invert
    prog[n].target = s


def parse_filter(text: str, fields: Sequence[EventField]) -> EventFilter:
    """The filter for `text` over an event with `fields`; the kernel's errno when it refuses."""
    s = text.encode("latin-1") + b"\0\0"
    status, nr_parens, nr_preds = _calc_stack(s)
    if status < 0:
        fail(-status, f"filter: unbalanced parentheses or quotes in {text!r}")
    if not nr_preds:
        fail(errno.EINVAL, "filter: no predicate")
    prog: list[_Entry] = []
    inverts: list[bool] = []
    stack = [0]
    invert = False
    ptr = 0
    while s[ptr]:
        c = s[ptr]
        ptr += 1
        if _isspace(c):
            continue
        if c == ord("("):
            if len(stack) - 1 > nr_parens:
                fail(errno.EINVAL, "filter: parentheses too deep")
            stack.append(int(invert))
            continue
        if c == ord("!") and s[ptr] not in b"=~":
            invert = not invert
            continue
        if len(prog) >= nr_preds + 2:
            fail(errno.EPERM, "filter: too many predicates")
        inverts.append(invert)
        used, pred = _parse_pred(s, ptr - 1, fields)
        prog.append(_Entry(pred, len(prog) - 1))
        ptr = ptr - 1 + used
        n = len(prog)
        while True:
            c = s[ptr]
            ptr += 1
            if _isspace(c):
                continue
            if c in b"&|":
                if s[ptr] != c:
                    fail(errno.EPERM, f"filter: single {chr(c)!r}")
                ptr += 1
            elif c not in b")\0":
                fail(errno.EPERM, f"filter: unexpected {chr(c)!r} after a predicate")
            invert = bool(stack[-1] & _INVERT)
            if stack[-1] & _PROCESS_AND:
                _update_preds(prog, n - 1, invert)
                stack[-1] &= ~_PROCESS_AND
            if c == ord("&"):
                stack[-1] |= _PROCESS_AND
                break
            if stack[-1] & _PROCESS_OR:
                _update_preds(prog, n - 1, not invert)
                stack[-1] &= ~_PROCESS_OR
            if c == ord("|"):
                stack[-1] |= _PROCESS_OR
                break
            if c == 0:
                ptr -= 1
                break
            if len(stack) == 1:
                fail(errno.EPERM, "filter: too many ')'")
            stack.pop()
    if len(stack) != 1:
        fail(errno.EPERM, "filter: too many '('")
    if not prog:
        fail(errno.EINVAL, "filter: no predicate")
    return EventFilter(text, _finish(prog, inverts))


def _finish(prog: list[_Entry], inverts: list[bool]) -> tuple[tuple[Predicate, bool, int], ...]:
    """The kernel's passes #13, two and three over the first-pass program."""
    n = len(prog)
    prog += [_Entry(None, 1), _Entry(None, 0)]
    prog[n - 1].target = n
    prog[n - 1].when_to_branch = False
    for i in range(n - 2, -1, -1):
        target = prog[i].target
        if prog[i].when_to_branch == prog[target].when_to_branch:
            prog[i].target = prog[target].target
    out: list[tuple[Predicate, bool, int]] = []
    for i in range(n):
        pred = prog[i].pred
        assert pred is not None
        when = inverts[i] ^ prog[i].when_to_branch
        target = prog[i].target
        if target <= i:
            fail(errno.EINVAL, "filter: program does not move forward")
        out.append((pred, when, target))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------
def _cstring(data: bytes) -> bytes:
    return data.split(b"\0", 1)[0]


def _string_value(field: Field, context: RecordContext) -> bytes:
    if isinstance(field, GenericField):
        return _cstring(context.comm)
    record = context.record
    raw = record[field.offset : field.offset + field.size]
    if field.filter_type is FilterType.DYN_STRING and len(raw) == 4:
        loc = int.from_bytes(raw, "little")
        start, length = loc & 0xFFFF, loc >> 16
        return _cstring(record[start : start + length])
    if field.filter_type is FilterType.STATIC_STRING:
        return _cstring(raw)
    return b""  # a char * points into memory the simulator does not model


def _string_matches(pred: Predicate, value: bytes) -> bool:
    pattern = pred.pattern
    if pred.match is Match.FULL:
        return value == pattern
    if pred.match is Match.FRONT_ONLY:
        return value.startswith(pattern)
    if pred.match is Match.MIDDLE_ONLY:
        return pattern in value
    if pred.match is Match.END_ONLY:
        return value.endswith(pattern)
    return fnmatch.fnmatchcase(value.decode("latin-1"), pattern.decode("latin-1"))


def _number_value(field: Field, context: RecordContext) -> int:
    if isinstance(field, GenericField):
        return context.cpu if field.filter_type is FilterType.CPU else 0
    raw = context.record[field.offset : field.offset + field.size].ljust(field.size, b"\0")
    return int.from_bytes(raw, "little", signed=field.signed)


_COMPARE: Final[dict[Op, Callable[[int, int], bool]]] = {
    Op.LT: lambda a, b: a < b,
    Op.LE: lambda a, b: a <= b,
    Op.GT: lambda a, b: a > b,
    Op.GE: lambda a, b: a >= b,
    Op.BAND: lambda a, b: bool(a & b),
    Op.EQ: lambda a, b: a == b,
    Op.NE: lambda a, b: a == b,  # negated by the predicate
}


def _evaluate(pred: Predicate, context: RecordContext) -> bool:
    if pred.field.filter_type.is_string:
        return _string_matches(pred, _string_value(pred.field, context)) ^ pred.negate
    size = min(pred.field.size, 8) * 8
    value = _number_value(pred.field, context)
    operand = pred.number & ((1 << size) - 1)
    if pred.field.signed and operand >= 1 << (size - 1):
        operand -= 1 << size
    return _COMPARE[pred.op](value, operand) ^ pred.negate
