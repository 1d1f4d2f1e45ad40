"""Array maps: ARRAY, PERCPU_ARRAY and the fd arrays PROG_ARRAY, PERF_EVENT_ARRAY, CGROUP_ARRAY,
ARRAY_OF_MAPS.

Theory of operation
-------------------
Creation (array_map_alloc_check; fd arrays first check fd_array_map_alloc_check):
1. fd arrays: value_size other than 4, or RDONLY_PROG/WRONLY_PROG: EINVAL;
2. max_entries 0, key_size other than 4, value_size 0, flags outside NUMA_NODE | MMAPABLE |
   PRESERVE_ELEMS | INNER_MAP | the access flags, RDONLY_PROG with WRONLY_PROG, or a NUMA node
   for a per-CPU array: EINVAL; MMAPABLE or INNER_MAP on anything but ARRAY, PRESERVE_ELEMS on
   anything but PERF_EVENT_ARRAY: EINVAL;
3. value_size above INT_MAX, or a per-CPU slot above PCPU_MIN_UNIT_SIZE: E2BIG;
4. (alloc) without CAP_PERFMON the allocation is rounded up to a power of two (E2BIG when that
   overflows); more memory than the machine has: ENOMEM.

Every element exists from the start (zeroed). The value storage is one contiguous buffer of
max_entries * round_up(value_size, 8) bytes: a bytearray, or for BPF_F_MMAPABLE a memfd mapped
by the simulated kernel, so `backend.mmap(fd, ...)` maps the same pages (MAP_SHARED only,
within the page-aligned array, not writable once frozen or with RDONLY_PROG).

| operation        | index < max_entries                 | index >= max_entries |
|------------------|-------------------------------------|----------------------|
| lookup           | the value (fd arrays: the id; an    | ENOENT               |
|                  | empty fd slot ENOENT)               |                      |
| update ANY/EXIST | stored                              | E2BIG                |
| update NOEXIST   | EEXIST (fd arrays: EINVAL, they     | E2BIG (fd: EINVAL)   |
|                  | take BPF_ANY only)                  |                      |
| delete           | EINVAL (fd arrays: clear the slot,  | EINVAL (fd: E2BIG)   |
|                  | ENOENT when empty)                  |                      |
| get_next_key     | index + 1, ENOENT after the last    | 0                    |

CGROUP_ARRAY stores cgroups (a cgroup2 directory fd in; lookup is ENOTSUPP). PROG_ARRAY stores
programs (prog fd in, prog id out); the first program fixes the owner program
type, later ones of another type are EINVAL. PERF_EVENT_ARRAY stores perf events (lookup is
ENOTSUPP); closing the map fd an event was stored through removes it unless the map has
BPF_F_PRESERVE_ELEMS. ARRAY_OF_MAPS stores maps fitting the inner map template (map_in_map.py).
"""

from __future__ import annotations

import contextlib
import errno
import mmap as _mmap
import os
import weakref
from typing import TYPE_CHECKING, ClassVar, Final

from bpfsys.abi import BpfCmd, MapFlag, MapType, PerfAttrFlag, UpdateFlag
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.maps.base import (
    ACCESS_MASK,
    NUMA_NO_NODE,
    PCPU_MIN_UNIT_SIZE,
    BpfMap,
    MapParams,
    check_size,
    disallowed_flags,
    flags_access_ok,
    index_after,
    key_index,
    round_up,
    roundup_pow_of_two,
)
from kernelsim.maps.host_files import HostCgroup, cgroup_dir
from kernelsim.maps.map_in_map import MapOfMaps
from kernelsim.objects import KernelObject
from kernelsim.perf.event import PerfEvent
from kernelsim.prog.program import BpfProgram

if TYPE_CHECKING:
    from bpfsys.backend import Mapping
    from kernelsim.kernel import Kernel

ARRAY_SIZE: Final = 312
"""sizeof(struct bpf_array), measured through fdinfo memlock on 6.18 x86_64."""
INT_MAX: Final = 0x7FFFFFFF
CREATE_FLAGS: Final = (
    MapFlag.NUMA_NODE | MapFlag.MMAPABLE | ACCESS_MASK | MapFlag.PRESERVE_ELEMS | MapFlag.INNER_MAP
)
GENERIC_BATCH: Final = frozenset({BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_UPDATE_BATCH})


