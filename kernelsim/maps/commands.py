"""bpf() commands on maps: MAP_CREATE, the element commands, FREEZE and the batch commands.

Theory of operation
-------------------
Each handler follows its kernel function (kernel/bpf/syscall.c, 6.18) check by check, so that
the first failing check decides the errno exactly as on the live kernel; the map types' own
rules live in their modules (hash.py, array.py, ...), reached through `MAP_CLASSES`.

MAP_CREATE, in order: btf_vmlinux_value_type_id / btf_key_type_id without a value type: EINVAL;
map_extra on a type other than BLOOM_FILTER: EINVAL; RDONLY with WRONLY: EINVAL; a NUMA node that
does not exist (one node, 0): EINVAL; an unknown type, one newer than the profile, or one the
simulator does not model: EINVAL; the type's `check_attr`; a BPF_F_TOKEN_FD token fd (none exist:
EBADF / EINVAL); the privilege checks (unprivileged_bpf_disabled without CAP_BPF, or a type
needing CAP_BPF: EPERM); map_ifindex (offload: EPERM without CAP_SYS_ADMIN, EINVAL for a type
other than ARRAY/HASH or an unknown device, EOPNOTSUPP for lo); the type's `check_alloc`; the
name (alnum, '_', '.', NUL within 16 bytes: EINVAL); the BTF fd (EBADF / EINVAL); the exclusive
program hash (size 32 only: EINVAL; unreadable: EFAULT). The new fd's access mode follows
BPF_F_RDONLY / BPF_F_WRONLY.

Element commands check, in order: the command's flags (LOOKUP/LOOKUP_AND_DELETE: only BPF_F_LOCK),
the fd (EBADF / EINVAL), the fd's access (a read needs a readable fd: EPERM; a write needs a
writable fd and an unfrozen map: EPERM), BPF_F_LOCK (no simulated map has a spin lock: EINVAL),
then copy the key (key_size 0: a non-NULL key is EINVAL) and value (EFAULT), and only then ask the
map. FREEZE needs a writable fd of an unfrozen map (EPERM, also for a second freeze) without
writable mappings (EBUSY).

Batch commands: a map type without the command is ENOTSUPP (count untouched). Otherwise
elem_flags other than BPF_F_LOCK is EINVAL, count 0 returns at once, and count is zeroed before the
walk and set to what was processed after it. Hash maps walk buckets (`bucket_from`; batch flags
must be 0; the token is a u32 bucket index) a whole bucket at a time: a bucket that no longer fits
in what is left of `count` ends the walk there (out_batch = that bucket), with ENOSPC when nothing
was returned yet. The other maps use the generic walk over get_next_key (the token is the last key
returned, written only when something was). The end of a lookup walk is ENOENT (out_batch =
n_buckets for hash maps) together with the elements still returned.
"""

from __future__ import annotations

import ctypes
import errno
import os
import string
from typing import Final, NoReturn

import attrs

from bpfsys.abi import BpfCmd, MapBatchAttr, MapCreateAttr, MapFlag, MapType, UpdateFlag
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.kernel import Kernel
from kernelsim.maps.array import (
    ArrayMap,
    ArrayOfMaps,
    CgroupArrayMap,
    PercpuArrayMap,
    PerfEventArrayMap,
    ProgArrayMap,
)
from kernelsim.maps.base import NUMA_NO_NODE, BpfMap, MapParams
from kernelsim.maps.bloom_filter import BloomFilterMap
from kernelsim.maps.cpumap import CpuMap
from kernelsim.maps.devmap import NET_DEVICES, DevMap, DevMapHash
from kernelsim.maps.hash import HashMap, HashOfMaps, HashTableMap, LruHashMap
from kernelsim.maps.lpm_trie import LpmTrieMap
from kernelsim.maps.queue_stack import QueueStackMap
from kernelsim.maps.ringbuf import RingbufMap
from kernelsim.maps.sockmap import SockHash, SockMap
from kernelsim.maps.stack_trace import StackTraceMap
from kernelsim.maps.xskmap import XskMap
from kernelsim.objects import KernelObject
from kernelsim.usermem import UserMemory, read_many

