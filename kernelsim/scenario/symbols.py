"""Symbols: the names a scenario gives to values that differ from one run to the next.

Theory of operation
-------------------
Rules (each is also a masking rule of docs/scenarios.md):

1. An fd that a backend call returned is ``$<kind><n>`` (``$map1``, ``$prog2``, ``$perf1``):
   kinds are map, prog, link, btf, perf, stats, iter, token and obj (an OBJ_GET fd whose kind
   could not be learned); n counts per kind from 1 in the order the fds were made and is never
   reused, even when the number is. Closing an fd unbinds its number. Any other number (an fd
   the backend did not make, a bogus one) stays a number.
2. An object id is ``@<space><n>`` (``@map1``, ``@prog1``, ``@link1``, ``@btf1``, and
   ``@perf1`` for perf event ids): n counts per space in order of first appearance.
3. A value read from a kernel file that names something is ``%<what>:<name>``: tracepoint ids
   (``events/<category>/<name>/id`` in tracefs) are ``%tp:<category>/<name>`` and dynamic PMU
   types (``/sys/bus/event_source/devices/<pmu>/type``) are ``%pmu:<pmu>``.
4. A mapping returned by mmap is ``%mmap<n>``.
5. Stand-ins: where a supervisor answers a traced program (`kernelsim exec`), the fd a call
   returns is the supervisor's stand-in, and the number the program holds is only known when
   the answer is delivered. A table made with ``stand_ins=True`` names a new fd at once but
   binds no number to it (the stand-in's number may be one of the program's numbers at that
   moment) until `deliver` says which number the program got; `withdraw` drops a stand-in
   that never reached the program.

A `SymbolTable` binds both ways. On the recording side every new value gets the next name; on a
replay the names come from the file and are bound to the values the new backend gives
(`bind_fd`, `bind_id`, `bind_named`). A `ReplayBackend` has no kernel: it invents the values
(`invent`: an id ``@map3`` is 3).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

import attrs

FD_KINDS: Final = ("map", "prog", "link", "btf", "perf", "stats", "iter", "token", "obj")
ID_SPACES: Final = ("map", "prog", "link", "btf", "perf")
_SYMBOL = re.compile(r"^([$@%])([a-z_]+)(\d+)$")


@attrs.define
class FdInfo:
    """What a scenario needs to know of an fd: its kind, and for maps and perf events the
    parameters that decide how long the memory of their commands is and what it holds."""

    kind: str
    map_type: int = 0
    key_size: int = 0
    value_size: int = 0
    sample_type: int = 0
    sample_id_all: bool = False


def is_symbol(value: object) -> bool:
    """Whether `value` is a symbol (a string starting with $, @ or %)."""
    return isinstance(value, str) and value[:1] in ("$", "@", "%")


def kind_of_symbol(symbol: object) -> str | None:
    """The kind a symbol names (``$map3`` -> "map"), or None for anything else."""
    match = _SYMBOL.match(symbol) if isinstance(symbol, str) else None
    return match.group(2) if match else None


def symbol_number(symbol: str) -> int | None:
    """The n of ``$map<n>`` / ``@map<n>``, or None."""
    match = _SYMBOL.match(symbol)
    return int(match.group(3)) if match else None


class SymbolTable:
    """Both-way bindings of fds, ids and named values to their symbols."""

    def __init__(self, *, invent: bool = False, stand_ins: bool = False) -> None:
        self.invent = invent
        self.stand_ins = stand_ins
        self._stand_in: dict[int, str] = {}
        self._counts: Counter[str] = Counter()
        self._fd_symbol: dict[int, str] = {}
        self._symbol_fd: dict[str, int] = {}
        self._fd_info: dict[str, FdInfo] = {}
        self._id_symbol: dict[tuple[str, int], str] = {}
        self._symbol_id: dict[str, int] = {}
        self._named_symbol: dict[tuple[str, int], str] = {}
        self._symbol_named: dict[str, int] = {}

    def _next(self, prefix: str, kind: str) -> str:
        self._counts[prefix + kind] += 1
        return f"{prefix}{kind}{self._counts[prefix + kind]}"

    # -- fds ----------------------------------------------------------------------------------
    def new_fd(self, fd: int, info: FdInfo, symbol: str | None = None) -> str:
        """Bind `fd` (just returned by a call) to `symbol`, or to the next name of its kind
        (a table of stand-ins keeps `fd` as a stand-in until `deliver`)."""
        name = self._next("$", info.kind) if symbol is None else symbol
        self._fd_info[name] = info
        if self.stand_ins:
            self._stand_in[fd] = name
        else:
            self.bind_fd(fd, name)
        return name

    def bind_fd(self, fd: int, symbol: str) -> None:
        """Bind the number `fd` to `symbol` (whatever the number was bound to is unbound)."""
        old = self._fd_symbol.pop(fd, None)
        if old is not None:
            self._symbol_fd.pop(old, None)
        self._fd_symbol[fd] = symbol
        self._symbol_fd[symbol] = fd

    def deliver(self, stand_in: int, fd: int) -> str | None:
        """The new fd named for `stand_in` reached the program as `fd`: bind it; its symbol
        (None when `stand_in` names none)."""
        name = self._stand_in.pop(stand_in, None)
        if name is not None:
            self.bind_fd(fd, name)
        return name

    def withdraw(self, stand_in: int) -> str | None:
        """The new fd named for `stand_in` never reached the program; its symbol, or None."""
        return self._stand_in.pop(stand_in, None)

    def close_fd(self, fd: int) -> str | None:
        """Unbind `fd` (closed); its symbol, or None when it had none."""
        name = self._fd_symbol.pop(fd, None)
        if name is not None:
            self._symbol_fd.pop(name, None)
        return name

    def fd_symbol(self, fd: int) -> str | None:
        return self._fd_symbol.get(fd)

    def fd_of(self, symbol: str) -> int | None:
        """The fd bound to `symbol` now (None: never bound, or closed)."""
        return self._symbol_fd.get(symbol)

    def info(self, symbol: str) -> FdInfo | None:
        return self._fd_info.get(symbol)

    def info_of_fd(self, fd: int) -> FdInfo | None:
        name = self._fd_symbol.get(fd)
        return None if name is None else self._fd_info.get(name)

    def open_fds(self) -> dict[str, int]:
        """Symbol -> fd of every fd bound now."""
        return dict(self._symbol_fd)

    # -- object ids ---------------------------------------------------------------------------
    def id_symbol(self, space: str, value: int) -> str:
        """The symbol of id `value` in `space`, named now when it is new."""
        key = (space, value)
        name = self._id_symbol.get(key)
        if name is None:
            name = self._id_symbol[key] = self._next("@", space)
            self._symbol_id[name] = value
        return name

    def bind_id(self, symbol: str, value: int) -> None:
        match = _SYMBOL.match(symbol)
        space = match.group(2) if match else symbol
        self._id_symbol[(space, value)] = symbol
        self._symbol_id[symbol] = value

    def id_of(self, symbol: str) -> int | None:
        value = self._symbol_id.get(symbol)
        if value is None and self.invent:
            value = symbol_number(symbol)
            if value is not None:
                self.bind_id(symbol, value)
        return value

    def has_id(self, space: str, value: int) -> bool:
        return (space, value) in self._id_symbol

    # -- named values (%tp:..., %pmu:...) ------------------------------------------------------
    def bind_named(self, symbol: str, value: int) -> None:
        kind = symbol.partition(":")[0]
        self._named_symbol[(kind, value)] = symbol
        self._symbol_named[symbol] = value

    def named_symbol(self, kind: str, value: int) -> str | None:
        """The symbol of `value` among the named values of `kind` ("%tp", "%pmu")."""
        return self._named_symbol.get((kind, value))

    def named_value(self, symbol: str) -> int | None:
        return self._symbol_named.get(symbol)

    # -- mappings -----------------------------------------------------------------------------
    def new_mapping(self) -> str:
        return self._next("%", "mmap")
