"""OBJ_PIN / OBJ_GET on a fresh bpffs mount, and what pins do to object lifetimes, on every
backend (the live kernel gets `mount -t bpf` on a temporary folder, the simulator
Bpffs.mount of the same path)."""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Iterator

import pytest
from objects_support import (
    bpf,
    bpffs_mount,
    btf_blob,
    btf_int,
    btf_load,
    fdinfo,
    listdir,
    make_map,
    map_id,
    mkdir,
    obj_get,
    ok,
    pin,
    unlink,
)

from bpfsys.abi import BPF_F_PATH_FD, BpfCmd, EnableStatsAttr, GetIdAttr, MapFlag, ObjPinAttr
from bpfsys.backend import Backend
from kernelsim.backend import SimBackend
from kernelsim.bpffs import Bpffs


@pytest.fixture
def fs(backend: Backend) -> Iterator[str]:
    with bpffs_mount(backend) as where:
        yield where


@pytest.fixture
def pinned(backend: Backend, fs: str) -> Iterator[tuple[int, str]]:
    """A map pinned at <fs>/m, and its fd."""
    fd = make_map(backend)
    assert pin(backend, fd, f"{fs}/m") == 0
    yield fd, f"{fs}/m"
    backend.close(fd)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("{fs}/m", "EEXIST"),
        ("{fs}", "EEXIST"),
        ("{fs}/.", "EEXIST"),
        ("{fs}/nodir/x", "ENOENT"),
        ("{fs}/m/x", "ENOTDIR"),
        ("{fs}/new/", "ENOENT"),
        ("", "ENOENT"),
        ("/etc/hostname", "EEXIST"),
        ("/nonexistent-kernelsim-dir/x", "ENOENT"),
        ("{fs}/" + "n" * 256, "ENAMETOOLONG"),
    ],
)
def test_pin_path_errors(
    backend: Backend, pinned: tuple[int, str], fs: str, where: str, expected: str
) -> None:
    fd, _ = pinned
    assert pin(backend, fd, where.format(fs=fs)) == expected


def test_pin_outside_any_bpffs_is_eperm(backend: Backend) -> None:
    fd = make_map(backend)
    with tempfile.TemporaryDirectory() as plain:
        assert pin(backend, fd, f"{plain}/m") == "EPERM"
        assert os.listdir(plain) == []
    backend.close(fd)


@pytest.mark.parametrize(("file_flags", "path_fd"), [(1, 0), (MapFlag.RDONLY, 0), (0, 3)])
def test_pin_flags_are_einval(backend: Backend, fs: str, file_flags: int, path_fd: int) -> None:
    fd = make_map(backend)
    assert pin(backend, fd, f"{fs}/f", file_flags, path_fd) == "EINVAL"
    backend.close(fd)


def test_pin_fd_checked_before_the_path(backend: Backend, fs: str) -> None:
    efd = os.eventfd(0)
    stats = ok(bpf(backend, BpfCmd.ENABLE_STATS, EnableStatsAttr(type=0)))
    btf = ok(btf_load(backend, btf_blob(btf_int(1), b"\0int\0"))[0])
    try:
        for fd in (999, efd, stats, btf):
            assert pin(backend, fd, f"{fs}/x") == "EINVAL"
            assert pin(backend, fd, "/nonexistent-kernelsim-dir/x") == "EINVAL"
    finally:
        os.close(efd)
        backend.close(stats)
        backend.close(btf)


def test_pin_null_path_is_efault(backend: Backend) -> None:
    fd = make_map(backend)
    assert bpf(backend, BpfCmd.OBJ_PIN, ObjPinAttr(pathname=0, bpf_fd=fd)) == "EFAULT"
    assert bpf(backend, BpfCmd.OBJ_GET, ObjPinAttr(pathname=8)) == "EFAULT"
    backend.close(fd)