MAP_CLASSES: Final[dict[MapType, type[BpfMap]]] = {
    map_type: cls
    for cls in (
        HashMap,
        LruHashMap,
        HashOfMaps,
        ArrayMap,
        PercpuArrayMap,
        ProgArrayMap,
        PerfEventArrayMap,
        ArrayOfMaps,
        QueueStackMap,
        LpmTrieMap,
        BloomFilterMap,
        RingbufMap,
        StackTraceMap,
        CgroupArrayMap,
        DevMap,
        DevMapHash,
        CpuMap,
        XskMap,
        SockMap,
        SockHash,
    )
    for map_type in cls.map_types
}
"""The map types the simulator models and their classes."""

CAP_BPF_TYPES: Final = frozenset(
    {
        MapType.LRU_HASH,
        MapType.LRU_PERCPU_HASH,
        MapType.LPM_TRIE,
        MapType.QUEUE,
        MapType.STACK,
        MapType.BLOOM_FILTER,
        MapType.STACK_TRACE,
        MapType.CPUMAP,
    }
)
"""Modelled types that need CAP_BPF."""
NET_ADMIN_TYPES: Final = frozenset(
    {MapType.SOCKMAP, MapType.SOCKHASH, MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.XSKMAP}
)
"""Modelled types that need CAP_NET_ADMIN (the rest may be created unprivileged)."""
HASH_LOOKUP_AND_DELETE_TYPES: Final = frozenset(
    {MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH}
)
POP_TYPES: Final = frozenset({MapType.QUEUE, MapType.STACK})
NUMA_NODES: Final = 1
SHA256_DIGEST_SIZE: Final = 32
NAME_CHARS: Final = frozenset(
    (string.ascii_letters + string.digits + "_.").encode()
    + bytes(c for c in range(192, 256) if c not in (215, 247))
)
"""The kernel's isalnum() (Latin-1 letters included), '_' and '.'."""
_NAME_OFFSET: Final = MapCreateAttr.map_name.offset
_NAME_SIZE: Final = MapCreateAttr.map_name.size
_LOCK: Final = int(UpdateFlag.LOCK)


# -- shared checks ---------------------------------------------------------------------------------
def legacy_permission(kernel: Kernel) -> None:
    """Before 6.5 every bpf() command was EPERM for an unprivileged caller while
    unprivileged_bpf_disabled was set."""
    if (
        kernel.sysctl["unprivileged_bpf_disabled"]
        and not kernel.bpf_capable()
        and not kernel.profile.has_behaviour("unpriv_checks_in_commands")
    ):
        fail(errno.EPERM, "unprivileged bpf() is disabled")


def readable(kernel: Kernel, fd: int) -> bool:
    return kernel.fds.mode(fd) != os.O_WRONLY


def writable(kernel: Kernel, fd: int, bpf_map: BpfMap) -> bool:
    """map_get_sys_perms: a frozen map is read-only from the syscall side."""
    return kernel.fds.mode(fd) != os.O_RDONLY and not bpf_map.frozen


def map_for_read(kernel: Kernel, fd: int) -> BpfMap:
    bpf_map = kernel.fds.get(fd, BpfMap)
    if kernel.fds.mode(fd) == os.O_WRONLY:
        fail(errno.EPERM, f"map fd {fd} is write-only")
    return bpf_map


def map_for_write(kernel: Kernel, fd: int) -> BpfMap:
    bpf_map = kernel.fds.get(fd, BpfMap)
    if not writable(kernel, fd, bpf_map):
        fail(errno.EPERM, f"map fd {fd} is read-only or the map is frozen")
    return bpf_map


def no_spin_lock(flags: int) -> None:
    """BPF_F_LOCK needs a bpf_spin_lock in the value (BTF), which no simulated map has."""
    if flags & _LOCK:
        fail(errno.EINVAL, "BPF_F_LOCK on a map without a spin lock")


def copy_key(memory: UserMemory, ukey: int, key_size: int) -> bytes:
    """__bpf_copy_key: key_size bytes; for key_size 0 the key must be NULL."""
    if key_size:
        return memory.read(ukey, key_size)
    if ukey:
        fail(errno.EINVAL, "this map type takes a NULL key")
    return b""


