"""What an fd is: the question the recorder asks of fds whose command does not tell.

An fd returned by OBJ_GET may be a map, a program or a link, and a map fd (from OBJ_GET or
MAP_GET_FD_BY_ID) needs its type, key and value sizes before the memory of later commands on it
can be measured. Its fdinfo answers both: the ``*_type:`` line names the kind, and a map's
``map_type``, ``key_size`` and ``value_size`` lines give the rest (the live and the simulated
kernel write the same lines). `fd_info_of(fields, kind)` reads them from fdinfo fields, so any
source of fdinfo will do:

* `learn_fd(backend, fd, kind)`: /proc/self/fdinfo/<fd> read through the backend, for code that
  holds the fd itself (the in-process recorder, `replay_against`): a question that changes
  nothing and is not recorded;
* an exec session's fd table: the kernel object the supervisor is about to hand over
  (`kernelsim.exec.record`), whose fdinfo fields are at hand without any call.

A question that fails leaves the kind as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Final

from bpfsys.backend import Backend
from kernelsim.scenario.symbols import FdInfo

FDINFO_KINDS: Final = (("map_type", "map"), ("prog_type", "prog"), ("link_type", "link"))
MAP_FIELDS: Final = ("map_type", "key_size", "value_size")


def parse_fdinfo(text: str) -> dict[str, str]:
    """The ``name: value`` lines of an fdinfo file as a dict."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def fd_info_of(fields: Mapping[str, str], kind: str) -> FdInfo:
    """What an fd of `kind` ("obj" when unknown) with these fdinfo fields is."""
    if kind == "obj":
        kind = next((found for marker, found in FDINFO_KINDS if marker in fields), kind)
    if kind != "map":
        return FdInfo(kind)
    try:
        map_type, key_size, value_size = (int(fields[name]) for name in MAP_FIELDS)
    except (KeyError, ValueError):
        return FdInfo("map")
    return FdInfo("map", map_type, key_size, value_size)


def learn_fd(backend: Backend, fd: int, kind: str) -> FdInfo:
    """What `fd` (just returned, of `kind`; "obj" when unknown) is, from its fdinfo."""
    with contextlib.suppress(OSError):
        text = backend.read_file(f"/proc/self/fdinfo/{fd}").decode(errors="replace")
        return fd_info_of(parse_fdinfo(text), kind)
    return FdInfo(kind)
