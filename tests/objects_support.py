"""Helpers for the objects-area tests (ids, info, bpffs, links, stats, BTF): raw bpf() calls
that report an errno name instead of raising, small objects to work with on either backend,
and bpffs mounts that exist on both the live kernel and the simulator."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from bpfsys.abi import (
    BpfCmd,
    BpfMapInfo,
    BtfLoadAttr,
    InfoByFdAttr,
    MapCreateAttr,
    MapType,
    ObjPinAttr,
    ProgLoadAttr,
    ProgType,
)
from bpfsys.backend import Backend
from kernelsim.backend import SimBackend
from kernelsim.bpffs import Bpffs

Result = int | str
"""A call's return value, or the errno's name ("EINVAL", "ENOTSUPP" for 524)."""

RETURN_ZERO = bytes.fromhex("b7000000000000009500000000000000")
"""mov r0, 0; exit"""


def errname(err: int | None) -> str:
    """The errno's name as the kernel source spells it (95 is EOPNOTSUPP for bpf)."""
    names = {524: "ENOTSUPP", errno.EOPNOTSUPP: "EOPNOTSUPP"}
    if err is None:
        return "no errno"
    return names.get(err) or errno.errorcode.get(err, str(err))


def bpf(backend: Backend, cmd: BpfCmd, attr: Any, size: int | None = None) -> Result:
    """backend.bpf(cmd, attr, size or sizeof(attr)): the result, or the errno's name."""
    try:
        return backend.bpf(cmd, attr, ctypes.sizeof(attr) if size is None else size)
    except OSError as exc:
        return errname(exc.errno)


def ok(result: Result) -> int:
    assert isinstance(result, int), f"expected success, got {result}"
    return result


def make_map(
    backend: Backend, map_type: MapType = MapType.ARRAY, max_entries: int = 1, name: bytes = b""
) -> int:
    attr = MapCreateAttr(
        map_type=map_type, key_size=4, value_size=4, max_entries=max_entries, map_name=name
    )
    return ok(bpf(backend, BpfCmd.MAP_CREATE, attr))


def load_prog(
    backend: Backend, prog_type: ProgType = ProgType.SOCKET_FILTER, expected_attach_type: int = 0
) -> int:
    """A program returning 0."""
    insns = ctypes.create_string_buffer(RETURN_ZERO, len(RETURN_ZERO))
    license = ctypes.create_string_buffer(b"GPL")
    attr = ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(RETURN_ZERO) // 8,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license),
        expected_attach_type=expected_attach_type,
    )
    return ok(bpf(backend, BpfCmd.PROG_LOAD, attr))


def info_call(
    backend: Backend, fd: int, info: Any, info_len: int | None = None, address: int | None = None
) -> tuple[Result, int]:
    """OBJ_GET_INFO_BY_FD: (result, the info_len written back)."""
    length = ctypes.sizeof(info) if info_len is None else info_len
    where = ctypes.addressof(info) if address is None else address
    attr = InfoByFdAttr(bpf_fd=fd, info_len=length, info=where)
    return bpf(backend, BpfCmd.OBJ_GET_INFO_BY_FD, attr), int(attr.info_len)


def info_of(backend: Backend, fd: int, info: Any, info_len: int | None = None) -> Result:
    return info_call(backend, fd, info, info_len)[0]


def map_id(backend: Backend, fd: int) -> int:
    info = BpfMapInfo()
    ok(info_of(backend, fd, info))
    return int(info.id)


def fdinfo(backend: Backend, fd: int) -> dict[str, str]:
    """/proc/self/fdinfo/<fd> as a dict, without mnt_id and ino (they differ by machine)."""
    text = backend.read_file(f"/proc/self/fdinfo/{fd}").decode()
    pairs = (line.split(":\t", 1) for line in text.splitlines())
    return {key: value for key, value in pairs if key not in ("mnt_id", "ino")}


def fdinfo_keys(backend: Backend, fd: int) -> list[str]:
    """The keys of /proc/self/fdinfo/<fd> in order."""
    text = backend.read_file(f"/proc/self/fdinfo/{fd}").decode()
    return [line.split(":", 1)[0] for line in text.splitlines()]