def map_name(raw: bytes) -> bytes:
    """bpf_obj_name_cpy: the name before the NUL, which must come within 16 bytes."""
    end = raw.find(0)
    name = raw if end < 0 else raw[:end]
    if any(c not in NAME_CHARS for c in name):
        fail(errno.EINVAL, f"map name {name!r} has characters other than alnum, '_' and '.'")
    if end < 0:
        fail(errno.EINVAL, "map name not NUL-terminated within 16 bytes")
    return name


# -- MAP_CREATE ------------------------------------------------------------------------------------
def _map_class(kernel: Kernel, value: int) -> tuple[MapType, type[BpfMap]]:
    try:
        map_type = MapType(value)
    except ValueError:
        fail(errno.EINVAL, f"unknown map type {value}")
    cls = MAP_CLASSES.get(map_type)
    if not kernel.profile.has(map_type) or cls is None:
        fail(errno.EINVAL, f"map type {map_type.name} not in this kernel (or not modelled)")
    return map_type, cls


def _check_privileges(kernel: Kernel, map_type: MapType) -> None:
    if kernel.sysctl["unprivileged_bpf_disabled"] and not kernel.bpf_capable():
        fail(errno.EPERM, "unprivileged_bpf_disabled and no CAP_BPF")
    if map_type in CAP_BPF_TYPES and not kernel.bpf_capable():
        fail(errno.EPERM, f"{map_type.name} needs CAP_BPF")
    if map_type in NET_ADMIN_TYPES and not kernel.capable_sys_admin():
        fail(errno.EPERM, f"{map_type.name} needs CAP_NET_ADMIN")


def _check_offload(kernel: Kernel, map_type: MapType, ifindex: int) -> None:
    """bpf_map_offload_map_alloc: no simulated device offloads maps."""
    if not kernel.capable_sys_admin():
        fail(errno.EPERM, "offloaded maps need CAP_SYS_ADMIN")
    if map_type not in (MapType.ARRAY, MapType.HASH):
        fail(errno.EINVAL, f"{map_type.name} cannot be offloaded")
    if ifindex not in NET_DEVICES:
        fail(errno.EINVAL, f"no network device {ifindex}")
    fail(errno.EOPNOTSUPP, f"{NET_DEVICES[ifindex]} cannot offload bpf maps")


def refuse_fd(kernel: Kernel, fd: int, what: str) -> NoReturn:
    """The kernel's answer for an fd that is not a `what`: EBADF when no file is open there,
    EINVAL otherwise."""
    kernel.fds.get(fd, KernelObject)
    fail(errno.EINVAL, f"fd {fd} is not a {what}")


def _btf_id(kernel: Kernel, fd: int) -> int:
    """btf_get_by_fd: the id of the BTF object behind `fd`."""
    obj = kernel.fds.lookup(fd)
    if obj is None or obj.id_space != "btf":
        refuse_fd(kernel, fd, "BTF object")
    return obj.id


