"""The map types that hold kernel things (stack traces, cgroups, devices, CPUs, sockets) on every
backend: creation rules, element commands and sock map programs, as measured on Linux 6.18 with
2 possible CPUs, root, and lo as ifindex 1. The same assertions hold on the simulator and on the
live kernel; values that name a socket or cgroup are real fds of this process."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
from collections.abc import Iterator

import pytest
from maps_support import (
    Maps,
    all_keys,
    batch,
    call,
    delete,
    fdinfo,
    lookup,
    lookup_and_delete,
    mount_of,
    next_key,
    room,
    update,
)

from bpfsys import bpf
from bpfsys.abi import (
    AttachType,
    BpfCmd,
    MapFlag,
    MapType,
    ProgAttachAttr,
    ProgQueryAttr,
    ProgType,
)
from bpfsys.asm import assemble_text
from bpfsys.backend import Backend
from bpfsys.fd import OwnedFd

ST, CG, DEV, DEVH = MapType.STACK_TRACE, MapType.CGROUP_ARRAY, MapType.DEVMAP, MapType.DEVMAP_HASH
CPU, XSK, SM, SH = MapType.CPUMAP, MapType.XSKMAP, MapType.SOCKMAP, MapType.SOCKHASH
NUMA, RDONLY, WRONLY = MapFlag.NUMA_NODE, MapFlag.RDONLY, MapFlag.WRONLY
RDONLY_PROG, WRONLY_PROG, BUILD_ID = (
    MapFlag.RDONLY_PROG,
    MapFlag.WRONLY_PROG,
    MapFlag.STACK_BUILD_ID,
)
NO_PREALLOC, MMAPABLE = MapFlag.NO_PREALLOC, MapFlag.MMAPABLE
AF_XDP = 44
SO_COOKIE = 57


CGROUP2 = mount_of("cgroup2")
CGROUP1 = mount_of("cgroup")

Created = tuple[int, int, int]
"""(max_entries, map_flags, memlock) as fdinfo shows them."""

# (map_type, key_size, value_size, max_entries, map_flags) -> errno name or what fdinfo shows.
CREATE_CASES: dict[str, tuple[tuple[int, int, int, int, int], str | Created]] = {
    "stack 8": ((ST, 4, 8, 4, 0), (4, 0, 448)),
    "stack 127 frames": ((ST, 4, 127 * 8, 4, 0), (4, 0, 4480)),
    "stack 128 frames": ((ST, 4, 128 * 8, 4, 0), "EINVAL"),
    "stack value 0": ((ST, 4, 0, 4, 0), "EINVAL"),
    "stack value 12": ((ST, 4, 12, 4, 0), "EINVAL"),
    "stack key 8": ((ST, 8, 8, 4, 0), "EINVAL"),
    "stack max 0": ((ST, 4, 8, 0, 0), "EINVAL"),
    "stack max 3": ((ST, 4, 8, 3, 0), (3, 0, 424)),
    "stack max 100": ((ST, 4, 16, 100, 0), (100, 0, 4544)),
    "stack NUMA": ((ST, 4, 8, 4, NUMA), (4, NUMA, 448)),
    "stack RDONLY": ((ST, 4, 8, 4, RDONLY), (4, 0, 448)),
    "stack RDONLY|WRONLY": ((ST, 4, 8, 4, RDONLY | WRONLY), "EINVAL"),
    "stack build id 32": ((ST, 4, 32, 4, BUILD_ID), (4, BUILD_ID, 544)),
    "stack build id 24": ((ST, 4, 24, 4, BUILD_ID), "EINVAL"),
    "stack build id 127": ((ST, 4, 127 * 32, 4, BUILD_ID), (4, BUILD_ID, 16672)),
    "stack build id 128": ((ST, 4, 128 * 32, 4, BUILD_ID), "EINVAL"),
    "stack NO_PREALLOC": ((ST, 4, 8, 4, NO_PREALLOC), "EINVAL"),
    "stack RDONLY_PROG": ((ST, 4, 8, 4, RDONLY_PROG), "EINVAL"),
    "stack 2^31+1 ids": ((ST, 4, 8, (1 << 31) + 1, 0), "E2BIG"),
    "cgroup array": ((CG, 4, 4, 4, 0), (4, 0, 344)),
    "cgroup array x100": ((CG, 4, 4, 100, 0), (100, 0, 1112)),
    "cgroup array value 8": ((CG, 4, 8, 4, 0), "EINVAL"),
    "cgroup array key 8": ((CG, 8, 4, 4, 0), "EINVAL"),
    "cgroup array max 0": ((CG, 4, 4, 0, 0), "EINVAL"),
    "cgroup array RDONLY_PROG": ((CG, 4, 4, 4, RDONLY_PROG), "EINVAL"),
    "cgroup array MMAPABLE": ((CG, 4, 4, 4, MMAPABLE), "EINVAL"),
    "devmap": ((DEV, 4, 4, 4, 0), (4, RDONLY_PROG, 376)),
    "devmap value 8": ((DEV, 4, 8, 100, 0), (100, RDONLY_PROG, 1144)),
    "devmap value 12": ((DEV, 4, 12, 4, 0), "EINVAL"),
    "devmap key 8": ((DEV, 8, 4, 4, 0), "EINVAL"),
    "devmap max 0": ((DEV, 4, 4, 0, 0), "EINVAL"),
    "devmap NUMA": ((DEV, 4, 4, 4, NUMA), (4, NUMA | RDONLY_PROG, 376)),
    "devmap RDONLY_PROG given": ((DEV, 4, 4, 4, RDONLY_PROG), "EINVAL"),
    "devmap WRONLY_PROG": ((DEV, 4, 4, 4, WRONLY_PROG), "EINVAL"),
    "devmap NO_PREALLOC": ((DEV, 4, 4, 4, NO_PREALLOC), "EINVAL"),
    "devmap hash": ((DEVH, 4, 4, 4, 0), (4, RDONLY_PROG, 376)),
    "devmap hash 3 (4 buckets)": ((DEVH, 4, 8, 3, 0), (3, RDONLY_PROG, 376)),
    "devmap hash x100": ((DEVH, 4, 4, 100, 0), (100, RDONLY_PROG, 1368)),
    "devmap hash value 16": ((DEVH, 4, 16, 4, 0), "EINVAL"),
    "devmap hash 2^31+1": ((DEVH, 4, 4, (1 << 31) + 1, 0), "EINVAL"),
    "cpumap": ((CPU, 4, 4, 4, 0), (4, 0, 336)),
    "cpumap value 8": ((CPU, 4, 8, 2, 0), (2, 0, 320)),
    "cpumap NR_CPUS": ((CPU, 4, 4, 256, 0), (256, 0, 2352)),
    "cpumap NR_CPUS + 1": ((CPU, 4, 4, 257, 0), "E2BIG"),
    "cpumap value 12": ((CPU, 4, 12, 4, 0), "EINVAL"),
    "cpumap key 2": ((CPU, 2, 4, 4, 0), "EINVAL"),
    "cpumap max 0": ((CPU, 4, 4, 0, 0), "EINVAL"),
    "cpumap RDONLY": ((CPU, 4, 4, 4, RDONLY), "EINVAL"),
    "cpumap NUMA": ((CPU, 4, 4, 4, NUMA), (4, NUMA, 336)),
    "xskmap": ((XSK, 4, 4, 4, 0), (4, 0, 336)),
    "xskmap x100": ((XSK, 4, 4, 100, 0), (100, 0, 1104)),
    "xskmap value 8": ((XSK, 4, 8, 4, 0), "EINVAL"),
    "xskmap WRONLY": ((XSK, 4, 4, 4, WRONLY), (4, 0, 336)),
    "xskmap RDONLY_PROG": ((XSK, 4, 4, 4, RDONLY_PROG), "EINVAL"),
    "sockmap": ((SM, 4, 4, 4, 0), (4, 0, 408)),
    "sockmap value 8": ((SM, 4, 8, 100, 0), (100, 0, 1176)),
    "sockmap value 2": ((SM, 4, 2, 4, 0), "EINVAL"),
    "sockmap key 8": ((SM, 8, 4, 4, 0), "EINVAL"),
    "sockmap max 0": ((SM, 4, 4, 0, 0), "EINVAL"),
    "sockmap NUMA": ((SM, 4, 4, 4, NUMA), (4, NUMA, 408)),
    "sockmap NO_PREALLOC": ((SM, 4, 4, 4, NO_PREALLOC), "EINVAL"),
    "sockhash": ((SH, 4, 4, 4, 0), (4, 0, 448)),
    "sockhash key 2": ((SH, 2, 8, 3, 0), (3, 0, 448)),
    "sockhash x100": ((SH, 4, 4, 100, 0), (100, 0, 2432)),
    "sockhash key 0": ((SH, 0, 4, 4, 0), "EINVAL"),
    "sockhash key 512": ((SH, 512, 4, 1, 0), (1, 0, 400)),
    "sockhash key 513": ((SH, 513, 4, 1, 0), "E2BIG"),
    "sockhash value 16": ((SH, 4, 16, 4, 0), "EINVAL"),
    "sockhash 2^29 buckets": ((SH, 4, 4, (1 << 28) + 1, 0), "EINVAL"),
    "sockhash RDONLY_PROG": ((SH, 4, 4, 4, RDONLY_PROG), "EINVAL"),
}


@pytest.fixture
def maps(backend: Backend) -> Iterator[Maps]:
    made = Maps(backend)
    yield made
    made.close_all()


def shown(backend: Backend, fd: int) -> Created:
    info = fdinfo(backend, fd)
    return int(info["max_entries"]), int(info["map_flags"], 16), int(info["memlock"])


def memlock(backend: Backend, fd: int) -> int:
    return int(fdinfo(backend, fd)["memlock"])


def k(index: int) -> bytes:
    return index.to_bytes(4, "little")


def u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


@pytest.mark.parametrize("case", CREATE_CASES, ids=str)
def test_create(maps: Maps, case: str) -> None:
    args, expected = CREATE_CASES[case]
    result = maps.create(*args)
    if isinstance(expected, str):
        assert result == expected
    else:
        assert isinstance(result, int), result
        assert shown(maps.backend, result) == expected


def test_devmap_info_shows_rdonly_prog(backend: Backend) -> None:
    """The kernel adds BPF_F_RDONLY_PROG to devmaps itself; map info reports it."""
    with bpf.map_create(DEV, 4, 4, 2, flags=NUMA) as fd:
        assert bpf.map_info(fd).map_flags == NUMA | RDONLY_PROG


# -- STACK_TRACE -----------------------------------------------------------------------------
def test_stack_trace_empty(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(ST, 4, 16, 5)  # 8 stack ids
    assert lookup(b, fd, k(0), 16) == ("ENOENT", bytes(16))
    assert lookup(b, fd, k(7), 16)[0] == "ENOENT"
    assert lookup(b, fd, k(100), 16)[0] == "ENOENT"
    assert update(b, fd, k(0), bytes(16)) == "EINVAL"
    assert update(b, fd, k(0), bytes(16), 9) == "EINVAL"
    assert delete(b, fd, k(7)) == "ENOENT"
    assert delete(b, fd, k(8)) == "E2BIG"
    assert next_key(b, fd, None, 4)[0] == "ENOENT"
    assert next_key(b, fd, k(3), 4)[0] == "ENOENT"
    assert lookup_and_delete(b, fd, k(0), 16)[0] == "ENOENT"
    assert batch(b, BpfCmd.MAP_LOOKUP_BATCH, fd, 4, key_room=16, value_room=64).result == (
        "ENOTSUPP"
    )


# -- CGROUP_ARRAY ----------------------------------------------------------------------------
@pytest.fixture
def host_files() -> Iterator[dict[str, int]]:
    """Plain fds of this process: a cgroup2 directory (when mounted), a cgroup v1 directory, a
    file inside the cgroup2 directory, a regular file."""
    fds: dict[str, int] = {"file": os.open("/etc/hostname", os.O_RDONLY)}
    for name, path in (
        ("cgroup2", CGROUP2),
        ("cgroup1", CGROUP1),
        ("cgroup2 file", f"{CGROUP2}/cgroup.procs" if CGROUP2 else None),
    ):
        if path is not None:
            with contextlib.suppress(OSError):
                fds[name] = os.open(path, os.O_RDONLY)
    yield fds
    for fd in fds.values():
        os.close(fd)


def test_cgroup_array_fds(maps: Maps, host_files: dict[str, int]) -> None:
    b = maps.backend
    fd = maps.new(CG, 4, 4, 4)
    other_map = maps.new(MapType.ARRAY, 4, 4, 1)
    for name in ("file", "cgroup1", "cgroup2 file"):
        if name in host_files:
            assert update(b, fd, k(0), k(host_files[name])) == "EBADF", name
    assert update(b, fd, k(0), k(other_map)) == "EBADF"
    assert update(b, fd, k(0), k(9999)) == "EBADF"
    assert update(b, fd, k(0), k(0xFFFFFFFF)) == "EBADF"
    assert update(b, fd, k(4), k(9999)) == "E2BIG"  # the index before the fd
    assert update(b, fd, k(0), k(9999), 1) == "EINVAL"  # BPF_ANY only, before anything
    assert lookup(b, fd, k(0), 4)[0] == "ENOTSUPP"
    assert delete(b, fd, k(0)) == "ENOENT"
    assert delete(b, fd, k(4)) == "E2BIG"
    assert next_key(b, fd, None, 4) == (0, k(0))
    assert next_key(b, fd, k(3), 4)[0] == "ENOENT"
    assert lookup_and_delete(b, fd, k(0), 4)[0] == "ENOTSUPP"


def test_cgroup_array_holds_a_cgroup2_directory(maps: Maps, host_files: dict[str, int]) -> None:
    if "cgroup2" not in host_files:
        pytest.skip("no cgroup2 hierarchy mounted")
    b = maps.backend
    cgroup = host_files["cgroup2"]
    fd = maps.new(CG, 4, 4, 4)
    assert update(b, fd, k(1), k(cgroup)) == 0
    assert update(b, fd, k(1), k(cgroup), 2) == "EINVAL"
    assert lookup(b, fd, k(1), 4)[0] == "ENOTSUPP"
    assert memlock(b, fd) == 344
    read_only = maps.new(CG, 4, 4, 4, RDONLY)
    assert update(b, read_only, k(0), k(cgroup)) == "EPERM"
    assert delete(b, fd, k(1)) == 0
    assert delete(b, fd, k(1)) == "ENOENT"
    assert update(b, fd, k(3), k(cgroup)) == 0  # closing the map drops the cgroup


# -- DEVMAP / DEVMAP_HASH / CPUMAP: values with program fds ------------------------------------
RETURN_2 = assemble_text("mov %r0, 2\nexit")


@pytest.fixture
def xdp_progs(backend: Backend) -> Iterator[dict[str, OwnedFd]]:
    """XDP programs for each expected_attach_type, and a socket filter."""
    progs = {
        "xdp": bpf.prog_load(ProgType.XDP, RETURN_2),
        "devmap": bpf.prog_load(ProgType.XDP, RETURN_2, expected_attach_type=AttachType.XDP_DEVMAP),
        "cpumap": bpf.prog_load(ProgType.XDP, RETURN_2, expected_attach_type=AttachType.XDP_CPUMAP),
        "socket filter": bpf.prog_load(ProgType.SOCKET_FILTER, RETURN_2),
    }
    yield progs
    for prog in progs.values():
        prog.close()


def prog_id(prog: OwnedFd) -> int:
    return int(bpf.prog_info(prog).id)


def test_devmap(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(DEV, 4, 4, 4)
    assert memlock(b, fd) == 376
    assert update(b, fd, k(0), k(1)) == 0
    assert lookup(b, fd, k(0), 4) == (0, k(1))
    assert memlock(b, fd) == 440  # one device: + sizeof(bpf_dtab_netdev)
    assert update(b, fd, k(0), k(1)) == 0  # replacing keeps the item count
    assert memlock(b, fd) == 440
    assert update(b, fd, k(1), k(9999)) == "EINVAL"  # no such device
    assert update(b, fd, k(1), k(0)) == 0  # ifindex 0 leaves the slot empty...
    assert lookup(b, fd, k(1), 4)[0] == "ENOENT"
    assert memlock(b, fd) == 504  # ... but counts an item, as the kernel does
    assert update(b, fd, k(1), k(0)) == 0
    assert memlock(b, fd) == 568
    assert update(b, fd, k(4), k(1)) == "E2BIG"
    assert update(b, fd, k(4), k(9999)) == "E2BIG"  # the index before the device
    assert update(b, fd, k(3), k(1), 1) == "EEXIST"  # NOEXIST: slots always exist
    assert update(b, fd, k(3), k(1), 2) == 0
    assert update(b, fd, k(3), k(1), 3) == "EINVAL"
    assert update(b, fd, k(4), k(1), 3) == "EINVAL"  # flags before the index
    assert [next_key(b, fd, None if i is None else k(i), 4) for i in (None, 0, 3, 9)] == [
        (0, k(0)),
        (0, k(1)),
        ("ENOENT", k(0)),
        (0, k(0)),
    ]
    assert [delete(b, fd, k(i)) for i in (0, 0, 1, 3, 4, 9)] == [0, 0, 0, 0, "EINVAL", "EINVAL"]
    assert memlock(b, fd) == 504  # 4 items, 2 deleted: the ifindex-0 slot stays counted
    assert lookup_and_delete(b, fd, k(0), 4)[0] == "ENOTSUPP"
    out = batch(b, BpfCmd.MAP_UPDATE_BATCH, fd, 1, keys=k(0), values=k(1))
    assert (out.result, out.count) == ("ENOTSUPP", 1)


def test_devmap_programs(maps: Maps, xdp_progs: dict[str, OwnedFd]) -> None:
    b = maps.backend
    devmap = xdp_progs["devmap"].fileno()
    for map_type in (DEV, DEVH):
        fd = maps.new(map_type, 4, 8, 4)
        assert update(b, fd, k(0), k(1) + k(devmap)) == 0
        assert lookup(b, fd, k(0), 8) == (0, k(1) + k(prog_id(xdp_progs["devmap"])))
        for name in ("xdp", "cpumap", "socket filter"):
            assert update(b, fd, k(0), k(1) + k(xdp_progs[name].fileno())) == "EINVAL", name
        for bad in (fd, 9999):
            assert update(b, fd, k(0), k(1) + k(bad)) == "EINVAL"
        assert update(b, fd, k(0), k(1) + k(0)) == 0  # fd 0: no program
        assert lookup(b, fd, k(0), 8) == (0, k(1) + k(0))
        assert update(b, fd, k(0), k(1) + k(devmap)) == 0
        assert lookup(b, fd, k(0), 8) == (0, k(1) + k(prog_id(xdp_progs["devmap"])))
        assert update(b, fd, k(0), k(1) + k(0xFFFFFFFF)) == 0  # fd -1: no program
        assert lookup(b, fd, k(0), 8) == (0, k(1) + k(0))
        assert update(b, fd, k(1), k(0) + k(devmap)) == "EINVAL"  # a program without a device
        assert update(b, fd, k(2), k(9999) + k(9999)) == "EINVAL"
    xdp_progs["devmap"].close()  # the maps keep no reference once the slot is replaced


def test_devmap_hash(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(DEVH, 4, 4, 4)  # 4 buckets: key & 3
    assert update(b, fd, k(0), k(1)) == 0
    assert memlock(b, fd) == 440
    assert update(b, fd, k(1), k(0)) == "EINVAL"  # no device 0
    assert update(b, fd, k(1), k(9999)) == "EINVAL"
    assert update(b, fd, k(9), k(1), 2) == 0  # BPF_EXIST on an absent key is fine
    assert update(b, fd, k(9), k(1), 1) == "EEXIST"
    assert update(b, fd, k(9), k(1), 3) == "EINVAL"
    assert update(b, fd, k(4), k(1)) == 0  # bucket 0, in front of key 0
    assert update(b, fd, k(3), k(1)) == 0
    assert update(b, fd, k(6), k(1)) == "E2BIG"  # full (checked after the device)
    assert update(b, fd, k(6), k(9999)) == "EINVAL"
    assert memlock(b, fd) == 376 + 4 * 64
    assert all_keys(b, fd, 4) == [k(4), k(0), k(9), k(3)]  # buckets 0 (newest first), 1, 3
    assert update(b, fd, k(0), k(1)) == 0  # a replaced key moves to the front of its bucket
    assert all_keys(b, fd, 4) == [k(0), k(4), k(9), k(3)]
    assert next_key(b, fd, k(2), 4) == (0, k(0))  # an absent key restarts
    assert next_key(b, fd, k(3), 4)[0] == "ENOENT"
    assert [lookup(b, fd, k(i), 4)[0] for i in (0, 1, 3)] == [0, "ENOENT", 0]
    assert [delete(b, fd, k(i)) for i in (0, 0, 1, 3, 4)] == [0, "ENOENT", "ENOENT", 0, 0]
    assert memlock(b, fd) == 440


def test_cpumap(maps: Maps, xdp_progs: dict[str, OwnedFd]) -> None:
    b = maps.backend
    fd = maps.new(CPU, 4, 8, 4)
    cpumap = xdp_progs["cpumap"]
    assert update(b, fd, k(0), k(16) + k(0)) == 0
    assert lookup(b, fd, k(0), 8) == (0, k(16) + k(0))
    assert update(b, fd, k(1), k(0) + k(9999)) == 0  # qsize 0 empties (the fd is not read)
    assert lookup(b, fd, k(1), 8)[0] == "ENOENT"
    assert update(b, fd, k(1), k(16384) + k(0)) == 0
    assert update(b, fd, k(1), k(16385) + k(0)) == "EOVERFLOW"
    assert update(b, fd, k(2), k(16) + k(0)) == "ENODEV"  # 2 possible CPUs
    assert update(b, fd, k(2), k(16385) + k(9999)) == "EOVERFLOW"
    assert update(b, fd, k(4), k(16) + k(0)) == "E2BIG"
    assert update(b, fd, k(4), k(16) + k(0), 1) == "E2BIG"
    assert update(b, fd, k(4), k(16) + k(0), 3) == "EINVAL"
    assert update(b, fd, k(0), k(16) + k(0), 1) == "EEXIST"
    assert update(b, fd, k(0), k(16) + k(cpumap.fileno())) == 0
    assert lookup(b, fd, k(0), 8) == (0, k(16) + k(prog_id(cpumap)))
    for name in ("xdp", "devmap", "socket filter"):
        assert update(b, fd, k(0), k(16) + k(xdp_progs[name].fileno())) == "ENOMEM", name
    assert update(b, fd, k(0), k(16) + k(9999)) == "ENOMEM"
    assert update(b, fd, k(0), k(16) + k(0xFFFFFFFF)) == 0
    assert lookup(b, fd, k(0), 8) == (0, k(16) + k(0))
    assert [next_key(b, fd, None if i is None else k(i), 4)[0] for i in (None, 3, 9)] == [
        0,
        "ENOENT",
        0,
    ]
    assert [delete(b, fd, k(i)) for i in (0, 0, 3, 4)] == [0, 0, 0, "EINVAL"]
    assert lookup(b, fd, k(0), 8)[0] == "ENOENT"
    assert memlock(b, fd) == 336


# -- sockets: XSKMAP, SOCKMAP, SOCKHASH ------------------------------------------------------
@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    """One socket of each kind the sock map rules tell apart (closed at the end)."""
    made: list[socket.socket] = []

    def keep(sock: socket.socket) -> socket.socket:
        made.append(sock)
        return sock

    listener = keep(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = keep(socket.create_connection(listener.getsockname()))
    accepted = keep(listener.accept()[0])
    bound_tcp = keep(socket.socket())
    bound_tcp.bind(("127.0.0.1", 0))
    udp_bound = keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    udp_bound.bind(("127.0.0.1", 0))
    udp_connected = keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    udp_connected.connect(("127.0.0.1", 9))
    stream, _ = (keep(s) for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    dgram, _ = (keep(s) for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
    socks = {
        "tcp established": client,
        "tcp accepted": accepted,
        "tcp listening": listener,
        "tcp unconnected": keep(socket.socket()),
        "tcp bound": bound_tcp,
        "tcp6 unconnected": keep(socket.socket(socket.AF_INET6)),
        "udp unbound": keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
        "udp bound": udp_bound,
        "udp connected": udp_connected,
        "unix stream": stream,
        "unix stream unconnected": keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)),
        "unix dgram": dgram,
        "unix seqpacket": keep(socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)),
        "xdp": keep(socket.socket(AF_XDP, socket.SOCK_RAW)),
    }
    yield socks
    for sock in made:
        sock.close()


SOCK_MAP_VERDICTS = {
    "tcp established": 0,
    "tcp accepted": 0,
    "tcp listening": 0,
    "tcp unconnected": "EOPNOTSUPP",
    "tcp bound": "EOPNOTSUPP",
    "tcp6 unconnected": "EOPNOTSUPP",
    "udp unbound": "EOPNOTSUPP",
    "udp bound": 0,
    "udp connected": 0,
    "unix stream": 0,
    "unix stream unconnected": "EOPNOTSUPP",
    "unix dgram": 0,
    "unix seqpacket": "EOPNOTSUPP",
    "xdp": "EOPNOTSUPP",
}
"""What updating a sock map with each kind of socket gives (sock_map_sk_state_allowed)."""


def cookie(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8)


@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
@pytest.mark.parametrize("value_size", [4, 8])
def test_sock_map_sockets(
    maps: Maps, sockets: dict[str, socket.socket], map_type: int, value_size: int
) -> None:
    b = maps.backend
    fd = maps.new(map_type, 4, value_size, 4)
    for name, expected in SOCK_MAP_VERDICTS.items():
        sock = sockets[name]
        value = sock.fileno().to_bytes(value_size, "little")
        assert update(b, fd, k(1), value) == expected, name
        if expected == 0:
            found = lookup(b, fd, k(1), value_size)
            assert found == ((0, cookie(sock)) if value_size == 8 else ("ENOSPC", bytes(4)))
            assert delete(b, fd, k(1)) == 0
    other_map = maps.new(MapType.ARRAY, 4, 4, 1)
    for bad, err in ((other_map, "ENOTSOCK"), (0, "ENOTSOCK"), (9999, "EBADF")):
        assert update(b, fd, k(0), bad.to_bytes(value_size, "little")) == err
    too_big = 0x80000000 if value_size == 4 else 1 << 40
    assert update(b, fd, k(0), too_big.to_bytes(value_size, "little")) == "EINVAL"
    assert lookup(b, fd, k(2), value_size)[0] == ("ENOENT" if value_size == 8 else "ENOSPC")
    assert lookup_and_delete(b, fd, k(0), value_size)[0] == "ENOTSUPP"
    out = batch(b, BpfCmd.MAP_LOOKUP_BATCH, fd, 4, key_room=16, value_room=4 * value_size)
    assert (out.result, out.count) == ("ENOTSUPP", 4)


@pytest.mark.parametrize("map_type", [SM, SH], ids=["sockmap", "sockhash"])
def test_sock_map_elements(maps: Maps, sockets: dict[str, socket.socket], map_type: int) -> None:
    b = maps.backend
    fd = maps.new(map_type, 4, 8, 4)
    tcp = u64(sockets["tcp established"].fileno())
    unix = u64(sockets["unix stream"].fileno())
    flags = [update(b, fd, k(0), tcp, f) for f in (1, 2, 0, 1, 3, 4)]
    assert flags == [0, 0, 0, "EEXIST", "EINVAL", "EINVAL"]
    assert update(b, fd, k(1), tcp, 2) == "ENOENT"
    assert update(b, fd, k(3), tcp) == 0  # one socket under two keys
    assert update(b, fd, k(3), unix) == 0  # replaced
    assert lookup(b, fd, k(3), 8) == (0, cookie(sockets["unix stream"]))
    assert update(b, fd, k(0), u64(sockets["tcp unconnected"].fileno()), 3) == "EOPNOTSUPP"
    if map_type == SM:
        assert update(b, fd, k(4), tcp) == "E2BIG"
        assert update(b, fd, k(4), u64(sockets["udp unbound"].fileno())) == "EOPNOTSUPP"
        assert [delete(b, fd, k(i)) for i in (0, 0, 9)] == [0, "EINVAL", "EINVAL"]
        assert all_keys(b, fd, 4) == [k(0), k(1), k(2), k(3)]
        assert memlock(b, fd) == 408
    else:
        assert update(b, fd, k(7), tcp) == 0
        assert update(b, fd, k(8), unix) == 0
        assert update(b, fd, k(9), unix) == "E2BIG"  # 4 stored
        assert update(b, fd, k(9), u64(9999)) == "EBADF"
        assert sorted(all_keys(b, fd, 4)) == [k(0), k(3), k(7), k(8)]
        assert next_key(b, fd, k(5), 4)[0] == 0  # an absent key restarts the walk
        assert memlock(b, fd) == 448 + 4 * 56
        assert [delete(b, fd, k(i)) for i in (0, 0, 9)] == [0, "ENOENT", "ENOENT"]
        assert memlock(b, fd) == 448 + 3 * 56


def test_xskmap(maps: Maps, sockets: dict[str, socket.socket]) -> None:
    b = maps.backend
    fd = maps.new(XSK, 4, 4, 4)
    xdp = k(sockets["xdp"].fileno())
    other_xdp = socket.socket(AF_XDP, socket.SOCK_RAW)
    with other_xdp:
        assert update(b, fd, k(0), xdp) == 0
        assert lookup(b, fd, k(0), 4)[0] == "EOPNOTSUPP"
        assert lookup(b, fd, k(1), 4)[0] == "EOPNOTSUPP"
        assert update(b, fd, k(0), xdp, 1) == 0  # the same socket again: nothing to do
        assert update(b, fd, k(0), k(other_xdp.fileno()), 1) == "EEXIST"
        assert update(b, fd, k(1), xdp, 2) == "ENOENT"
        assert update(b, fd, k(1), xdp, 1) == 0
        assert update(b, fd, k(0), k(other_xdp.fileno()), 2) == 0
    assert update(b, fd, k(2), k(sockets["tcp established"].fileno())) == "EOPNOTSUPP"
    assert update(b, fd, k(2), k(fd)) == "ENOTSOCK"
    assert update(b, fd, k(2), k(9999)) == "EBADF"
    assert update(b, fd, k(2), k(0xFFFFFFFF)) == "EBADF"
    assert update(b, fd, k(4), k(9999)) == "E2BIG"  # the index before the fd
    assert update(b, fd, k(2), k(9999), 3) == "EINVAL"
    assert [delete(b, fd, k(i)) for i in (0, 0, 3, 4)] == [0, 0, 0, "EINVAL"]
    assert next_key(b, fd, k(3), 4)[0] == "ENOENT"
    assert lookup_and_delete(b, fd, k(1), 4)[0] == "ENOTSUPP"
    assert memlock(b, fd) == 336 + 32  # slot 1 still holds a socket: one xsk_map_node
    assert delete(b, fd, k(1)) == 0
    assert memlock(b, fd) == 336


# -- sock map programs ------------------------------------------------------------------------
AT = AttachType
RETURN_1 = assemble_text("mov %r0, 1\nexit")


@pytest.fixture
def sock_progs(backend: Backend) -> Iterator[dict[str, OwnedFd]]:
    progs = {
        "skb": bpf.prog_load(
            ProgType.SK_SKB, RETURN_1, expected_attach_type=AT.SK_SKB_STREAM_VERDICT
        ),
        "skb2": bpf.prog_load(ProgType.SK_SKB, RETURN_1),
        "msg": bpf.prog_load(ProgType.SK_MSG, RETURN_1, expected_attach_type=AT.SK_MSG_VERDICT),
        "xdp": bpf.prog_load(ProgType.XDP, RETURN_1),
    }
    yield progs
    for prog in progs.values():
        prog.close()


def attach_call(b: Backend, cmd: BpfCmd, target: int, prog: int, at: int, **kw: int) -> object:
    attr = ProgAttachAttr(target_fd=target, attach_bpf_fd=prog, attach_type=at, **kw)
    return call(b, cmd, attr)


def query(b: Backend, target: int, at: int, count: int = 4, flags: int = 0) -> tuple[object, ...]:
    """PROG_QUERY: (result, attach_flags, prog_cnt, the first id written)."""
    ids = room(8, 0xEE)
    attr = ProgQueryAttr(
        target_fd=target,
        attach_type=at,
        query_flags=flags,
        attach_flags=0xEE,
        prog_ids=ctypes.addressof(ids),
        prog_cnt=count,
    )
    result = call(b, BpfCmd.PROG_QUERY, attr)
    return result, attr.attach_flags, attr.prog_cnt, ids.raw[:4]


def test_sock_map_program_attach_detach_query(maps: Maps, sock_progs: dict[str, OwnedFd]) -> None:
    b = maps.backend
    sm, sh, array = maps.new(SM, 4, 4, 4), maps.new(SH, 4, 4, 4), maps.new(MapType.ARRAY, 4, 4, 1)
    skb, skb2, msg, xdp = (sock_progs[n].fileno() for n in ("skb", "skb2", "msg", "xdp"))
    skb_id, skb2_id, msg_id = (k(prog_id(sock_progs[n])) for n in ("skb", "skb2", "msg"))

    def attach(target: int, prog: int, at: int, **kw: int) -> object:
        return attach_call(b, BpfCmd.PROG_ATTACH, target, prog, at, **kw)

    def detach(target: int, prog: int, at: int, **kw: int) -> object:
        return attach_call(b, BpfCmd.PROG_DETACH, target, prog, at, **kw)

    verdict, parser, skb_verdict = (
        AT.SK_SKB_STREAM_VERDICT,
        AT.SK_SKB_STREAM_PARSER,
        AT.SK_SKB_VERDICT,
    )
    empty = b"\xee" * 4
    for at in (parser, verdict, skb_verdict, AT.SK_MSG_VERDICT):
        assert query(b, sm, at) == (0, 0, 0, empty)
    assert query(b, array, verdict) == ("EOPNOTSUPP", 0, 0, empty)  # written back anyway
    assert query(b, 9999, verdict) == ("EBADF", 0xEE, 4, empty)
    assert query(b, 0, verdict) == ("EINVAL", 0xEE, 4, empty)
    assert query(b, sm, verdict, flags=1) == ("EINVAL", 0xEE, 4, empty)
    assert attach(sm, skb, verdict) == 0
    assert query(b, sm, verdict) == (0, 0, 1, skb_id)
    assert query(b, sm, verdict, count=0) == (0, 0, 1, empty)
    assert query(b, sm, skb_verdict) == ("EBUSY", 0, 0, empty)
    assert attach(sm, skb2, verdict) == 0  # replaces
    assert query(b, sm, verdict) == (0, 0, 1, skb2_id)
    assert attach(sm, skb, skb_verdict) == "EBUSY"
    assert attach(sm, skb, parser) == 0
    assert attach(sm, msg, AT.SK_MSG_VERDICT) == 0
    assert query(b, sm, AT.SK_MSG_VERDICT) == (0, 0, 1, msg_id)
    assert attach(sm, skb, AT.SK_MSG_VERDICT) == "EINVAL"
    assert attach(sm, msg, verdict) == "EINVAL"
    assert attach(sm, xdp, verdict) == "EINVAL"
    assert attach(array, skb, verdict) == "EOPNOTSUPP"
    assert attach(9999, skb, verdict) == "EBADF"
    assert attach(0, skb, verdict) == "EINVAL"
    assert attach(sm, skb, verdict, attach_flags=1) == "EINVAL"
    assert attach(sm, skb, verdict, replace_bpf_fd=skb2) == "EINVAL"
    assert detach(sm, skb, verdict) == "ENOENT"  # skb2 is attached there
    assert detach(sm, skb2, verdict) == 0
    assert detach(sm, skb2, verdict) == "ENOENT"
    assert query(b, sm, verdict) == (0, 0, 0, empty)
    assert attach(sm, skb, skb_verdict) == 0
    assert detach(sm, skb, verdict) == "EBUSY"
    assert detach(sm, skb, AT.SK_MSG_VERDICT) == "EINVAL"
    assert detach(array, skb, verdict) == "EOPNOTSUPP"
    assert detach(9999, skb, verdict) == "EBADF"
    assert detach(sm, 9999, verdict) == "EBADF"
    assert detach(sm, 0, verdict) == "EINVAL"
    assert detach(sm, xdp, skb_verdict) == "EINVAL"
    assert detach(sm, skb, skb_verdict, attach_flags=1) == "EINVAL"
    assert attach(sh, skb, verdict) == 0
    sock_progs["skb"].close()  # the maps hold the program
    assert query(b, sm, skb_verdict) == (0, 0, 1, skb_id)
    assert query(b, sh, verdict) == (0, 0, 1, skb_id)


@pytest.mark.parametrize(
    "attached",
    [
        [AT.SK_SKB_STREAM_PARSER],
        [AT.SK_SKB_STREAM_VERDICT],
        [AT.SK_SKB_STREAM_PARSER, AT.SK_SKB_STREAM_VERDICT],
        [AT.SK_SKB_VERDICT],
        [AT.SK_MSG_VERDICT],
    ],
    ids=["parser", "verdict", "parser+verdict", "skb verdict", "msg"],
)
def test_sock_map_psock_conflicts(
    maps: Maps,
    sockets: dict[str, socket.socket],
    sock_progs: dict[str, OwnedFd],
    attached: list[int],
) -> None:
    """A socket's psock takes the programs of the sock map it joins: joining a second map with
    programs of the same kind is EBUSY; leaving the first map stops a running verdict (and its
    parser), while a msg parser or a lone parser stays until the socket leaves every sock map; a
    stream parser with a stream verdict needs TCP."""
    b = maps.backend
    first, second = maps.new(SM, 4, 4, 16), maps.new(SM, 4, 4, 16)
    for target in (first, second):
        for at in attached:
            prog = sock_progs["msg" if at == AT.SK_MSG_VERDICT else "skb"].fileno()
            assert attach_call(b, BpfCmd.PROG_ATTACH, target, prog, at) == 0
    plain = maps.new(SM, 4, 4, 16)
    strp = AT.SK_SKB_STREAM_PARSER in attached and AT.SK_SKB_STREAM_VERDICT in attached
    verdict = bool({AT.SK_SKB_STREAM_VERDICT, AT.SK_SKB_VERDICT} & set(attached))
    names = ["tcp established", "tcp listening", "udp bound", "unix stream", "unix dgram"]
    for index, name in enumerate(names):
        value = k(sockets[name].fileno())
        tcp = name.startswith("tcp")
        assert update(b, plain, k(index), value) == 0, name  # a psock without programs
        expected = 0 if tcp or not strp else "EOPNOTSUPP"
        assert update(b, first, k(index), value) == expected, name
        if expected != 0:
            continue
        assert update(b, second, k(index), value) == "EBUSY", name
        assert update(b, first, k(index + 8), value) == "EBUSY", name
        assert delete(b, first, k(index)) == 0
        still_in_plain = "EBUSY" if not verdict else 0
        assert update(b, second, k(index), value) == still_in_plain, name
        if still_in_plain:
            assert delete(b, plain, k(index)) == 0  # the psock goes with the last map
            assert update(b, second, k(index), value) == 0, name


# -- loading sock map and flow dissector programs: their context rules --------------------------
PKT_WRITE = """
    {load_data}
    {load_end}
    mov %r4, %r2
    add %r4, 8
    jgt %r4, %r3, +1
    stw [%r2+0], 1
    mov %r0, 0
    exit
