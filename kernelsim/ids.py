"""Object ids and introspection: GET_NEXT_ID, GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, fdinfo.

Theory of operation
-------------------
Maps, programs, links and BTF objects have ids from per-type id spaces (`ObjectRegistry`). The
rules, as kernel/bpf/syscall.c has them (measured on 6.18):

| command            | checks, in order                                                           |
|--------------------|----------------------------------------------------------------------------|
| *_GET_NEXT_ID      | CHECK_ATTR or start_id >= INT_MAX: EINVAL; no CAP_SYS_ADMIN: EPERM;         |
|                    | no live id above start_id: ENOENT; else next_id is written back             |
| *_GET_FD_BY_ID     | CHECK_ATTR (maps: also open_flags beyond RDONLY|WRONLY): EINVAL;            |
|                    | no CAP_SYS_ADMIN: EPERM; maps: RDONLY with WRONLY: EINVAL; unknown: ENOENT  |
| OBJ_GET_INFO_BY_FD | no such fd: EBADFD (not EBADF); an fd without info (perf event, stats,     |
|                    | eventfd): EINVAL; then the object's info, below                             |

Info (`bpf_*_get_info_by_fd`): `info_len` above a page is E2BIG; bytes of the caller's struct
beyond the kernel's sizeof (for this version) must be zero (E2BIG; EFAULT when unreadable); the
kernel reads min(info_len, sizeof) bytes of the caller's struct into a zeroed one (EFAULT), the
object fills in what it reports, and the same min(info_len, sizeof) bytes are copied back
(EFAULT) and `info_len` is set to that length. Fields the object does not set keep the caller's
bytes (links, programs, BTF, and maps since 6.18; before 6.18 map info started zeroed). A
filler that fails (a name buffer too short: ENOSPC) copies nothing back, except BTF, whose
name error is reported after the copy.

fdinfo: /proc/self/fdinfo/<fd> of a simulated fd reads "pos", "flags" (O_CLOEXEC and the fd's
access mode, in octal), "mnt_id" and "ino" (the anon inode's, fixed here), then the object's own
lines (`KernelObject.fdinfo()`).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs

from bpfsys.abi import (
    AbiStruct,
    BpfBtfInfo,
    BpfCmd,
    BpfLinkInfo,
    BpfMapInfo,
    BpfProgInfo,
    GetIdAttr,
    InfoByFdAttr,
    MapFlag,
    MapType,
)
from kernelsim.btf import Btf
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import fail
from kernelsim.link import BpfLink
from kernelsim.maps.base import BpfMap
from kernelsim.objects import ID_MAX, KernelObject
from kernelsim.prog.program import BpfProgram
from kernelsim.vfs import VirtualFile

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

ANON_INODE_MNT_ID: Final = 17
"""mnt_id of the anon inode mount in fdinfo (the live machine's value; it varies by boot)."""
ANON_INODE_INO: Final = 1038
"""ino of the shared anon inode in fdinfo (the live machine's value)."""
MAX_INFO_LEN: Final = 4096
"""bpf_check_uarg_tail_zero refuses anything above PAGE_SIZE."""
HASH_SIZE: Final = 32
"""SHA256_DIGEST_SIZE: the only hash_size bpf_map_info accepts (6.18)."""

# The fields bpf_map_get_info_by_fd always sets; the rest keep the caller's bytes (6.18) or stay
# zero (before), except the BTF triple, set when the map has BTF.
_MAP_INFO_ALWAYS: Final = (
    "type",
    "id",
    "key_size",
    "value_size",
    "max_entries",
    "map_flags",
    "name",
    "btf_vmlinux_value_type_id",
    "map_extra",
)
_MAP_INFO_BTF: Final = ("btf_id", "btf_key_type_id", "btf_value_type_id")


@attrs.frozen
class IdSpace:
    """The id space and object class behind a GET_NEXT_ID / GET_FD_BY_ID command."""

    space: str
    cls: type[KernelObject]


_NEXT_ID: Final[dict[BpfCmd, IdSpace]] = {
    BpfCmd.PROG_GET_NEXT_ID: IdSpace("prog", BpfProgram),
    BpfCmd.MAP_GET_NEXT_ID: IdSpace("map", BpfMap),
    BpfCmd.LINK_GET_NEXT_ID: IdSpace("link", BpfLink),
    BpfCmd.BTF_GET_NEXT_ID: IdSpace("btf", Btf),
}
_FD_BY_ID: Final[dict[BpfCmd, IdSpace]] = {
    BpfCmd.PROG_GET_FD_BY_ID: IdSpace("prog", BpfProgram),
    BpfCmd.MAP_GET_FD_BY_ID: IdSpace("map", BpfMap),
    BpfCmd.LINK_GET_FD_BY_ID: IdSpace("link", BpfLink),
    BpfCmd.BTF_GET_FD_BY_ID: IdSpace("btf", Btf),
}


def file_flag(open_flags: int) -> int:
    """bpf_get_file_flag: the access mode BPF_F_RDONLY / BPF_F_WRONLY ask for (EINVAL both)."""
    if open_flags & MapFlag.RDONLY and open_flags & MapFlag.WRONLY:
        fail(errno.EINVAL, "BPF_F_RDONLY and BPF_F_WRONLY together")
    if open_flags & MapFlag.RDONLY:
        return os.O_RDONLY
    if open_flags & MapFlag.WRONLY:
        return os.O_WRONLY
    return os.O_RDWR


@bpf_command(*_NEXT_ID)
def get_next_id(call: BpfCall) -> int:
    attr = call.attr_as(GetIdAttr)
    if attr.start_id >= ID_MAX:
        fail(errno.EINVAL, f"start_id {attr.start_id} >= INT_MAX")
    if not call.kernel.capable_sys_admin():
        fail(errno.EPERM, f"BPF_{call.cmd.name} needs CAP_SYS_ADMIN")
    call.write_back("next_id", call.kernel.objects.next_id(_NEXT_ID[call.cmd].space, attr.start_id))
    return 0


@bpf_command(*_FD_BY_ID)
def get_fd_by_id(call: BpfCall) -> int:
    attr = call.attr_as(GetIdAttr)
    kernel = call.kernel
    target = _FD_BY_ID[call.cmd]
    is_map = call.cmd is BpfCmd.MAP_GET_FD_BY_ID
    if is_map and attr.open_flags & ~(MapFlag.RDONLY | MapFlag.WRONLY):
        fail(errno.EINVAL, f"open_flags {attr.open_flags:#x} beyond RDONLY|WRONLY")
    if not kernel.capable_sys_admin():
        fail(errno.EPERM, f"BPF_{call.cmd.name} needs CAP_SYS_ADMIN")
    mode = file_flag(attr.open_flags) if is_map else None
    obj = kernel.objects.by_id(target.space, attr.start_id, target.cls)
    return kernel.fds.install_new_ref(obj, default_mode(obj) if mode is None else mode)


def default_mode(obj: KernelObject) -> int:
    """The access mode of a new fd of `obj`: maps and programs are O_RDWR, links, BTF and
    stats fds O_RDONLY (anon_inode_getfd with O_CLOEXEC only)."""
    return os.O_RDWR if isinstance(obj, BpfMap | BpfProgram) else os.O_RDONLY


# -- OBJ_GET_INFO_BY_FD -----------------------------------------------------------------------
@attrs.frozen
class InfoResult:
    """A filled info struct, and an errno to report after copying it back (BTF's ENOSPC)."""

    info: AbiStruct
    late_error: int = 0


@bpf_command(BpfCmd.OBJ_GET_INFO_BY_FD)
def obj_get_info_by_fd(call: BpfCall) -> int:
    attr = call.attr_as(InfoByFdAttr)
    kernel = call.kernel
    try:
        obj = kernel.fds.get(attr.bpf_fd, KernelObject)
    except OSError as exc:  # fdget: EBADFD here; a file of this process is "no info", below
        if exc.errno == errno.EBADF:
            fail(errno.EBADFD, f"fd {attr.bpf_fd} is not open")
        raise
    filler = _info_filler(obj)
    if filler is None:
        fail(errno.EINVAL, f"fd {attr.bpf_fd} is a {type(obj).__name__}: no info")
    info_type, fill = filler
    version = kernel.profile.version
    copied = _read_user_info(
        kernel, attr.info, attr.info_len, info_type.size_for(version), info_type.sizeof_for(version)
    )
    user_copy = info_type.from_buffer_copy(copied.ljust(ctypes.sizeof(info_type), b"\0"))
    result = fill(kernel, obj, user_copy)
    kernel.memory.write(attr.info, bytes(result.info)[: len(copied)])
    call.write_back("info_len", len(copied))
    if result.late_error:
        fail(result.late_error, "info copied, but a buffer it points to was too short")
    return 0


def _read_user_info(kernel: Kernel, addr: int, info_len: int, end: int, size: int) -> bytes:
    """bpf_check_uarg_tail_zero from the end of the last field (`end`; measured: 6.18 refuses
    non-zero tail padding of bpf_map_info too), then copy_from_user of min(info_len, size)
    bytes, `size` being the struct's sizeof."""
    if info_len > MAX_INFO_LEN:
        fail(errno.E2BIG, f"info_len {info_len} exceeds a page")
    if info_len > end and any(kernel.memory.read(addr + end, info_len - end)):
        fail(errno.E2BIG, f"non-zero bytes beyond the {end} bytes of this kernel's info struct")
    return kernel.memory.read(addr, min(info_len, size))


InfoFiller = Callable[["Kernel", KernelObject, AbiStruct], InfoResult]


def _info_filler(obj: KernelObject) -> tuple[type[AbiStruct], InfoFiller] | None:
    if isinstance(obj, BpfMap):
        return BpfMapInfo, _map_info
    if isinstance(obj, BpfProgram):
        return BpfProgInfo, _prog_info
    if isinstance(obj, BpfLink):
        return BpfLinkInfo, _link_info
    if isinstance(obj, Btf):
        return BpfBtfInfo, _btf_info
    return None


def _map_info(kernel: Kernel, obj: KernelObject, user: AbiStruct) -> InfoResult:
    assert isinstance(obj, BpfMap) and isinstance(user, BpfMapInfo)
    keeps_user_bytes = kernel.profile.has_behaviour("map_info_hash")
    info = user if keeps_user_bytes else BpfMapInfo()
    reported = obj.map_info()
    fields = _MAP_INFO_ALWAYS + (_MAP_INFO_BTF if reported.btf_id else ())
    for name in fields:
        setattr(info, name, getattr(reported, name))
    if keeps_user_bytes:
        _map_hash(kernel, obj, info)
    return InfoResult(info)


def _map_hash(kernel: Kernel, bpf_map: BpfMap, info: BpfMapInfo) -> None:
    """6.18: info.hash points at a buffer for the SHA-256 of a frozen array map's values."""
    if not info.hash:
        if info.hash_size:
            fail(errno.EINVAL, "hash_size without a hash buffer")
        return
    if bpf_map.map_type is not MapType.ARRAY:
        fail(errno.EINVAL, f"{bpf_map.map_type.name} maps have no hash")
    if info.hash_size != HASH_SIZE:
        fail(errno.EINVAL, f"hash_size {info.hash_size}, not {HASH_SIZE}")
    if not bpf_map.frozen:
        fail(errno.EPERM, "only a frozen array map has a hash")
    stride = -(-bpf_map.value_size // 8) * 8
    digest = hashlib.sha256()
    for index in range(bpf_map.max_entries):
        value = bpf_map.lookup(index.to_bytes(4, "little"))
        digest.update(value.ljust(stride, b"\0"))
    kernel.memory.write(info.hash, digest.digest())


def _prog_info(kernel: Kernel, obj: KernelObject, user: AbiStruct) -> InfoResult:
    assert isinstance(obj, BpfProgram) and isinstance(user, BpfProgInfo)
    return InfoResult(obj.prog_info(user))


def _link_info(kernel: Kernel, obj: KernelObject, user: AbiStruct) -> InfoResult:
    assert isinstance(obj, BpfLink) and isinstance(user, BpfLinkInfo)
    return InfoResult(obj.link_info(user))


def _btf_info(kernel: Kernel, obj: KernelObject, user: AbiStruct) -> InfoResult:
    assert isinstance(obj, Btf) and isinstance(user, BpfBtfInfo)
    info, late_error = obj.btf_info(user)
    return InfoResult(info, late_error)


# -- /proc/self/fdinfo ------------------------------------------------------------------------
def fdinfo_text(kernel: Kernel, fd: int) -> bytes:
    """The text of /proc/self/fdinfo/<fd> for a simulated fd."""
    obj = kernel.fds.lookup(fd)
    if obj is None:
        fail(errno.ENOENT, f"fd {fd} is not an open simulated fd")
    flags = os.O_CLOEXEC | kernel.fds.mode(fd)
    lines = [
        ("pos", "0"),
        ("flags", f"0{flags:o}"),
        ("mnt_id", str(ANON_INODE_MNT_ID)),
        ("ino", str(ANON_INODE_INO)),
        *obj.fdinfo(),
    ]
    return "".join(f"{key}:\t{value}\n" for key, value in lines).encode()


def _fdinfo_file(kernel: Kernel, name: str) -> VirtualFile | None:
    if not name.isdigit():
        return None
    fd = int(name)
    if kernel.fds.lookup(fd) is None:
        return None
    return VirtualFile(lambda: fdinfo_text(kernel, fd))


def boot(kernel: Kernel) -> None:
    kernel.vfs.add_resolver("/proc/self/fdinfo", lambda name: _fdinfo_file(kernel, name))