@bpf_command(BpfCmd.MAP_CREATE)
def map_create(call: BpfCall) -> int:
    kernel = call.kernel
    profile = kernel.profile
    attr = call.attr_as(MapCreateAttr)
    legacy_permission(kernel)
    flags = int(attr.map_flags)
    token = profile.has(MapFlag.TOKEN_FD) and bool(flags & MapFlag.TOKEN_FD)
    if token:
        flags &= ~int(MapFlag.TOKEN_FD)
    if attr.btf_vmlinux_value_type_id:
        if attr.map_type != MapType.STRUCT_OPS or attr.btf_key_type_id or attr.btf_value_type_id:
            fail(errno.EINVAL, "btf_vmlinux_value_type_id is for STRUCT_OPS maps")
    elif attr.btf_key_type_id and not attr.btf_value_type_id:
        fail(errno.EINVAL, "btf_key_type_id without btf_value_type_id")
    if attr.map_extra and attr.map_type not in (MapType.BLOOM_FILTER, MapType.ARENA):
        fail(errno.EINVAL, "map_extra is for BLOOM_FILTER and ARENA maps")
    if flags & MapFlag.RDONLY and flags & MapFlag.WRONLY:
        fail(errno.EINVAL, "BPF_F_RDONLY with BPF_F_WRONLY")
    mode = (
        os.O_RDONLY
        if flags & MapFlag.RDONLY
        else os.O_WRONLY
        if flags & MapFlag.WRONLY
        else os.O_RDWR
    )
    numa_node = ctypes.c_int32(attr.numa_node).value if flags & MapFlag.NUMA_NODE else -1
    if numa_node != NUMA_NO_NODE and not 0 <= numa_node < NUMA_NODES:
        fail(errno.EINVAL, f"no NUMA node {numa_node}")
    map_type, cls = _map_class(kernel, attr.map_type)
    raw = bytes(attr)
    params = MapParams(
        map_type=map_type,
        key_size=attr.key_size,
        value_size=attr.value_size,
        max_entries=attr.max_entries,
        map_flags=flags,
        numa_node=numa_node,
        map_extra=attr.map_extra,
        inner_map_fd=attr.inner_map_fd,
        name=b"",
    )
    cls.check_attr(params, kernel)
    if token:
        refuse_fd(kernel, attr.map_token_fd, "BPF token")  # the simulator has no tokens
    _check_privileges(kernel, map_type)
    if attr.map_ifindex:
        _check_offload(kernel, map_type, attr.map_ifindex)
    cls.check_alloc(params, kernel)
    name = map_name(raw[_NAME_OFFSET : _NAME_OFFSET + _NAME_SIZE])
    if attr.excl_prog_hash:
        if attr.excl_prog_hash_size != SHA256_DIGEST_SIZE:
            fail(errno.EINVAL, "excl_prog_hash_size must be 32 (SHA-256)")
        kernel.memory.read(attr.excl_prog_hash, SHA256_DIGEST_SIZE)
    elif attr.excl_prog_hash_size:
        fail(errno.EINVAL, "excl_prog_hash_size without excl_prog_hash")
    btf_id = 0
    if attr.btf_key_type_id or attr.btf_value_type_id or attr.btf_vmlinux_value_type_id:
        btf_id = _btf_id(kernel, attr.btf_fd)
    bpf_map = cls.create(kernel, attrs.evolve(params, name=name))
    if btf_id:
        bpf_map.btf_id = btf_id
        bpf_map.btf_key_type_id = attr.btf_key_type_id
        bpf_map.btf_value_type_id = attr.btf_value_type_id
    return kernel.fds.install(bpf_map, mode)


# -- element commands -----------------------------------------------------------------------------
@bpf_command(BpfCmd.MAP_LOOKUP_ELEM)
def map_lookup_elem(call: BpfCall) -> int:
    kernel = call.kernel
    attr = call.attr
    legacy_permission(kernel)
    flags = attr.flags
    if flags & ~_LOCK:
        fail(errno.EINVAL, f"lookup flags {flags:#x}")
    bpf_map = map_for_read(kernel, attr.map_fd)
    no_spin_lock(flags)
    memory = kernel.memory
    key = copy_key(memory, attr.key, bpf_map.key_size)
    if isinstance(bpf_map, BloomFilterMap):
        bpf_map.peek(memory.read(attr.value, bpf_map.value_size))
        return 0
    memory.write(attr.value, bpf_map.lookup(key))
    return 0


@bpf_command(BpfCmd.MAP_UPDATE_ELEM)
def map_update_elem(call: BpfCall) -> int:
    kernel = call.kernel
    attr = call.attr
    legacy_permission(kernel)
    fd = attr.map_fd
    bpf_map = map_for_write(kernel, fd)
    flags = attr.flags
    no_spin_lock(flags)
    key_size, ukey = bpf_map.key_size, attr.key
    if not key_size and ukey:
        fail(errno.EINVAL, "this map type takes a NULL key")
    key, value = read_many(
        kernel.memory, ((ukey, key_size), (attr.value, bpf_map.syscall_value_size))
    )
    if bpf_map.holds_fds:
        bpf_map.update_via_fd(fd, key, value, flags)
    else:
        bpf_map.update(key, value, flags)
    return 0


