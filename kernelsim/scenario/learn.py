"""Asking a backend what an fd is: the questions the recorder asks that change nothing.

`learn_fd(backend, fd, kind)`: for an fd whose kind the command does not tell (OBJ_GET), the
``*_type:`` line of /proc/self/fdinfo/<fd> names it; for a map, OBJ_GET_INFO_BY_FD gives its
type, key and value sizes. Neither question is recorded; both work on the live and the
simulated kernel. A question that fails leaves the kind as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Final

from bpfsys.abi import BpfCmd, BpfMapInfo, InfoByFdAttr
from bpfsys.backend import Backend
from kernelsim.scenario.symbols import FdInfo

FDINFO_KINDS: Final = (("map_type:", "map"), ("prog_type:", "prog"), ("link_type:", "link"))


def learn_fd(backend: Backend, fd: int, kind: str) -> FdInfo:
    """What `fd` (just returned, of `kind`; "obj" when unknown) is."""
    if kind == "obj":
        with contextlib.suppress(OSError):
            text = backend.read_file(f"/proc/self/fdinfo/{fd}").decode(errors="replace")
            for marker, found in FDINFO_KINDS:
                if marker in text:
                    kind = found
                    break
    if kind != "map":
        return FdInfo(kind)
    info = BpfMapInfo()
    attr = InfoByFdAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    try:
        backend.bpf(BpfCmd.OBJ_GET_INFO_BY_FD, attr, ctypes.sizeof(attr))
    except OSError:
        return FdInfo("map")
    return FdInfo("map", int(info.type), int(info.key_size), int(info.value_size))
