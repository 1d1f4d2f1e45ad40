"""DEVMAP and DEVMAP_HASH: network devices (and their XDP_DEVMAP programs) for bpf_redirect_map.

Theory of operation
-------------------
Creation (dev_map_alloc_check, before the CAP_NET_ADMIN check): max_entries 0, key_size other
than 4, value_size other than 4 (ifindex) or 8 (ifindex + program fd, since 5.8), or flags
outside NUMA_NODE | RDONLY | WRONLY: EINVAL; DEVMAP_HASH with more than 2^31 entries: EINVAL.
Since 5.8 the kernel adds BPF_F_RDONLY_PROG to the map's flags (programs get a read-only value).

A value names a device by ifindex; the simulated machine has one device, lo (ifindex 1). Storing
a value (__dev_map_alloc_node): a device that does not exist is EINVAL, and so is a program fd
(when > 0) that is not an XDP program loaded with expected_attach_type BPF_XDP_DEVMAP. Lookups
give back the ifindex and the program's id (0 without one).

| operation        | DEVMAP (index < max_entries)             | DEVMAP_HASH (any u32 key)         |
|------------------|------------------------------------------|-----------------------------------|
| update flags > 2 | EINVAL                                   | EINVAL                            |
| update NOEXIST   | EEXIST, always                           | EEXIST when the key is there      |
| update ifindex 0 | empties the slot (a program fd: EINVAL)  | EINVAL (no device 0)              |
| update, new key  | index >= max_entries: E2BIG (before the  | E2BIG when max_entries are stored |
|                  | value is looked at)                      | (after the value is checked)      |
| lookup           | ENOENT for an empty or out-of-range slot | ENOENT when absent                |
| delete           | 0 (also when empty); EINVAL out of range | ENOENT when absent                |
| get_next_key     | index + 1 (array walk)                   | the kernel's bucket walk (below)  |

DEVMAP counts "items" as the kernel does: +1 whenever a slot that was empty is written (even
with ifindex 0, which leaves it empty), -1 when a delete empties a slot that held a device;
memlock is sizeof(bpf_dtab) + 8 per slot (DEVMAP) or per bucket (DEVMAP_HASH) + 64 per item.

DEVMAP_HASH keeps n_buckets = roundup_pow_of_two(max_entries) lists, bucket = key & (n - 1),
each newest first (a replaced key moves to the front): GET_NEXT_KEY gives the next key in the
key's bucket, else the first key of the next non-empty bucket; a NULL or absent key starts from
bucket 0. This is the kernel's order exactly (its hash is the key itself).
"""

from __future__ import annotations

import errno
from typing import Any, Final

import attrs

from bpfsys.abi import AttachType, MapFlag, MapType, ProgType, UpdateFlag
from kernelsim.errors import fail
from kernelsim.kernel import Kernel
from kernelsim.maps.base import (
    BpfMap,
    MapParams,
    check_size,
    index_after,
    key_index,
    roundup_pow_of_two,
)
from kernelsim.prog.program import BpfProgram

NET_DEVICES: Final = {1: "lo"}
"""The simulated machine's network devices by ifindex."""
DTAB_SIZE: Final = 344
"""sizeof(struct bpf_dtab), measured through fdinfo memlock on 6.18 x86_64."""
DTAB_NETDEV_SIZE: Final = 64
"""sizeof(struct bpf_dtab_netdev): what each stored device adds to memlock."""
CREATE_FLAGS: Final = MapFlag.NUMA_NODE | MapFlag.RDONLY | MapFlag.WRONLY


@attrs.frozen
class Device:
    """A stored device: its ifindex and the XDP_DEVMAP program run on redirect (if any)."""

    ifindex: int
    prog: BpfProgram | None

    def value(self, size: int) -> bytes:
        prog_id = 0 if self.prog is None else self.prog.id
        return (self.ifindex | prog_id << 32).to_bytes(8, "little")[:size]

    def drop(self) -> None:
        if self.prog is not None:
            self.prog.put()