class ArrayBase(BpfMap):
    """What every array shares: creation checks, indexing and iteration."""

    @classmethod
    def check_attr(cls, params: MapParams, kernel: Kernel) -> None:
        flags = params.map_flags
        percpu = params.map_type == MapType.PERCPU_ARRAY
        if (
            not params.max_entries
            or params.key_size != 4
            or not params.value_size
            or disallowed_flags(flags, CREATE_FLAGS, kernel)
            or not flags_access_ok(flags)
            or (percpu and params.numa_node != NUMA_NO_NODE)
        ):
            fail(errno.EINVAL, f"bad attributes for {params.map_type.name}")
        if params.map_type != MapType.ARRAY and flags & (MapFlag.MMAPABLE | MapFlag.INNER_MAP):
            fail(errno.EINVAL, "BPF_F_MMAPABLE and BPF_F_INNER_MAP are for ARRAY maps")
        if params.map_type != MapType.PERF_EVENT_ARRAY and flags & MapFlag.PRESERVE_ELEMS:
            fail(errno.EINVAL, "BPF_F_PRESERVE_ELEMS is for PERF_EVENT_ARRAY maps")
        if params.value_size > INT_MAX:
            fail(errno.E2BIG, "value_size above INT_MAX")
        if percpu and round_up(params.value_size, 8) > PCPU_MIN_UNIT_SIZE:
            fail(errno.E2BIG, "per-CPU value larger than PCPU_MIN_UNIT_SIZE")

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        entries = params.max_entries
        if not kernel.perfmon_capable():  # Spectre v1: the index mask covers a power of two
            entries = roundup_pow_of_two(entries)
            if entries > 0xFFFFFFFF:
                fail(errno.E2BIG, "max_entries rounded up past u32")
        elem = round_up(params.value_size, 8)
        if params.map_type == MapType.PERCPU_ARRAY:
            elem *= kernel.config.cpus
        check_size(elem * entries, "array elements")

    def index_of(self, key: bytes) -> int | None:
        """The element index `key` names, None when out of range."""
        index = key_index(key)
        return index if index < self.max_entries else None

    def get_next_key(self, key: bytes | None) -> bytes:
        return index_after(key, self.max_entries)

    def mem_usage(self) -> int:
        entries = self.max_entries
        if self.percpu:
            return ARRAY_SIZE + entries * 8 + entries * self.slot_size * self.kernel.config.cpus
        if self.map_flags & MapFlag.MMAPABLE:
            page = self.kernel.config.page_size
            return round_up(ARRAY_SIZE, page) + round_up(entries * self.slot_size, page)
        return ARRAY_SIZE + entries * self.slot_size


class ArrayMap(ArrayBase):
    """ARRAY: one contiguous buffer (a shared memfd mapping with BPF_F_MMAPABLE)."""

    map_types = (MapType.ARRAY,)
    batch_commands = GENERIC_BATCH

    def init_storage(self) -> None:
        super().init_storage()
        size = self.max_entries * self.slot_size
        self.memfd = -1
        self.data: bytearray | _mmap.mmap
        if self.map_flags & MapFlag.MMAPABLE:
            self.mapped_size = round_up(size, self.kernel.config.page_size)
            self.memfd = os.memfd_create("bpf-map-array", os.MFD_CLOEXEC)
            os.ftruncate(self.memfd, self.mapped_size)
            self.data = _mmap.mmap(self.memfd, self.mapped_size)
        else:
            self.data = bytearray(size)
        self._writable_maps: list[weakref.ref[_mmap.mmap]] = []

    def lookup(self, key: bytes) -> bytes:
        index = key_index(key)
        if index >= self.max_entries:
            fail(errno.ENOENT, f"index {index} out of range")
        start = index * self.slot_size
        return bytes(self.data[start : start + self.value_size])

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        index = key_index(key)
        if index >= self.max_entries:
            fail(errno.E2BIG, f"index {index} out of range")
        if flags == UpdateFlag.NOEXIST:
            fail(errno.EEXIST, "array elements always exist")
        start = index * self.slot_size
        self.data[start : start + self.value_size] = value

    def delete(self, key: bytes) -> None:
        fail(errno.EINVAL, "array elements cannot be deleted")

    def value_view(self, key: bytes, cpu: int) -> memoryview | None:
        index = self.index_of(key)
        if index is None:
            return None
        start = index * self.slot_size
        return memoryview(self.data)[start : start + self.value_size]

    # -- mmap ------------------------------------------------------------------------------------
    def mmap(self, length: int, prot: int, flags: int, offset: int) -> Mapping:
        """array_map_mmap behind bpf_map_mmap."""
        if not self.map_flags & MapFlag.MMAPABLE:
            fail(errno.EINVAL, "the array is not BPF_F_MMAPABLE")
        if not flags & _mmap.MAP_SHARED:
            fail(errno.EINVAL, "bpf maps are mapped MAP_SHARED only")
        writable = bool(prot & _mmap.PROT_WRITE)
        if writable and self.frozen:
            fail(errno.EPERM, "a frozen map cannot be mapped writable")
        if writable and self.map_flags & MapFlag.RDONLY_PROG:
            fail(errno.EACCES, "a BPF_F_RDONLY_PROG map cannot be mapped writable")
        page = self.kernel.config.page_size
        if length <= 0 or offset < 0 or offset % page:
            fail(errno.EINVAL, f"bad mapping range {offset}+{length}")
        if offset + round_up(length, page) > self.mapped_size:
            fail(errno.EINVAL, "mapping beyond the array")
        mapping = _mmap.mmap(self.memfd, length, flags=_mmap.MAP_SHARED, prot=prot, offset=offset)
        if writable:
            self._writable_maps.append(weakref.ref(mapping))
        return mapping

    @property
    def writable_mappings(self) -> int:
        """Writable mappings still open (bpf_map_write_active)."""
        alive = [ref for ref in self._writable_maps if (m := ref()) is not None and not m.closed]
        self._writable_maps = alive
        return len(alive)

    def release(self) -> None:
        if isinstance(self.data, _mmap.mmap):
            with contextlib.suppress(BufferError):  # programs may still hold views
                self.data.close()
            os.close(self.memfd)
            self.memfd = -1


