"""Pinning: a map pinned in the bpffs at /sys/fs/bpf, opened again by path (read-only too),
used through the new fds, and its pin removed; pinning onto an existing name fails."""

import contextlib
import os
import struct

from bpfsys import bpf
from bpfsys.abi import MapFlag, MapType
from bpfsys.syscall import SyscallError

PIN = "/sys/fs/bpf/kernelsim_scenario_map"
with contextlib.suppress(FileNotFoundError):
    os.unlink(PIN)
try:
    with bpf.map_create(MapType.HASH, 4, 4, 4, name="pinned") as fd:
        bpf.obj_pin(fd, PIN)
        try:
            bpf.obj_pin(fd, PIN)
        except SyscallError as exc:
            print("pin again: errno", exc.errno)
        bpf.map_update_elem(fd, struct.pack("<I", 1), struct.pack("<I", 7))
    with bpf.obj_get(PIN) as again:
        print("through the pin:", bpf.map_lookup_elem(again, struct.pack("<I", 1), 4))
    with bpf.obj_get(PIN, file_flags=MapFlag.RDONLY) as readonly:
        try:
            bpf.map_update_elem(readonly, struct.pack("<I", 2), struct.pack("<I", 8))
        except SyscallError as exc:
            print("update through a read-only fd: errno", exc.errno)
    try:
        bpf.obj_get("/sys/fs/bpf/kernelsim_no_such_pin")
    except SyscallError as exc:
        print("missing pin: errno", exc.errno)
finally:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(PIN)
