"""The simulated kernel's core: the bpf() common path, user memory, fds, files, profiles.

Tests taking `backend` run on the simulated and the live kernel with the same expectations.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select

import pytest

from bpfsys.abi import BpfCmd, GetIdAttr, MapCreateAttr, MapType
from bpfsys.backend import Backend
from kernelsim import Kernel, KernelConfig, SimBackend
from kernelsim.objects import KernelObject, ObjectRegistry
from kernelsim.profile import NAMED_PROFILES, Profile
from kernelsim.usermem import ProcessMemory
from kernelsim.vfs import Vfs


def array_attr_image(total: int) -> bytearray:
    image = bytearray(total)
    attr = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    image[: ctypes.sizeof(attr)] = bytes(attr)
    return image


def errno_of(backend: Backend, cmd: int, image: bytearray, size: int) -> int:
    with pytest.raises(OSError) as info:
        backend.bpf(cmd, image, size)
    return info.value.errno or 0


def test_unknown_command_is_einval(backend: Backend) -> None:
    assert errno_of(backend, 1000, bytearray(16), 16) == errno.EINVAL


def test_attr_larger_than_a_page_is_e2big(backend: Backend) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    assert errno_of(backend, BpfCmd.MAP_CREATE, array_attr_image(page + 8), page + 8) == errno.E2BIG


def test_nonzero_tail_beyond_bpf_attr_is_e2big(backend: Backend) -> None:
    image = array_attr_image(4096)
    image[4000] = 1
    assert errno_of(backend, BpfCmd.MAP_CREATE, image, 4096) == errno.E2BIG


def test_zero_tail_beyond_bpf_attr_is_accepted(backend: Backend) -> None:
    fd = backend.bpf(BpfCmd.MAP_CREATE, array_attr_image(4096), 4096)
    backend.close(fd)


def test_nonzero_byte_after_last_field_of_command_is_einval(backend: Backend) -> None:
    image = bytearray(ctypes.sizeof(GetIdAttr))
    image[8] = 1  # open_flags: after MAP_GET_NEXT_ID's last field (next_id)
    assert errno_of(backend, BpfCmd.MAP_GET_NEXT_ID, image, len(image)) == errno.EINVAL


def test_size_beyond_buffer_is_efault(sim_factory: object) -> None:
    backend = SimBackend()
    assert errno_of(backend, BpfCmd.MAP_CREATE, bytearray(8), 64) == errno.EFAULT


@pytest.mark.parametrize(
    ("version", "size"), [("6.18", 168), ("6.1", 144), ("5.15", 128), ("5.4", 112)]
)
def test_bpf_attr_size_by_profile(version: str, size: int) -> None:
    """sizeof(union bpf_attr) per version: 168 measured on 6.18 and 144 on 6.1 (kernel-vm)."""
    assert Profile(version).bpf_attr_size == size


def test_live_bpf_attr_size_matches_profile(live: Backend) -> None:
    """The first offset whose non-zero byte gives E2BIG is the live sizeof(union bpf_attr)."""
    profile = Profile(os.uname().release)
    size = profile.bpf_attr_size
    for offset, expected in ((size - 1, errno.EINVAL), (size, errno.E2BIG)):
        image = array_attr_image(4096)
        image[offset] = 1
        assert errno_of(live, BpfCmd.MAP_CREATE, image, 4096) == expected


def test_profiles_lack_what_their_kernels_lacked() -> None:
    assert Profile("6.18").lacks() == []
    assert "bpf links (BPF_LINK_CREATE)" in Profile("5.4").lacks()
    assert "perf_event links" in Profile("5.10").lacks()
    assert "perf_event links" not in Profile("5.15").lacks()
    lacked = [len(Profile(v).lacks()) for v in NAMED_PROFILES]
    assert lacked == sorted(lacked)


def test_profile_gates_commands(sim_factory: object) -> None:
    old = SimBackend(Kernel(KernelConfig(version="5.4")))
    image = bytearray(ctypes.sizeof(GetIdAttr))
    assert errno_of(old, BpfCmd.LINK_GET_NEXT_ID, image, len(image)) == errno.EINVAL


def test_user_memory_bad_pointer_is_efault() -> None:
    memory = ProcessMemory()
    for addr in (0x10, 0xFFFF_FFFF_FFFF_0000, 1 << 47):
        with pytest.raises(OSError) as info:
            memory.read(addr, 8)
        assert info.value.errno == errno.EFAULT
        with pytest.raises(OSError) as info:
            memory.write(addr, b"x")
        assert info.value.errno == errno.EFAULT
    assert memory.read(0, 0) == b""


def test_user_memory_round_trip_and_cstring() -> None:
    memory = ProcessMemory()
    buf = ctypes.create_string_buffer(b"hello\0world", 16)
    addr = ctypes.addressof(buf)
    assert memory.read(addr, 5) == b"hello"
    memory.write(addr, b"HE")
    assert buf.raw[:5] == b"HEllo"
    assert memory.read_cstring(addr, 16) == (b"HEllo", True)
    assert memory.read_cstring(addr, 3) == (b"HEl", False)


def test_fds_are_real_unique_and_pollable() -> None:
    kernel = Kernel()
    obj = KernelObject(kernel.objects)
    fd = kernel.fds.install(obj)
    assert os.path.exists(f"/proc/self/fd/{fd}")
    assert select.select([fd], [], [], 0)[0] == []
    kernel.fds.set_ready(obj)
    assert select.select([fd], [], [], 0)[0] == [fd]
    kernel.fds.clear_ready(obj)
    assert select.select([fd], [], [], 0)[0] == []
    kernel.fds.close(fd)
    assert not obj.alive
    with pytest.raises(OSError) as info:
        kernel.fds.close(fd)
    assert info.value.errno == errno.EBADF


def test_ids_increase_and_are_not_reused() -> None:
    registry = ObjectRegistry()

    class Thing(KernelObject):
        id_space = "map"

    first, second = Thing(registry), Thing(registry)
    assert (first.id, second.id) == (1, 2)
    second.put()
    third = Thing(registry)
    assert third.id == 3
    assert registry.next_id("map", 0) == 1
    assert registry.next_id("map", 1) == 3
    with pytest.raises(OSError) as info:
        registry.next_id("map", 3)
    assert info.value.errno == errno.ENOENT
    assert registry.live_counts() == {"Thing": 2}


def test_vfs_errors() -> None:
    vfs = Vfs()
    vfs.add("/sys/a/b", b"1\n")
    assert vfs.read("/sys/a/../a/./b") == b"1\n"
    for path, err in (("/sys/a", errno.EISDIR), ("/sys/c", errno.ENOENT)):
        with pytest.raises(OSError) as info:
            vfs.read(path)
        assert info.value.errno == err
    with pytest.raises(OSError) as info:
        vfs.write("/sys/a/b", b"2")
    assert info.value.errno == errno.EACCES


def test_cpu_files(sim_factory: object) -> None:
    backend = SimBackend(Kernel(KernelConfig(cpus=4, online_cpus=3)))
    assert backend.read_file("/sys/devices/system/cpu/possible") == b"0-3\n"
    assert backend.read_file("/sys/devices/system/cpu/online") == b"0-2\n"
    single = SimBackend(Kernel(KernelConfig(cpus=1)))
    assert single.read_file("/sys/devices/system/cpu/possible") == b"0\n"


def test_sysctl_write_rules() -> None:
    backend = SimBackend(Kernel(KernelConfig(unprivileged_bpf_disabled=0)))
    path = "/proc/sys/kernel/unprivileged_bpf_disabled"
    backend.write_file(path, b"1\n")
    assert backend.read_file(path) == b"1\n"
    with pytest.raises(OSError) as info:
        backend.write_file(path, b"0\n")
    assert info.value.errno == errno.EPERM
    unpriv = SimBackend(Kernel(KernelConfig(privileges="unprivileged")))
    with pytest.raises(OSError) as info:
        unpriv.write_file("/proc/sys/kernel/perf_event_paranoid", b"1\n")
    assert info.value.errno == errno.EPERM


def test_kernel_config_validation() -> None:
    with pytest.raises(ValueError):
        KernelConfig(cpus=0)
    with pytest.raises(ValueError):
        KernelConfig(cpus=2, online_cpus=3)
    with pytest.raises(ValueError):
        KernelConfig(page_size=5000)
    with pytest.raises(ValueError):
        KernelConfig(version="six")


@pytest.mark.parametrize(("version", "known"), [("5.4", False), ("5.15", True)])
def test_helpers_newer_than_the_kernel_are_invalid(version: str, known: bool) -> None:
    """bpf_get_attach_cookie (174) came with 5.15: an older kernel calls it an invalid func."""
    from bpfsys import bpf
    from bpfsys.abi import BpfFunc, ProgType
    from bpfsys.asm import assemble_text

    backend = SimBackend(Kernel(KernelConfig(version=version)))
    insns = assemble_text(f"call {int(BpfFunc.GET_ATTACH_COOKIE)}\nexit")
    if known:
        bpf.prog_load(ProgType.KPROBE, insns, backend=backend).close()
        return
    with pytest.raises(bpf.VerifierError) as info:
        bpf.prog_load(ProgType.KPROBE, insns, backend=backend)
    assert info.value.errno == errno.EINVAL
    assert "invalid func unknown#174" in info.value.log