class PercpuArrayMap(ArrayBase):
    """PERCPU_ARRAY: each element is `cpus` slots of round_up(value_size, 8) bytes."""

    map_types = (MapType.PERCPU_ARRAY,)
    batch_commands = GENERIC_BATCH

    def init_storage(self) -> None:
        super().init_storage()
        self.data = bytearray(self.max_entries * self.syscall_value_size)

    def lookup(self, key: bytes) -> bytes:
        index = key_index(key)
        if index >= self.max_entries:
            fail(errno.ENOENT, f"index {index} out of range")
        size = self.syscall_value_size
        return bytes(self.data[index * size : (index + 1) * size])

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        index = key_index(key)
        if index >= self.max_entries:
            fail(errno.E2BIG, f"index {index} out of range")
        if flags == UpdateFlag.NOEXIST:
            fail(errno.EEXIST, "array elements always exist")
        size = self.syscall_value_size
        self.data[index * size : (index + 1) * size] = value

    def delete(self, key: bytes) -> None:
        fail(errno.EINVAL, "array elements cannot be deleted")

    def value_view(self, key: bytes, cpu: int) -> memoryview | None:
        index = self.index_of(key)
        if index is None:
            return None
        start = index * self.syscall_value_size + cpu * self.slot_size
        return memoryview(self.data)[start : start + self.value_size]

    def update_from_prog(self, key: bytes, value: bytes, flags: int, cpu: int) -> None:
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        view = self.value_view(key, cpu)
        if view is None:
            fail(errno.E2BIG, "index out of range")
        if flags == UpdateFlag.NOEXIST:
            fail(errno.EEXIST, "array elements always exist")
        view[:] = value


class FdArrayMap(ArrayBase):
    """An array of kernel objects put in by fd (bpf_fd_array_map_update_elem)."""

    object_kind: ClassVar[str] = "object"

    def init_storage(self) -> None:
        super().init_storage()
        self.entries: list[KernelObject | None] = [None] * self.max_entries
        self.stored_via: list[int] = [-1] * self.max_entries
        """The map fd each entry was stored through (perf event arrays forget entries when
        that fd closes)."""

    @classmethod
    def check_attr(cls, params: MapParams, kernel: Kernel) -> None:
        if params.value_size != 4:
            fail(errno.EINVAL, "fd arrays store 4-byte fds")
        if params.map_flags & (MapFlag.RDONLY_PROG | MapFlag.WRONLY_PROG):
            fail(errno.EINVAL, "program access flags on an fd array")
        super().check_attr(params, kernel)

    def admit(self, fd: int) -> KernelObject:
        """The object behind `fd`, with a new reference for the array (map_fd_get_ptr)."""
        raise NotImplementedError

    def object_at(self, key: bytes) -> KernelObject | None:
        """The object stored under index `key` (what a program's helper uses)."""
        index = self.index_of(key)
        return None if index is None else self.entries[index]

    def lookup(self, key: bytes) -> bytes:
        obj = self.object_at(key)
        if obj is None:
            fail(errno.ENOENT, "empty or out-of-range slot")
        return obj.id.to_bytes(4, "little")

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        self.update_via_fd(-1, key, value, flags)

    def update_via_fd(self, map_fd: int, key: bytes, value: bytes, flags: int) -> None:
        """Store the object behind the fd in `value`, through map fd `map_fd`."""
        if flags != UpdateFlag.ANY:
            fail(errno.EINVAL, "fd arrays take BPF_ANY only")
        index = key_index(key)
        if index >= self.max_entries:
            fail(errno.E2BIG, f"index {index} out of range")
        new = self.admit(int.from_bytes(value, "little"))
        old, self.entries[index] = self.entries[index], new
        self.stored_via[index] = map_fd
        if old is not None:
            old.put()

    def delete(self, key: bytes) -> None:
        index = key_index(key)
        if index >= self.max_entries:
            fail(errno.E2BIG, f"index {index} out of range")
        old, self.entries[index] = self.entries[index], None
        if old is None:
            fail(errno.ENOENT, "empty slot")
        old.put()

    def mem_usage(self) -> int:
        return ARRAY_SIZE + self.max_entries * self.slot_size

    def release(self) -> None:
        for obj in self.entries:
            if obj is not None:
                obj.put()
        self.entries = [None] * self.max_entries