def test_pin_relative_to_path_fd(backend: Backend, fs: str) -> None:
    fd = make_map(backend)
    folder = os.open(fs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert pin(backend, fd, "rel", BPF_F_PATH_FD, folder) == 0
        got = ok(obj_get(backend, "rel", BPF_F_PATH_FD, folder))
        assert map_id(backend, got) == map_id(backend, fd)
        backend.close(got)
        assert pin(backend, fd, "rel", BPF_F_PATH_FD, 99999) == "EBADF"
        assert pin(backend, fd, f"{fs}/abs", BPF_F_PATH_FD, 99999) == 0  # ignored
    finally:
        os.close(folder)
    assert listdir(backend, fs) == ["abs", "rel"]
    backend.close(fd)


@pytest.mark.parametrize(
    ("where", "flags", "expected"),
    [
        ("{fs}/zz", 0, "ENOENT"),
        ("{fs}/zz/y", 0, "ENOENT"),
        ("{fs}/m/", 0, "ENOTDIR"),
        ("{fs}", 0, "EACCES"),
        ("/etc/hostname", 0, "EACCES"),
        ("/tmp", 0, "EACCES"),
        ("{fs}/m", MapFlag.RDONLY | MapFlag.WRONLY, "EINVAL"),
        ("{fs}/m", 1, "EINVAL"),
        ("{fs}/zz", MapFlag.RDONLY | MapFlag.WRONLY, "EINVAL"),  # flags before the path
    ],
)
def test_obj_get_errors(
    backend: Backend, pinned: tuple[int, str], fs: str, where: str, flags: int, expected: str
) -> None:
    assert obj_get(backend, where.format(fs=fs), flags) == expected


def test_obj_get_with_bpf_fd_is_einval(backend: Backend, pinned: tuple[int, str]) -> None:
    fd, path = pinned
    name = ctypes.create_string_buffer(path.encode())
    attr = ObjPinAttr(pathname=ctypes.addressof(name), bpf_fd=fd)
    assert bpf(backend, BpfCmd.OBJ_GET, attr) == "EINVAL"


@pytest.mark.parametrize(
    ("flags", "mode"),
    [(0, "02000002"), (MapFlag.RDONLY, "02000000"), (MapFlag.WRONLY, "02000001")],
)
def test_obj_get_map_access_modes(
    backend: Backend, pinned: tuple[int, str], flags: int, mode: str
) -> None:
    fd, path = pinned
    got = ok(obj_get(backend, path, flags))
    assert fdinfo(backend, got)["flags"] == mode
    assert map_id(backend, got) == map_id(backend, fd)
    backend.close(got)


def test_pinned_files_read_eio(backend: Backend, pinned: tuple[int, str], fs: str) -> None:
    _, path = pinned
    for op in (lambda: backend.read_file(path), lambda: backend.write_file(path, b"x")):
        with pytest.raises(OSError) as caught:
            op()
        assert caught.value.errno == 5  # EIO
    with pytest.raises(IsADirectoryError):
        backend.read_file(fs)


def test_pin_holds_the_map(backend: Backend, fs: str) -> None:
    fd = make_map(backend)
    mid = map_id(backend, fd)
    assert pin(backend, fd, f"{fs}/kept") == 0
    backend.close(fd)
    again = ok(bpf(backend, BpfCmd.MAP_GET_FD_BY_ID, GetIdAttr(start_id=mid)))
    backend.close(again)
    got = ok(obj_get(backend, f"{fs}/kept"))
    assert map_id(backend, got) == mid
    backend.close(got)
    assert unlink(backend, f"{fs}/kept") == 0
    assert bpf(backend, BpfCmd.MAP_GET_FD_BY_ID, GetIdAttr(start_id=mid)) == "ENOENT"
    if isinstance(backend, SimBackend):
        assert backend.kernel.live_objects() == {}


def test_one_object_pinned_twice(backend: Backend, fs: str) -> None:
    fd = make_map(backend)
    mid = map_id(backend, fd)
    assert mkdir(backend, f"{fs}/sub") == 0
    assert mkdir(backend, f"{fs}/sub") == "EEXIST"
    assert pin(backend, fd, f"{fs}/a") == 0
    assert pin(backend, fd, f"{fs}/sub/b") == 0
    backend.close(fd)
    assert listdir(backend, fs) == ["a", "sub"]
    assert listdir(backend, f"{fs}/sub") == ["b"]
    assert unlink(backend, f"{fs}/a") == 0
    assert unlink(backend, f"{fs}/a") == "ENOENT"
    assert unlink(backend, f"{fs}/sub") == "EISDIR"
    backend.close(ok(bpf(backend, BpfCmd.MAP_GET_FD_BY_ID, GetIdAttr(start_id=mid))))
    assert unlink(backend, f"{fs}/sub/b") == 0
    assert bpf(backend, BpfCmd.MAP_GET_FD_BY_ID, GetIdAttr(start_id=mid)) == "ENOENT"


def test_sim_unmount_drops_every_pin() -> None:
    sim = SimBackend()
    bpffs = sim.kernel.subsystem(Bpffs)
    fd = make_map(sim)
    bpffs.mount("/kernelsim-test")
    bpffs.mkdir("/kernelsim-test/d")
    assert pin(sim, fd, "/kernelsim-test/d/m") == 0
    assert pin(sim, fd, "/sys/fs/bpf/m") == 0
    sim.close(fd)
    assert set(bpffs.pins()) == {"/kernelsim-test/d/m", "/sys/fs/bpf/m"}
    bpffs.unmount("/kernelsim-test")
    assert sim.kernel.live_objects() == {"ArrayMap": 1}
    bpffs.unlink("/sys/fs/bpf/m")
    assert sim.kernel.live_objects() == {}
    assert bpffs.pins() == {}


def test_sim_sees_a_bpffs_the_host_mounted(live: Backend) -> None:
    """A bpffs mounted on the host (as `mount -t bpf` in a test) is a bpffs for the simulator
    too, empty, without Bpffs.mount."""
    sim = SimBackend()
    with bpffs_mount(live) as where:
        fd = make_map(sim)
        assert pin(sim, fd, f"{where}/m") == 0
        assert os.listdir(where) == [n for n in os.listdir(where) if n.endswith(".debug")]
        assert listdir(sim, where) == ["m"]
        sim.close(fd)
    sim.kernel.close_all()