@bpf_command(BpfCmd.MAP_DELETE_ELEM)
def map_delete_elem(call: BpfCall) -> int:
    kernel = call.kernel
    attr = call.attr
    legacy_permission(kernel)
    bpf_map = map_for_write(kernel, attr.map_fd)
    bpf_map.delete(copy_key(kernel.memory, attr.key, bpf_map.key_size))
    return 0


@bpf_command(BpfCmd.MAP_GET_NEXT_KEY)
def map_get_next_key(call: BpfCall) -> int:
    kernel = call.kernel
    attr = call.attr
    legacy_permission(kernel)
    bpf_map = map_for_read(kernel, attr.map_fd)
    memory = kernel.memory
    key = copy_key(memory, attr.key, bpf_map.key_size) if attr.key else None
    memory.write(attr.value, bpf_map.get_next_key(key))
    return 0


def _has_lookup_and_delete(kernel: Kernel, map_type: MapType) -> bool:
    profile = kernel.profile
    if map_type in HASH_LOOKUP_AND_DELETE_TYPES:
        return profile.has_behaviour("hash_lookup_and_delete")
    if map_type is MapType.STACK_TRACE:
        return profile.has_behaviour("stack_trace_lookup_and_delete")
    return map_type in POP_TYPES


@bpf_command(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM)
def map_lookup_and_delete_elem(call: BpfCall) -> int:
    kernel = call.kernel
    attr = call.attr
    legacy_permission(kernel)
    flags = attr.flags
    if flags & ~_LOCK:
        fail(errno.EINVAL, f"lookup-and-delete flags {flags:#x}")
    fd = attr.map_fd
    bpf_map = kernel.fds.get(fd, BpfMap)
    if not (readable(kernel, fd) and writable(kernel, fd, bpf_map)):
        fail(errno.EPERM, f"map fd {fd} must be readable and writable, the map unfrozen")
    map_type = bpf_map.map_type
    if flags and map_type in POP_TYPES:
        fail(errno.EINVAL, "queue/stack pops take no flags")
    no_spin_lock(flags)
    memory = kernel.memory
    key = copy_key(memory, attr.key, bpf_map.key_size)
    if not _has_lookup_and_delete(kernel, map_type):
        fail(ENOTSUPP, f"{map_type.name} has no lookup-and-delete")
    memory.write(attr.value, bpf_map.lookup_and_delete(key, flags))
    return 0


@bpf_command(BpfCmd.MAP_FREEZE)
def map_freeze(call: BpfCall) -> int:
    kernel = call.kernel
    legacy_permission(kernel)
    bpf_map = map_for_write(kernel, call.attr.map_fd)
    if bpf_map.writable_mappings:
        fail(errno.EBUSY, "the map has writable mappings")
    bpf_map.frozen = True
    return 0


# -- batch commands -------------------------------------------------------------------------------
@bpf_command(
    BpfCmd.MAP_LOOKUP_BATCH,
    BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH,
    BpfCmd.MAP_UPDATE_BATCH,
    BpfCmd.MAP_DELETE_BATCH,
)
def map_batch(call: BpfCall) -> int:
    """bpf_map_do_batch."""
    kernel = call.kernel
    cmd = call.cmd
    attr = call.attr_as(MapBatchAttr)
    legacy_permission(kernel)
    fd = attr.map_fd
    bpf_map = kernel.fds.get(fd, BpfMap)
    reads = cmd in (BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH)
    if reads and not readable(kernel, fd):
        fail(errno.EPERM, f"map fd {fd} is write-only")
    if cmd != BpfCmd.MAP_LOOKUP_BATCH and not writable(kernel, fd, bpf_map):
        fail(errno.EPERM, f"map fd {fd} is read-only or the map is frozen")
    if cmd not in bpf_map.batch_commands:
        fail(ENOTSUPP, f"{bpf_map.map_type.name} has no {cmd.name}")
    if attr.elem_flags & ~_LOCK:
        fail(errno.EINVAL, f"elem_flags {attr.elem_flags:#x}")
    no_spin_lock(attr.elem_flags)
    if reads and isinstance(bpf_map, HashTableMap):
        return hash_lookup_batch(call, bpf_map, cmd == BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH)
    if cmd == BpfCmd.MAP_LOOKUP_BATCH:
        return generic_lookup_batch(call, bpf_map)
    return generic_write_batch(call, fd, bpf_map, cmd == BpfCmd.MAP_UPDATE_BATCH)