class ProgArrayMap(FdArrayMap):
    """PROG_ARRAY: programs for tail calls (prog fd in, prog id out)."""

    map_types = (MapType.PROG_ARRAY,)

    def init_storage(self) -> None:
        super().init_storage()
        self.owner: tuple[int, int] | None = None
        """(program type, jited) of the programs this array may hold, fixed by the first."""

    def compatible(self, prog: BpfProgram) -> bool:
        """bpf_prog_map_compatible: whether `prog` may share this array (the first program, or
        a program using the array, sets the owner)."""
        kind = (int(prog.prog_type), int(getattr(prog, "jited", False)))
        if self.owner is None:
            self.owner = kind
        return self.owner == kind

    def admit(self, fd: int) -> KernelObject:
        prog = self.kernel.fds.get(fd, BpfProgram)
        if not self.compatible(prog):
            fail(errno.EINVAL, f"{prog!r} does not match the array's owner {self.owner}")
        prog.hold()
        return prog

    def program_at(self, index: int) -> BpfProgram | None:
        """The program for a tail call to `index` (None: the call falls through)."""
        obj = self.entries[index] if 0 <= index < self.max_entries else None
        return obj if isinstance(obj, BpfProgram) else None

    def owner_fdinfo(self) -> list[tuple[str, str]]:
        if self.owner is None:
            return []
        return [("owner_prog_type", str(self.owner[0])), ("owner_jited", str(self.owner[1]))]


class PerfEventArrayMap(FdArrayMap):
    """PERF_EVENT_ARRAY: perf events for bpf_perf_event_output / bpf_perf_event_read."""

    map_types = (MapType.PERF_EVENT_ARRAY,)

    def admit(self, fd: int) -> KernelObject:
        obj = self.kernel.fds.lookup(fd)
        if not isinstance(obj, PerfEvent):
            fail(errno.EBADF, f"fd {fd} is not a perf event")  # perf_event_get
        if int(obj.attr.flags) & PerfAttrFlag.INHERIT:
            fail(errno.EOPNOTSUPP, "an inherited event cannot be read from a program")
        obj.hold()
        return obj

    def lookup(self, key: bytes) -> bytes:
        fail(ENOTSUPP, "perf event arrays have no syscall lookup")

    def event_at(self, index: int) -> PerfEvent | None:
        """The perf event stored at `index` (bpf_perf_event_output / bpf_perf_event_read)."""
        obj = self.entries[index] if 0 <= index < self.max_entries else None
        return obj if isinstance(obj, PerfEvent) else None

    def file_closed(self, fd: int) -> None:
        """perf_event_fd_array_release: forget the events stored through `fd`."""
        if self.map_flags & MapFlag.PRESERVE_ELEMS:
            return
        for index, via in enumerate(self.stored_via):
            if via == fd and self.entries[index] is not None:
                self.delete(index.to_bytes(4, "little"))


class CgroupArrayMap(FdArrayMap):
    """CGROUP_ARRAY: cgroups put in by the fd of a cgroup2 directory of this process (the
    simulator has no cgroupfs of its own; any other fd is EBADF, as cgroup_get_from_fd says)."""

    map_types = (MapType.CGROUP_ARRAY,)

    def admit(self, fd: int) -> KernelObject:
        return HostCgroup(self.kernel.objects, cgroup_dir(fd))

    def lookup(self, key: bytes) -> bytes:
        fail(ENOTSUPP, "cgroup arrays have no syscall lookup")


class ArrayOfMaps(MapOfMaps, FdArrayMap):
    """ARRAY_OF_MAPS: maps fitting the inner map template (map fd in, map id out)."""

    map_types = (MapType.ARRAY_OF_MAPS,)
    batch_commands = GENERIC_BATCH

    def admit(self, fd: int) -> KernelObject:
        return self.template.admit(self.kernel, fd)

    def inner_map(self, key: bytes) -> BpfMap | None:
        """The map stored under `key` (what a program's lookup returns)."""
        obj = self.object_at(key)
        return obj if isinstance(obj, BpfMap) else None
