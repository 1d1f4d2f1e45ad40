"""Raw bpf() helpers for the map tests: attrs built with bpfsys.abi, keys and values in ctypes
buffers passed by address, results as the return value or the errno's name ("ENOTSUPP" for 524).

`Maps` creates maps on one backend and closes every fd it made at the end, so the live half of a
test leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import errno
from typing import Any

import attrs

from bpfsys.abi import BpfCmd, MapBatchAttr, MapCreateAttr, MapElemAttr, MapType
from bpfsys.backend import Backend

Result = int | str
"""A bpf() return value, or the name of its errno."""
ENOTSUPP = 524


def errname(err: int) -> str:
    """The kernel's name of `err` (ENOTSUPP for 524, EOPNOTSUPP for 95)."""
    if err == ENOTSUPP:
        return "ENOTSUPP"
    if err == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(err, str(err))


def call(backend: Backend, cmd: BpfCmd, attr: Any) -> Result:
    """bpf(cmd, attr, sizeof(attr)): the return value or the errno's name."""
    try:
        return backend.bpf(cmd, attr, ctypes.sizeof(attr))
    except OSError as exc:
        return errname(exc.errno or 0)


def buf(data: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(data, len(data))


def room(size: int, fill: int = 0) -> ctypes.Array[ctypes.c_char]:
    """A buffer of `size` bytes, each `fill` (to see what the kernel wrote)."""
    return ctypes.create_string_buffer(bytes([fill]) * size, size)


def addr(buffer: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buffer is None else ctypes.addressof(buffer)


class Maps:
    """Creates maps (and closes them) on one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.fds: list[int] = []

    def create(
        self,
        map_type: int,
        key_size: int,
        value_size: int,
        max_entries: int,
        map_flags: int = 0,
        **fields: Any,
    ) -> Result:
        attr = MapCreateAttr(
            map_type=map_type,
            key_size=key_size,
            value_size=value_size,
            max_entries=max_entries,
            map_flags=map_flags,
            **fields,
        )
        result = call(self.backend, BpfCmd.MAP_CREATE, attr)
        if isinstance(result, int):
            self.fds.append(result)
        return result

    def new(
        self,
        map_type: int,
        key_size: int,
        value_size: int,
        max_entries: int,
        map_flags: int = 0,
        **fields: Any,
    ) -> int:
        """A map that must be created (the test's setup, not its subject)."""
        fd = self.create(map_type, key_size, value_size, max_entries, map_flags, **fields)
        assert isinstance(fd, int), f"creating {MapType(map_type).name} failed: {fd}"
        return fd

    def adopt(self, fd: int) -> int:
        """Close `fd` with the rest at the end."""
        self.fds.append(fd)
        return fd

    def close(self, fd: int) -> None:
        self.fds.remove(fd)
        self.backend.close(fd)

    def close_all(self) -> None:
        for fd in reversed(self.fds):
            self.backend.close(fd)
        self.fds.clear()


def elem(
    backend: Backend,
    cmd: BpfCmd,
    fd: int,
    key: bytes | None,
    value: ctypes.Array[ctypes.c_char] | None,
    flags: int = 0,
) -> Result:
    """One MapElemAttr command with `key` in a buffer (None: a NULL key)."""
    key_buf = None if key is None else buf(key)
    attr = MapElemAttr(map_fd=fd, key=addr(key_buf), value=addr(value), flags=flags)
    return call(backend, cmd, attr)


def lookup(
    backend: Backend, fd: int, key: bytes | None, size: int, flags: int = 0
) -> tuple[Result, bytes]:
    out = room(size)
    return elem(backend, BpfCmd.MAP_LOOKUP_ELEM, fd, key, out, flags), out.raw


def update(backend: Backend, fd: int, key: bytes | None, value: bytes, flags: int = 0) -> Result:
    return elem(backend, BpfCmd.MAP_UPDATE_ELEM, fd, key, buf(value), flags)


def delete(backend: Backend, fd: int, key: bytes | None) -> Result:
    return elem(backend, BpfCmd.MAP_DELETE_ELEM, fd, key, None)


def next_key(backend: Backend, fd: int, key: bytes | None, size: int) -> tuple[Result, bytes]:
    out = room(size)
    return elem(backend, BpfCmd.MAP_GET_NEXT_KEY, fd, key, out), out.raw


def lookup_and_delete(
    backend: Backend, fd: int, key: bytes | None, size: int, flags: int = 0
) -> tuple[Result, bytes]:
    out = room(size)
    return elem(backend, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, fd, key, out, flags), out.raw


def freeze(backend: Backend, fd: int) -> Result:
    return elem(backend, BpfCmd.MAP_FREEZE, fd, None, None)


def all_keys(backend: Backend, fd: int, key_size: int) -> list[bytes]:
    """The GET_NEXT_KEY walk from NULL to ENOENT."""
    keys: list[bytes] = []
    key: bytes | None = None
    while True:
        result, found = next_key(backend, fd, key, key_size)
        if result == "ENOENT":
            return keys
        assert result == 0, result
        keys.append(found)
        key = found
        assert len(keys) < 100_000, "the walk does not end"


@attrs.frozen
class BatchOut:
    """What a batch command returned and wrote back."""

    result: Result
    count: int
    keys: bytes
    values: bytes
    out_batch: bytes


def batch(
    backend: Backend,
    cmd: BpfCmd,
    fd: int,
    count: int,
    *,
    keys: bytes = b"",
    values: bytes = b"",
    key_room: int = 0,
    value_room: int = 0,
    in_batch: bytes | None = None,
    out_size: int = 4,
    elem_flags: int = 0,
    flags: int = 0,
) -> BatchOut:
    """One batch command: `keys`/`values` are the input (update, delete), `*_room` the output
    space (lookups); out_batch starts as 0xee bytes."""
    key_buf = buf(keys.ljust(key_room, b"\0") or b"\0")
    value_buf = buf(values.ljust(value_room, b"\0") or b"\0")
    in_buf = None if in_batch is None else buf(in_batch)
    out_buf = room(out_size, 0xEE)
    attr = MapBatchAttr(
        in_batch=addr(in_buf),
        out_batch=addr(out_buf),
        keys=addr(key_buf),
        values=addr(value_buf),
        count=count,
        map_fd=fd,
        elem_flags=elem_flags,
        flags=flags,
    )
    result = call(backend, cmd, attr)
    return BatchOut(result, int(attr.count), key_buf.raw, value_buf.raw, out_buf.raw)


def fdinfo(backend: Backend, fd: int) -> dict[str, str]:
    lines = backend.read_file(f"/proc/self/fdinfo/{fd}").decode().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def lpm_key(prefixlen: int, *data: int) -> bytes:
    """An LPM trie key: the u32 prefix length, then the data bytes."""
    return prefixlen.to_bytes(4, "little") + bytes(data)


def mount_of(fs_type: str) -> str | None:
    """The first mount point of a filesystem of `fs_type` (cgroup2, cgroup), if any."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _, point, kind, *_ = line.split()
            if kind == fs_type:
                return point
    return None