class DevMapBase(BpfMap):
    """What DEVMAP and DEVMAP_HASH share: creation checks and storing a value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.items = 0

    @classmethod
    def check_attr(cls, params: MapParams, kernel: Kernel) -> None:
        sizes = (4, 8) if kernel.profile.has_behaviour("devmap_prog") else (4,)
        if (
            not params.max_entries
            or params.key_size != 4
            or params.value_size not in sizes
            or params.map_flags & ~int(CREATE_FLAGS)
        ):
            fail(errno.EINVAL, f"bad attributes for {params.map_type.name}")
        if params.map_type == MapType.DEVMAP_HASH and params.max_entries > 1 << 31:
            fail(errno.EINVAL, "more than 2^31 DEVMAP_HASH entries")

    @classmethod
    def create(cls, kernel: Kernel, params: MapParams) -> BpfMap:
        if kernel.profile.has_behaviour("devmap_prog"):  # programs may only read the value
            params = attrs.evolve(params, map_flags=params.map_flags | MapFlag.RDONLY_PROG)
        return super().create(kernel, params)

    def new_device(self, value: bytes) -> Device:
        """__dev_map_alloc_node: the device and program `value` names (EINVAL otherwise)."""
        ifindex = int.from_bytes(value[:4], "little")
        prog_fd = int.from_bytes(value[4:8], "little", signed=True) if len(value) == 8 else 0
        if ifindex not in NET_DEVICES:
            fail(errno.EINVAL, f"no network device with ifindex {ifindex}")
        if prog_fd <= 0:
            return Device(ifindex, None)
        prog = self.kernel.fds.lookup(prog_fd)
        if (
            not isinstance(prog, BpfProgram)
            or prog.prog_type is not ProgType.XDP
            or prog.expected_attach_type is not AttachType.XDP_DEVMAP
        ):
            fail(errno.EINVAL, f"fd {prog_fd} is not an XDP program for BPF_XDP_DEVMAP")
        prog.hold()
        return Device(ifindex, prog)

    @staticmethod
    def table_slots(max_entries: int) -> int:
        """The 8-byte slots (DEVMAP) or bucket heads (DEVMAP_HASH) the map allocates."""
        raise NotImplementedError

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        check_size(8 * cls.table_slots(params.max_entries), "device table")

    def mem_usage(self) -> int:
        return DTAB_SIZE + 8 * self.table_slots(self.max_entries) + DTAB_NETDEV_SIZE * self.items


class DevMap(DevMapBase):
    """DEVMAP: an array of devices indexed by key."""

    map_types = (MapType.DEVMAP,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots: dict[int, Device | None] = {}
        """Written slots (None: written with ifindex 0 or deleted)."""

    @staticmethod
    def table_slots(max_entries: int) -> int:
        return max_entries

    def lookup(self, key: bytes) -> bytes:
        device = self.slots.get(key_index(key))
        if device is None:
            fail(errno.ENOENT, "no device in this slot")
        return device.value(self.value_size)

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        index = key_index(key)
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        if index >= self.max_entries:
            fail(errno.E2BIG, f"index {index} out of range")
        if flags == UpdateFlag.NOEXIST:
            fail(errno.EEXIST, "devmap slots always exist")
        new: Device | None = None
        if int.from_bytes(value[:4], "little") == 0:
            if len(value) == 8 and int.from_bytes(value[4:], "little", signed=True) > 0:
                fail(errno.EINVAL, "a program without a device")
        else:
            new = self.new_device(value)
        old = self.slots.get(index)
        self.slots[index] = new
        if old is None:
            self.items += 1
        else:
            old.drop()

    def delete(self, key: bytes) -> None:
        index = key_index(key)
        if index >= self.max_entries:
            fail(errno.EINVAL, f"index {index} out of range")
        old = self.slots.pop(index, None)
        if old is not None:
            self.items -= 1
            old.drop()

    def get_next_key(self, key: bytes | None) -> bytes:
        return index_after(key, self.max_entries)

    def release(self) -> None:
        for device in self.slots.values():
            if device is not None:
                device.drop()
        self.slots = {}


class DevMapHash(DevMapBase):
    """DEVMAP_HASH: devices by any u32 key, in the kernel's buckets."""

    map_types = (MapType.DEVMAP_HASH,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_buckets = roundup_pow_of_two(self.max_entries)
        self.devices: dict[int, Device] = {}
        self.buckets: dict[int, list[int]] = {}
        """bucket -> its keys, newest first."""

    @staticmethod
    def table_slots(max_entries: int) -> int:
        return roundup_pow_of_two(max_entries)

    def lookup(self, key: bytes) -> bytes:
        device = self.devices.get(key_index(key))
        if device is None:
            fail(errno.ENOENT, "no such key")
        return device.value(self.value_size)

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        index = key_index(key)
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        old = self.devices.get(index)
        if old is not None and flags == UpdateFlag.NOEXIST:
            fail(errno.EEXIST, "key exists (BPF_NOEXIST)")
        new = self.new_device(value)
        bucket = self.buckets.setdefault(index & (self.n_buckets - 1), [])
        if old is not None:
            bucket.remove(index)
            old.drop()
        elif self.items >= self.max_entries:
            new.drop()
            fail(errno.E2BIG, f"map full ({self.max_entries} entries)")
        else:
            self.items += 1
        bucket.insert(0, index)
        self.devices[index] = new

    def delete(self, key: bytes) -> None:
        index = key_index(key)
        old = self.devices.pop(index, None)
        if old is None:
            fail(errno.ENOENT, "no such key")
        self.buckets[index & (self.n_buckets - 1)].remove(index)
        self.items -= 1
        old.drop()

    def get_next_key(self, key: bytes | None) -> bytes:
        start = 0
        if key is not None and key_index(key) in self.devices:
            index = key_index(key)
            bucket = self.buckets[index & (self.n_buckets - 1)]
            at = bucket.index(index)
            if at + 1 < len(bucket):
                return bucket[at + 1].to_bytes(4, "little")
            start = (index & (self.n_buckets - 1)) + 1
        later = sorted(b for b, keys in self.buckets.items() if keys and b >= start)
        if not later:
            fail(errno.ENOENT, "no key after the given one")
        return self.buckets[later[0]][0].to_bytes(4, "little")

    def release(self) -> None:
        for device in self.devices.values():
            device.drop()
        self.devices = {}
        self.buckets = {}