"""
SKB_PKT = {"load_data": "ldxw %r2, [%r1+76]", "load_end": "ldxw %r3, [%r1+80]"}
MSG_PKT = {"load_data": "ldxdw %r2, [%r1+0]", "load_end": "ldxdw %r3, [%r1+8]"}
FK = "ldxdw %r2, [%r1+144]\n"
LOAD_CASES: dict[str, tuple[int, str, str | int]] = {
    "sk_skb read len": (ProgType.SK_SKB, "ldxw %r0, [%r1+0]", 0),
    "sk_skb read mark": (ProgType.SK_SKB, "ldxw %r0, [%r1+8]", "EACCES"),
    "sk_skb read tc_classid": (ProgType.SK_SKB, "ldxw %r0, [%r1+72]", "EACCES"),
    "sk_skb read family": (ProgType.SK_SKB, "ldxw %r0, [%r1+88]", 0),
    "sk_skb read byte of len": (ProgType.SK_SKB, "ldxb %r0, [%r1+1]", 0),
    "sk_skb read data_meta": (ProgType.SK_SKB, "ldxw %r0, [%r1+140]", "EACCES"),
    "sk_skb read tstamp": (ProgType.SK_SKB, "ldxdw %r0, [%r1+152]", "EACCES"),
    "sk_skb write priority": (ProgType.SK_SKB, "mov %r0, 1\nstxw [%r1+32], %r0", 0),
    "sk_skb write tc_index": (ProgType.SK_SKB, "mov %r0, 1\nstxw [%r1+44], %r0", 0),
    "sk_skb BPF_ST into ctx": (ProgType.SK_SKB, "stw [%r1+32], 1", "EACCES"),
    "sk_skb write len": (ProgType.SK_SKB, "mov %r0, 1\nstxw [%r1+0], %r0", "EACCES"),
    "sk_skb write cb": (ProgType.SK_SKB, "mov %r0, 1\nstxw [%r1+48], %r0", "EACCES"),
    "sk_skb packet write": (ProgType.SK_SKB, PKT_WRITE.format(**SKB_PKT), 0),
    "sk_msg read data": (ProgType.SK_MSG, "ldxdw %r0, [%r1+0]", 0),
    "sk_msg read half of data": (ProgType.SK_MSG, "ldxw %r0, [%r1+0]", "EACCES"),
    "sk_msg read family": (ProgType.SK_MSG, "ldxw %r0, [%r1+16]", 0),
    "sk_msg read remote_ip6[3]": (ProgType.SK_MSG, "ldxw %r0, [%r1+40]", 0),
    "sk_msg read size": (ProgType.SK_MSG, "ldxw %r0, [%r1+68]", 0),
    "sk_msg read port as u16": (ProgType.SK_MSG, "ldxh %r0, [%r1+60]", "EACCES"),
    "sk_msg read sk": (ProgType.SK_MSG, "ldxdw %r2, [%r1+72]\nmov %r0, 0", 0),
    "sk_msg read past the end": (ProgType.SK_MSG, "ldxw %r0, [%r1+80]", "EACCES"),
    "sk_msg write family": (ProgType.SK_MSG, "mov %r0, 1\nstxw [%r1+16], %r0", "EACCES"),
    "sk_msg packet write": (ProgType.SK_MSG, PKT_WRITE.format(**MSG_PKT), 0),
    "flow dissector read data": (ProgType.FLOW_DISSECTOR, "ldxw %r0, [%r1+76]", 0),
    "flow dissector read len": (ProgType.FLOW_DISSECTOR, "ldxw %r0, [%r1+0]", "EACCES"),
    "flow dissector read flow_keys as u32": (
        ProgType.FLOW_DISSECTOR,
        "ldxw %r0, [%r1+144]",
        "EACCES",
    ),
    "flow dissector write data": (
        ProgType.FLOW_DISSECTOR,
        "mov %r0, 1\nstxw [%r1+76], %r0",
        "EACCES",
    ),
    "flow keys read": (ProgType.FLOW_DISSECTOR, FK + "ldxw %r0, [%r2+52]", 0),
    "flow keys write": (ProgType.FLOW_DISSECTOR, FK + "stw [%r2+0], 1\nmov %r0, 0", 0),
    "flow keys past the end": (ProgType.FLOW_DISSECTOR, FK + "ldxw %r0, [%r2+53]", "EACCES"),
    "flow keys plus a constant": (
        ProgType.FLOW_DISSECTOR,
        FK + "add %r2, 8\nldxdw %r0, [%r2+0]",
        0,
    ),
    "flow keys plus a variable": (
        ProgType.FLOW_DISSECTOR,
        FK + "ldxw %r3, [%r1+76]\nadd %r2, %r3\nmov %r0, 0",
        "EACCES",
    ),
    "flow keys pointer store (root)": (
        ProgType.FLOW_DISSECTOR,
        FK + "stxdw [%r2+0], %r2\nmov %r0, 0",
        0,
    ),
    "flow dissector packet write": (
        ProgType.FLOW_DISSECTOR,
        PKT_WRITE.format(**SKB_PKT),
        "EACCES",
    ),
}


@pytest.mark.parametrize("case", LOAD_CASES, ids=str)
def test_load_context_rules(backend: Backend, case: str) -> None:
    prog_type, body, expected = LOAD_CASES[case]
    text = body if "exit" in body else body + "\nexit"
    try:
        with bpf.prog_load(prog_type, assemble_text(text)):
            result: str | int = 0
    except OSError as exc:
        result = errno.errorcode[exc.errno or 0]
    assert result == expected
