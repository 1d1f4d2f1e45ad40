"""Kernel version profiles, derived from the ABI's `since` annotations.

A `Profile` answers "did kernel X have this?" for every command, map type, program type,
attach type, link type, helper, flag and attr field that `bpfsys.abi` mirrors, from the version
each was added in: one source of truth. Behaviours that are not an ABI item (for example
LOOKUP_AND_DELETE on hash maps) are listed in BEHAVIOURS with the release that brought them.
"""

from __future__ import annotations

from functools import cache, cached_property, lru_cache
from typing import Final

import attrs

from bpfsys.abi import (
    ATTR_OF_COMMAND,
    BpfAttr,
    BpfCmd,
    MapFlag,
    MapType,
    PerfEventAttr,
    ProgType,
    VersionedEnum,
    VersionedFlag,
)
from bpfsys.kversion import KernelVersion, since, to_version

NAMED_PROFILES: Final = ("6.18", "6.1", "5.15", "5.10", "5.4")
"""The profiles documented and tested; any version string is accepted."""

BEHAVIOURS: Final[dict[str, str]] = {
    "cap_bpf": "5.8",  # CAP_BPF and CAP_PERFMON exist
    "hash_lookup_and_delete": "5.14",  # BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps
    "bpf_cookie": "5.15",  # link_create.perf_event.bpf_cookie and bpf_get_attach_cookie
    "perf_link": "5.15",  # BPF_LINK_CREATE with BPF_PERF_EVENT
    "log_true_size": "6.4",  # rotating verifier log, log_true_size, no 128-byte minimum
    "kprobe_any_kern_version": "5.0",  # kprobe programs no longer need kern_version to match
    "bpf_complexity_1m": "5.2",  # privileged loads may have up to 1M instructions
    "prog_tag_sha256": "6.18",  # the program tag is SHA-256 based (SHA-1 before)
    "array_lookup_nonnull": "6.14",  # array lookup with a constant in-range key is not NULL
    "map_info_hash": "6.18",  # map info: hash/hash_size, and unset fields keep the caller's bytes
    "raw_tp_cookie": "6.10",  # raw tracepoint links carry a cookie (fdinfo line, link info)
    "perf_link_info": "6.6",  # perf_event links fill link_info.perf_event and fdinfo lines
    "btf_info_name": "5.11",  # bpf_btf_info has name, name_len, kernel_btf
    "bpf_token": "6.9",  # BPF_F_TOKEN_FD in *_flags of MAP_CREATE, PROG_LOAD, BTF_LOAD
    "memcg_accounting": "5.11",  # map memory is charged to memcg, not RLIMIT_MEMLOCK
    "kprobe_pmu": "4.17",  # the kprobe PMU (/sys/bus/event_source/devices/kprobe)
    "uprobe_pmu": "4.17",  # the uprobe PMU
    "perf_clock_pmu_types": "6.15",  # cpu_clock/task_clock PMUs take types 6 and 7 (kprobe 8)
    "map_mem_usage": "6.4",  # fdinfo memlock is each map type's exact map_mem_usage()
    "unpriv_checks_in_commands": "6.5",  # unprivileged_bpf_disabled checked in MAP_CREATE, not
    # at bpf() entry for every command
    "devmap_prog": "5.8",  # devmap values may carry a program fd; devmaps get BPF_F_RDONLY_PROG
    "cpumap_prog": "5.9",  # cpumap values may carry a program fd
    "sockmap_cookie": "5.6",  # sock maps take 8-byte values; lookups give the socket cookie
    "stack_trace_lookup_and_delete": "6.18",  # LOOKUP_AND_DELETE_ELEM on STACK_TRACE maps
    "fd_htab_update_in_place": "6.16",  # HASH_OF_MAPS updates replace the inner map in place
    # (the key keeps its place in its bucket; before, a new element went to the bucket's head)
}


FEATURES: Final[dict[str, VersionedEnum | VersionedFlag | str]] = {
    "bpf links (BPF_LINK_CREATE)": BpfCmd.LINK_CREATE,
    "batch map operations": BpfCmd.MAP_LOOKUP_BATCH,
    "BPF_ENABLE_STATS": BpfCmd.ENABLE_STATS,
    "BPF_MAP_TYPE_RINGBUF": MapType.RINGBUF,
    "CAP_BPF / CAP_PERFMON": "cap_bpf",
    "mmapable arrays (BPF_F_MMAPABLE)": MapFlag.MMAPABLE,
    "hash map LOOKUP_AND_DELETE": "hash_lookup_and_delete",
    "BPF_PROG_TYPE_SYSCALL": ProgType.SYSCALL,
    "perf_event links": "perf_link",
    "bpf cookie": "bpf_cookie",
    "BPF_MAP_TYPE_BLOOM_FILTER": MapType.BLOOM_FILTER,
    "log_true_size": "log_true_size",
}
"""Features users probe for, by name: an ABI item (its `since`) or a BEHAVIOURS key."""


@attrs.frozen
class Profile:
    """What kernel `version` had."""

    version: KernelVersion = attrs.field(converter=to_version)

    def has(self, item: VersionedEnum | VersionedFlag) -> bool:
        """Whether the kernel knew this enum member or flag."""
        return _had(self.version, item)

    def has_behaviour(self, name: str) -> bool:
        """Whether the kernel had the behaviour `name` of BEHAVIOURS."""
        return _had(self.version, name)

    def has_feature(self, name: str) -> bool:
        """Whether the kernel had FEATURES[name]."""
        item = FEATURES[name]
        return self.has_behaviour(item) if isinstance(item, str) else self.has(item)

    def lacks(self) -> list[str]:
        """The FEATURES this kernel did not have yet."""
        return [name for name in FEATURES if not self.has_feature(name)]

    def known_flags(self, flag_type: type[VersionedFlag]) -> int:
        """The bits of `flag_type` that this kernel knew."""
        return _known_flags(self.version, flag_type)

    def attr_end(self, attr_type: type[BpfAttr], cmd: BpfCmd) -> int:
        """Where this kernel's fields of `cmd` end (bytes after them must be zero)."""
        return _attr_end(self.version, attr_type, cmd)

    @cached_property
    def bpf_attr_size(self) -> int:
        """sizeof(union bpf_attr) in this kernel."""
        return max(cls.sizeof_for(self.version) for cls in set(ATTR_OF_COMMAND.values()))

    @cached_property
    def perf_attr_size(self) -> int:
        """sizeof(struct perf_event_attr) in this kernel (PERF_ATTR_SIZE_VERn)."""
        return PerfEventAttr.sizeof_for(self.version)


# Answers per version, cached: every bpf() call asks them (parsing and comparing versions is slow).
# typed=True: members of different IntEnum/IntFlag types with equal values (PerfAttrFlag.DISABLED
# and SampleType.IP are both 1) compare and hash as equal ints and must not share an entry.
@lru_cache(maxsize=None, typed=True)
def _had(version: KernelVersion, item: VersionedEnum | VersionedFlag | str) -> bool:
    added = since(BEHAVIOURS[item]) if isinstance(item, str) else item.since
    return added <= version


@cache
def _known_flags(version: KernelVersion, flag_type: type[VersionedFlag]) -> int:
    return sum(int(f) for f in flag_type if _had(version, f))


@cache
def _attr_end(version: KernelVersion, attr_type: type[BpfAttr], cmd: BpfCmd) -> int:
    return attr_type.end_for(cmd, version)