# -- BTF blobs --------------------------------------------------------------------------------
def btf_blob(
    types: bytes = b"",
    strings: bytes = b"\0",
    *,
    magic: int = 0xEB9F,
    version: int = 1,
    flags: int = 0,
    hdr_len: int = 24,
    type_len: int | None = None,
    str_off: int | None = None,
    str_len: int | None = None,
    extra_header: bytes = b"",
) -> bytes:
    header = struct.pack(
        "<HBBIIIII",
        magic,
        version,
        flags,
        hdr_len,
        0,
        len(types) if type_len is None else type_len,
        len(types) if str_off is None else str_off,
        len(strings) if str_len is None else str_len,
    )
    return header + extra_header + types + strings


def btf_int(name_off: int, size: int = 4, encoding: int = 1, bits: int = 32) -> bytes:
    return struct.pack("<IIII", name_off, 1 << 24, size, encoding << 24 | bits)


def btf_struct(name_off: int, size: int, members: list[tuple[int, int, int]]) -> bytes:
    record = struct.pack("<III", name_off, 4 << 24 | len(members), size)
    return record + b"".join(struct.pack("<III", *member) for member in members)


def btf_load(
    backend: Backend, blob: bytes, log_level: int = 0, log_size: int = 0
) -> tuple[Result, str, int]:
    """(result, log text, log_true_size) of BTF_LOAD."""
    data = ctypes.create_string_buffer(blob, max(len(blob), 1))
    log = ctypes.create_string_buffer(max(log_size, 1))
    attr = BtfLoadAttr(
        btf=ctypes.addressof(data),
        btf_size=len(blob),
        btf_log_level=log_level,
        btf_log_size=log_size,
        btf_log_buf=ctypes.addressof(log) if log_size else 0,
    )
    result = bpf(backend, BpfCmd.BTF_LOAD, attr)
    return result, log.value.decode(errors="replace"), int(attr.btf_log_true_size)


# -- pinning ------------------------------------------------------------------------------------
def pin(backend: Backend, fd: int, path: str, file_flags: int = 0, path_fd: int = 0) -> Result:
    name = ctypes.create_string_buffer(os.fsencode(path))
    attr = ObjPinAttr(
        pathname=ctypes.addressof(name), bpf_fd=fd, file_flags=file_flags, path_fd=path_fd
    )
    return bpf(backend, BpfCmd.OBJ_PIN, attr)


def obj_get(backend: Backend, path: str, file_flags: int = 0, path_fd: int = 0) -> Result:
    name = ctypes.create_string_buffer(os.fsencode(path))
    attr = ObjPinAttr(pathname=ctypes.addressof(name), file_flags=file_flags, path_fd=path_fd)
    return bpf(backend, BpfCmd.OBJ_GET, attr)


def unlink(backend: Backend, path: str) -> Result:
    """Remove a pin: os.unlink on the live kernel, Bpffs.unlink on the simulator."""
    try:
        if isinstance(backend, SimBackend):
            backend.kernel.subsystem(Bpffs).unlink(path)
        else:
            os.unlink(path)
    except OSError as exc:
        return errname(exc.errno)
    return 0


def mkdir(backend: Backend, path: str) -> Result:
    try:
        if isinstance(backend, SimBackend):
            backend.kernel.subsystem(Bpffs).mkdir(path)
        else:
            os.mkdir(path)
    except OSError as exc:
        return errname(exc.errno)
    return 0


def listdir(backend: Backend, path: str) -> list[str]:
    """The pins and folders in a bpffs folder (without the live kernel's preload files)."""
    if isinstance(backend, SimBackend):
        return backend.kernel.subsystem(Bpffs).listdir(path)
    return sorted(name for name in os.listdir(path) if not name.endswith(".debug"))


@contextlib.contextmanager
def bpffs_mount(backend: Backend) -> Iterator[str]:
    """A fresh bpffs at a new temporary folder (`mount -t bpf` on the live kernel,
    Bpffs.mount on the simulator); unmounted and removed afterwards."""
    where = tempfile.mkdtemp(prefix="kernelsim-bpffs-")
    try:
        if isinstance(backend, SimBackend):
            backend.kernel.subsystem(Bpffs).mount(where)
            yield where
            backend.kernel.subsystem(Bpffs).unmount(where)
        else:
            done = subprocess.run(
                ["mount", "-t", "bpf", "bpf", where], capture_output=True, check=False
            )
            if done.returncode:
                pytest.skip(f"cannot mount a bpffs: {done.stderr.decode().strip()}")
            try:
                yield where
            finally:
                subprocess.run(["umount", where], check=True)
    finally:
        shutil.rmtree(where, ignore_errors=True)