def hash_lookup_batch(call: BpfCall, bpf_map: HashTableMap, delete: bool) -> int:
    """__htab_map_lookup_and_delete_batch: bucket by bucket from in_batch, each bucket's keys and
    values copied out (and its elements deleted first) as a block."""
    attr = call.attr_as(MapBatchAttr)
    memory = call.kernel.memory
    if attr.flags:
        fail(errno.EINVAL, f"batch flags {attr.flags:#x}")
    max_count = attr.count
    if not max_count:
        return 0
    call.write_back("count", 0)
    batch = int.from_bytes(memory.read(attr.in_batch, 4), "little") if attr.in_batch else 0
    n_buckets = bpf_map.n_buckets
    if batch >= n_buckets:
        fail(errno.ENOENT, "in_batch past the last bucket")
    key_size = bpf_map.key_size
    value_size = bpf_map.syscall_value_size
    key_at = bpf_map.table.key_at
    total = 0
    end: tuple[int, str] | None = None
    while True:
        batch, slots = bpf_map.bucket_from(batch)
        if batch >= n_buckets:
            end = errno.ENOENT, "the walk reached the last bucket"
            break
        if len(slots) > max_count - total:
            if not total:
                end = errno.ENOSPC, f"bucket {batch} holds more elements than count"
            break
        keys = [key_at(slot) for slot in slots]
        values = [bpf_map.value_at(slot) for slot in slots]
        if delete:
            for key in keys:
                bpf_map.delete(key)
        memory.write(attr.keys + total * key_size, b"".join(keys))
        memory.write(attr.values + total * value_size, b"".join(values))
        total += len(slots)
        batch += 1
    memory.write(attr.out_batch, batch.to_bytes(4, "little"))
    call.write_back("count", total)
    if end is not None:
        fail(*end)
    return 0


def generic_lookup_batch(call: BpfCall, bpf_map: BpfMap) -> int:
    """generic_map_lookup_batch: get_next_key from the in_batch key, skipping empty slots."""
    attr = call.attr_as(MapBatchAttr)
    memory = call.kernel.memory
    max_count = attr.count
    if not max_count:
        return 0
    call.write_back("count", 0)
    key_size = bpf_map.key_size
    value_size = bpf_map.syscall_value_size
    prev = memory.read(attr.in_batch, key_size) if attr.in_batch else None
    done = 0
    ended: OSError | None = None
    while done < max_count:
        try:
            key = bpf_map.get_next_key(prev)
        except OSError as exc:
            ended = exc
            break
        try:
            value = bpf_map.lookup(key)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            prev = key
            continue
        memory.write(attr.keys + done * key_size, key)
        memory.write(attr.values + done * value_size, value)
        done += 1
        prev = key
    call.write_back("count", done)
    if done and prev is not None:
        memory.write(attr.out_batch, prev)
    if ended is not None:
        raise ended
    return 0


def generic_write_batch(call: BpfCall, fd: int, bpf_map: BpfMap, update: bool) -> int:
    """generic_map_update_batch / generic_map_delete_batch: element by element until one fails;
    count is how many succeeded."""
    attr = call.attr_as(MapBatchAttr)
    memory = call.kernel.memory
    max_count = attr.count
    if not max_count:
        return 0
    call.write_back("count", 0)
    key_size = bpf_map.key_size
    value_size = bpf_map.syscall_value_size
    failure: OSError | None = None
    done = 0
    while done < max_count:
        try:
            key = memory.read(attr.keys + done * key_size, key_size)
            if update:
                value = memory.read(attr.values + done * value_size, value_size)
                if bpf_map.holds_fds:
                    bpf_map.update_via_fd(fd, key, value, attr.elem_flags)
                else:
                    bpf_map.update(key, value, attr.elem_flags)
            else:
                bpf_map.delete(key)
        except OSError as exc:
            failure = exc
            break
        done += 1
    call.write_back("count", done)
    if failure is not None:
        raise failure
    return 0
