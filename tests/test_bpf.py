"""Behaviour of the typed bpf() wrappers, on every backend (the `backend` fixture).

Programs are written with `bpfsys.asm.assemble_text`; expected errnos are the live kernel's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pickle
import re
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import open_fd_count
from spies import RecordingBackend

from bpfsys import bpf
from bpfsys.abi import (
    BPF_OBJ_NAME_LEN,
    BPF_TAG_SIZE,
    AbiStruct,
    AttachFlag,
    AttachType,
    BpfMapInfo,
    BpfPerfEventType,
    LinkType,
    MapFlag,
    MapType,
    PerfAttrFlag,
    PerfEventAttr,
    PerfSwId,
    PerfType,
    ProgType,
    UpdateFlag,
)
from bpfsys.asm import Insn, assemble_text
from bpfsys.backend import Backend
from bpfsys.fd import OwnedFd
from bpfsys.kversion import KernelVersion
from bpfsys.syscall import PerfEventOpen, SyscallError, syscall

RET_7 = "mov %r0, 7\nexit"


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def prog(text: str) -> list[Insn]:
    return assemble_text(text)


@pytest.fixture
def kver(backend: Backend) -> KernelVersion:
    return KernelVersion.parse(backend.read_file("/proc/sys/kernel/osrelease").decode())


def need(kver: KernelVersion, version: str, what: str) -> None:
    if kver < KernelVersion.parse(version):
        pytest.skip(f"{what} needs Linux {version}, the backend's kernel is {kver}")


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as s:
        yield s


def expect_errno(err: int, action: Callable[[], object]) -> SyscallError:
    with pytest.raises(SyscallError) as info:
        action()
    assert info.value.errno == err, f"expected {errno.errorcode[err]}, got {info.value}"
    return info.value


# ---------------------------------------------------------------------------------------------
# Map creation
# ---------------------------------------------------------------------------------------------
# (type, key_size, value_size, max_entries, flags, map_extra)
MAP_SPECS = [
    (MapType.HASH, 4, 8, 16, 0, 0),
    (MapType.ARRAY, 4, 8, 16, 0, 0),
    (MapType.PROG_ARRAY, 4, 4, 4, 0, 0),
    (MapType.PERF_EVENT_ARRAY, 4, 4, 2, 0, 0),
    (MapType.PERCPU_HASH, 4, 8, 16, 0, 0),
    (MapType.PERCPU_ARRAY, 4, 8, 16, 0, 0),
    (MapType.STACK_TRACE, 4, 8 * 16, 16, 0, 0),
    (MapType.CGROUP_ARRAY, 4, 4, 4, 0, 0),
    (MapType.LRU_HASH, 4, 8, 16, 0, 0),
    (MapType.LRU_PERCPU_HASH, 4, 8, 16, 0, 0),
    (MapType.LPM_TRIE, 8, 4, 16, MapFlag.NO_PREALLOC, 0),
    (MapType.ARRAY_OF_MAPS, 4, 4, 4, 0, 0),
    (MapType.HASH_OF_MAPS, 4, 4, 4, 0, 0),
    (MapType.DEVMAP, 4, 4, 4, 0, 0),
    (MapType.SOCKMAP, 4, 4, 4, 0, 0),
    (MapType.CPUMAP, 4, 4, 2, 0, 0),
    (MapType.XSKMAP, 4, 4, 4, 0, 0),
    (MapType.SOCKHASH, 4, 4, 4, 0, 0),
    (MapType.QUEUE, 0, 4, 4, 0, 0),
    (MapType.STACK, 0, 4, 4, 0, 0),
    (MapType.DEVMAP_HASH, 4, 4, 4, 0, 0),
    (MapType.RINGBUF, 0, 0, 4096, 0, 0),
    (MapType.BLOOM_FILTER, 0, 4, 16, 0, 3),
]


IMPLIED_FLAGS = {MapType.DEVMAP: MapFlag.RDONLY_PROG, MapType.DEVMAP_HASH: MapFlag.RDONLY_PROG}
"""Flags the kernel adds itself (dev_map_alloc_check, 5.8: programs must not write devmaps)."""


@pytest.mark.parametrize(
    ("map_type", "key_size", "value_size", "max_entries", "flags", "map_extra"),
    MAP_SPECS,
    ids=[spec[0].name for spec in MAP_SPECS],
)
def test_map_create_every_type(
    backend: Backend,
    kver: KernelVersion,
    stack: contextlib.ExitStack,
    map_type: MapType,
    key_size: int,
    value_size: int,
    max_entries: int,
    flags: int,
    map_extra: int,
) -> None:
    need(kver, str(map_type.since), map_type.c_name)
    inner = None
    if map_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        inner = stack.enter_context(bpf.map_create(MapType.ARRAY, 4, 4, 1))
    fd = stack.enter_context(
        bpf.map_create(
            map_type,
            key_size,
            value_size,
            max_entries,
            name=f"t_{map_type.name.lower()}"[: BPF_OBJ_NAME_LEN - 1],
            flags=flags,
            inner_map_fd=inner,
            map_extra=map_extra,
        )
    )
    assert fd.backend is backend
    info = bpf.map_info(fd)
    assert (info.type, info.key_size, info.value_size, info.max_entries) == (
        map_type,
        key_size,
        value_size,
        max_entries,
    )
    implied = IMPLIED_FLAGS.get(map_type, 0) if kver >= KernelVersion(5, 8) else 0
    assert info.map_flags == flags | implied
    assert info.map_extra == map_extra
    assert bpf.obj_name(info.name) == f"t_{map_type.name.lower()}"[:15]
    assert info.id > 0


@pytest.mark.parametrize(
    ("map_type", "key_size", "value_size", "max_entries", "flags"),
    [
        (MapType.HASH, 0, 4, 1, 0),  # hash keys cannot be empty
        (MapType.HASH, 4, 0, 1, 0),
        (MapType.ARRAY, 8, 4, 1, 0),  # array keys are u32 indices
        (MapType.ARRAY, 4, 4, 0, 0),
        (MapType.LPM_TRIE, 8, 4, 16, 0),  # LPM tries need BPF_F_NO_PREALLOC
        (MapType.QUEUE, 4, 4, 4, 0),  # queues have no key
        (MapType.RINGBUF, 0, 0, 4095, 0),  # ring size must be a power-of-2 page multiple
        (MapType.HASH, 4, 4, 1, 1 << 30),  # an unknown flag
    ],
    ids=[
        "hash-key0",
        "hash-value0",
        "array-key8",
        "array-0",
        "lpm-prealloc",
        "queue-key",
        "ringbuf-size",
        "flag",
    ],
)
def test_map_create_rejects_bad_sizes_with_einval(
    backend: Backend,
    no_fd_leak: None,
    map_type: MapType,
    key_size: int,
    value_size: int,
    max_entries: int,
    flags: int,
) -> None:
    expect_errno(
        errno.EINVAL,
        lambda: bpf.map_create(map_type, key_size, value_size, max_entries, flags=flags),
    )


# ---------------------------------------------------------------------------------------------
# Element CRUD
# ---------------------------------------------------------------------------------------------
def test_hash_crud_and_flag_errnos(backend: Backend, no_fd_leak: None) -> None:
    with bpf.map_create(MapType.HASH, 4, 8, 2) as m:
        assert bpf.map_lookup_elem(m, u32(1), 8) is None
        bpf.map_update_elem(m, u32(1), b"value-01")
        assert bpf.map_lookup_elem(m, u32(1), 8) == b"value-01"
        bpf.map_update_elem(m, u32(1), b"value-02", flags=UpdateFlag.EXIST)
        assert bpf.map_lookup_elem(m, u32(1), 8) == b"value-02"
        e = expect_errno(
            errno.EEXIST,
            lambda: bpf.map_update_elem(m, u32(1), b"value-03", flags=UpdateFlag.NOEXIST),
        )
        assert e.call == "bpf(BPF_MAP_UPDATE_ELEM)"
        assert bpf.map_lookup_elem(m, u32(1), 8) == b"value-02"
        expect_errno(
            errno.ENOENT,
            lambda: bpf.map_update_elem(m, u32(2), b"value-04", flags=UpdateFlag.EXIST),
        )
        bpf.map_update_elem(m, u32(2), b"value-05", flags=UpdateFlag.NOEXIST)
        expect_errno(errno.E2BIG, lambda: bpf.map_update_elem(m, u32(3), b"value-06"))
        assert bpf.map_lookup_and_delete_elem(m, u32(2), 8) == b"value-05"
        assert bpf.map_lookup_elem(m, u32(2), 8) is None
        assert bpf.map_delete_elem(m, u32(1)) is True
        assert bpf.map_delete_elem(m, u32(1)) is False
        assert bpf.map_lookup_and_delete_elem(m, u32(1), 8) is None
        bpf.map_update_elem(m, u32(3), b"value-07")  # room again after the deletes
        assert bpf.map_lookup_elem(m, u32(3), 8) == b"value-07"


def test_array_crud_and_errnos(backend: Backend, no_fd_leak: None) -> None:
    with bpf.map_create(MapType.ARRAY, 4, 4, 3) as m:
        assert [bpf.map_lookup_elem(m, u32(i), 4) for i in range(3)] == [b"\0" * 4] * 3
        bpf.map_update_elem(m, u32(2), b"abcd")
        assert bpf.map_lookup_elem(m, u32(2), 4) == b"abcd"
        expect_errno(
            errno.EEXIST, lambda: bpf.map_update_elem(m, u32(0), b"x" * 4, flags=UpdateFlag.NOEXIST)
        )
        expect_errno(errno.E2BIG, lambda: bpf.map_update_elem(m, u32(3), b"wxyz"))
        assert bpf.map_lookup_elem(m, u32(3), 4) is None
        expect_errno(errno.EINVAL, lambda: bpf.map_delete_elem(m, u32(0)))
        expect_errno(errno.EINVAL, lambda: bpf.map_update_elem(m, u32(0), b"abcd", flags=8))


def test_percpu_array_values_per_cpu(backend: Backend, no_fd_leak: None) -> None:
    ncpus = bpf.possible_cpus()
    text = backend.read_file("/sys/devices/system/cpu/possible").decode()
    assert ncpus == max(bpf.parse_cpu_list(text)) + 1
    size = bpf.percpu_value_size(4)
    assert size == 8 * ncpus
    values = [bytes([0x10 + cpu] * 4) for cpu in range(ncpus)]
    with bpf.map_create(MapType.PERCPU_ARRAY, 4, 4, 1) as m:
        bpf.map_update_elem(m, u32(0), bpf.join_percpu(values, 4))
        raw = bpf.map_lookup_elem(m, u32(0), size)
        assert raw is not None and len(raw) == size
        assert bpf.split_percpu(raw, 4) == values
        assert raw[4:8] == b"\0" * 4  # the padding of each 8-byte slot


class SysfsCpus(RecordingBackend):
    """A backend whose /sys/devices/system/cpu/possible reads `text`; counts the reads."""

    def __init__(self, inner: Backend, text: bytes) -> None:
        super().__init__(inner)
        self.text = text
        self.reads: list[str] = []

    def read_file(self, path: str) -> bytes:
        self.reads.append(path)
        return self.text if path == "/sys/devices/system/cpu/possible" else super().read_file(path)


def test_possible_cpus_reads_sysfs_through_backend_once(backend: Backend) -> None:
    sparse = SysfsCpus(backend, b"0-3,6-7\n")  # holes count: the slot index is the CPU number
    assert bpf.possible_cpus(backend=sparse) == 8
    assert bpf.percpu_value_size(12, backend=sparse) == 16 * 8
    assert sparse.reads == ["/sys/devices/system/cpu/possible"]  # cached per backend
    assert bpf.possible_cpus(backend=SysfsCpus(backend, b"0\n")) == 1


def test_percpu_helpers_are_pure() -> None:
    assert bpf.parse_cpu_list("0-3,5,7-8\n") == [0, 1, 2, 3, 5, 7, 8]
    joined = bpf.join_percpu([b"abc", b"def"], 3)
    assert joined == b"abc\0\0\0\0\0def\0\0\0\0\0"
    assert bpf.split_percpu(joined, 3) == [b"abc", b"def"]
    with pytest.raises(ValueError, match="multiple of 8"):
        bpf.split_percpu(b"abc", 3)
    with pytest.raises(ValueError, match="3 bytes"):
        bpf.join_percpu([b"ab"], 3)


@pytest.mark.parametrize(
    ("map_type", "order"), [(MapType.QUEUE, [0, 1, 2]), (MapType.STACK, [2, 1, 0])]
)
def test_queue_and_stack_push_peek_pop(
    backend: Backend, no_fd_leak: None, map_type: MapType, order: list[int]
) -> None:
    items = [b"item-%d" % i for i in range(3)]
    with bpf.map_create(map_type, 0, 6, 3) as m:
        assert bpf.map_lookup_elem(m, b"", 6) is None
        for item in items:
            bpf.map_update_elem(m, b"", item)
        expect_errno(errno.E2BIG, lambda: bpf.map_update_elem(m, b"", b"item-3"))
        assert bpf.map_lookup_elem(m, b"", 6) == items[order[0]]  # peek does not remove
        assert [bpf.map_lookup_and_delete_elem(m, b"", 6) for _ in items] == [
            items[i] for i in order
        ]
        assert bpf.map_lookup_and_delete_elem(m, b"", 6) is None


def test_map_freeze_blocks_user_writes(backend: Backend, no_fd_leak: None) -> None:
    with bpf.map_create(MapType.ARRAY, 4, 4, 1) as m:
        bpf.map_update_elem(m, u32(0), b"keep")
        bpf.map_freeze(m)
        expect_errno(errno.EPERM, lambda: bpf.map_update_elem(m, u32(0), b"lost"))
        assert bpf.map_lookup_elem(m, u32(0), 4) == b"keep"
        # A frozen map's fd loses write permission, which map_freeze checks before EBUSY.
        expect_errno(errno.EPERM, lambda: bpf.map_freeze(m))


# ---------------------------------------------------------------------------------------------
# GET_NEXT_KEY
# ---------------------------------------------------------------------------------------------
def test_get_next_key_walks_hash(backend: Backend, no_fd_leak: None) -> None:
    keys = {u32(k) for k in (3, 17, 42, 1000)}
    with bpf.map_create(MapType.HASH, 4, 4, 8) as m:
        assert bpf.map_get_next_key(m, None, 4) is None  # empty map
        for k in keys:
            bpf.map_update_elem(m, k, k)
        walked: list[bytes] = []
        key = bpf.map_get_next_key(m, None, 4)
        while key is not None:
            walked.append(key)
            key = bpf.map_get_next_key(m, key, 4)
        assert sorted(walked) == sorted(keys)
        # A key that is not in the map (here: deleted under the cursor) restarts the walk.
        first = walked[0]
        assert bpf.map_delete_elem(m, first)
        restart = bpf.map_get_next_key(m, first, 4)
        assert restart == bpf.map_get_next_key(m, None, 4)
        assert restart in keys - {first}


def test_get_next_key_walks_array(backend: Backend, no_fd_leak: None) -> None:
    with bpf.map_create(MapType.ARRAY, 4, 4, 3) as m:
        assert bpf.map_get_next_key(m, None, 4) == u32(0)
        assert bpf.map_get_next_key(m, u32(0), 4) == u32(1)
        assert bpf.map_get_next_key(m, u32(1), 4) == u32(2)
        assert bpf.map_get_next_key(m, u32(2), 4) is None
        assert bpf.map_get_next_key(m, u32(99), 4) == u32(0)  # out of range: from the start


# ---------------------------------------------------------------------------------------------
# Batch commands
# ---------------------------------------------------------------------------------------------
def test_hash_batch_round_trip(backend: Backend, kver: KernelVersion, no_fd_leak: None) -> None:
    need(kver, "5.6", "batch ops")
    pairs = {u32(k): struct.pack("<Q", k * 1000 + 7) for k in range(10)}
    with bpf.map_create(MapType.HASH, 4, 8, 16) as m:
        assert bpf.map_update_batch(m, list(pairs), list(pairs.values())) == 10
        page = bpf.map_lookup_batch(m, 4, 8, 16)
        assert page.next_batch is None  # ENOENT: the walk ended within this page
        assert dict(zip(page.keys, page.values, strict=True)) == pairs
        # Paging with a token visits every element exactly once.
        seen: dict[bytes, bytes] = {}
        token: bytes | None = None
        for _ in range(20):
            try:
                page = bpf.map_lookup_batch(m, 4, 8, 6, in_batch=token)
            except bpf.BatchError as exc:  # a bucket larger than the page: not expected here
                pytest.fail(f"unexpected {exc}")
            assert not set(page.keys) & set(seen)
            seen.update(zip(page.keys, page.values, strict=True))
            token = page.next_batch
            if token is None:
                break
        assert seen == pairs
        gone = bpf.map_lookup_and_delete_batch(m, 4, 8, 16)
        assert dict(zip(gone.keys, gone.values, strict=True)) == pairs
        assert gone.next_batch is None
        assert bpf.map_get_next_key(m, None, 4) is None
        empty = bpf.map_lookup_batch(m, 4, 8, 4)
        assert (empty.keys, empty.values, empty.next_batch) == ((), (), None)


def test_array_batch_pages(backend: Backend, kver: KernelVersion, no_fd_leak: None) -> None:
    need(kver, "5.6", "batch ops")
    with bpf.map_create(MapType.ARRAY, 4, 4, 5) as m:
        values = [b"v%03d" % i for i in range(5)]
        assert bpf.map_update_batch(m, [u32(i) for i in range(5)], values) == 5
        first = bpf.map_lookup_batch(m, 4, 4, 2)
        assert first.keys == (u32(0), u32(1)) and first.values == tuple(values[:2])
        assert first.next_batch == u32(1)  # the last key copied
        second = bpf.map_lookup_batch(m, 4, 4, 2, in_batch=first.next_batch)
        assert second.keys == (u32(2), u32(3)) and second.values == tuple(values[2:4])
        last = bpf.map_lookup_batch(m, 4, 4, 2, in_batch=second.next_batch)
        assert last.keys == (u32(4),) and last.values == (values[4],)
        assert last.next_batch is None


def test_batch_errors_report_processed_count(
    backend: Backend, kver: KernelVersion, no_fd_leak: None
) -> None:
    need(kver, "5.6", "batch ops")
    with bpf.map_create(MapType.HASH, 4, 4, 8) as m:
        bpf.map_update_batch(m, [u32(1), u32(2), u32(3)], [b"aaaa", b"bbbb", b"cccc"])
        with pytest.raises(bpf.BatchError) as deleted:
            bpf.map_delete_batch(m, [u32(1), u32(2), u32(7), u32(3)])
        assert deleted.value.errno == errno.ENOENT
        assert deleted.value.count == 2
        assert deleted.value.call == "bpf(BPF_MAP_DELETE_BATCH)"
        assert bpf.map_lookup_elem(m, u32(1), 4) is None
        assert bpf.map_lookup_elem(m, u32(3), 4) == b"cccc"  # after the failure: untouched
        # Batch element flags allow only BPF_F_LOCK: rejected before any element.
        with pytest.raises(bpf.BatchError) as flagged:
            bpf.map_update_batch(m, [u32(5)], [b"eeee"], elem_flags=UpdateFlag.NOEXIST)
        assert (flagged.value.errno, flagged.value.count) == (errno.EINVAL, 0)
        assert bpf.map_lookup_elem(m, u32(5), 4) is None
    with bpf.map_create(MapType.ARRAY, 4, 4, 2) as a:
        with pytest.raises(bpf.BatchError) as updated:
            bpf.map_update_batch(a, [u32(0), u32(1), u32(2)], [b"0000", b"1111", b"2222"])
        assert (updated.value.errno, updated.value.count) == (errno.E2BIG, 2)
        assert bpf.map_lookup_elem(a, u32(1), 4) == b"1111"
    copy = pickle.loads(pickle.dumps(updated.value))
    assert (type(copy), copy.errno, copy.count) == (bpf.BatchError, errno.E2BIG, 2)


# ---------------------------------------------------------------------------------------------
# Programs: load, verifier log, test runs
# ---------------------------------------------------------------------------------------------
def test_prog_load_and_info(backend: Backend, no_fd_leak: None) -> None:
    with bpf.prog_load(ProgType.SOCKET_FILTER, prog(RET_7), name="ret_seven") as p:
        assert p.backend is backend
        info = bpf.prog_info(p)
        assert info.type == ProgType.SOCKET_FILTER
        assert bpf.obj_name(info.name) == "ret_seven"
        assert len(bytes(info.tag)) == BPF_TAG_SIZE and bytes(info.tag) != b"\0" * 8
        assert info.gpl_compatible
        assert info.xlated_prog_len == 2 * 8
        assert info.id in set(bpf.prog_ids())
        with bpf.prog_get_fd_by_id(info.id) as again:
            assert bpf.prog_info(again).id == info.id
            assert bytes(bpf.prog_info(again).tag) == bytes(info.tag)
        assert bpf.prog_map_ids(p) == ()


def test_prog_load_accepts_raw_bytes_and_insn_objects(backend: Backend, no_fd_leak: None) -> None:
    raw = b"".join(insn.to_bytes() for insn in prog(RET_7))
    with (
        bpf.prog_load(ProgType.SOCKET_FILTER, raw) as a,
        bpf.prog_load(ProgType.SOCKET_FILTER, prog(RET_7)) as b,
    ):
        assert bytes(bpf.prog_info(a).tag) == bytes(bpf.prog_info(b).tag)


def test_prog_map_ids_lists_used_maps(backend: Backend, no_fd_leak: None) -> None:
    with (
        bpf.map_create(MapType.ARRAY, 4, 8, 1) as m1,
        bpf.map_create(MapType.HASH, 4, 8, 1) as m2,
    ):
        text = f"lddw %r1, map_fd({m1.fileno()})\nlddw %r2, map_fd({m2.fileno()})\nmov %r0, 0\nexit"
        with bpf.prog_load(ProgType.SOCKET_FILTER, prog(text)) as p:
            ids = bpf.prog_map_ids(p)
        assert sorted(ids) == sorted([bpf.map_info(m1).id, bpf.map_info(m2).id])


def test_fd_array_supplies_map_idx(backend: Backend, kver: KernelVersion, no_fd_leak: None) -> None:
    need(kver, "5.14", "fd_array")
    with (
        bpf.map_create(MapType.ARRAY, 4, 8, 1) as unused,
        bpf.map_create(MapType.ARRAY, 4, 8, 1) as m,
    ):
        text = "lddw %r1, map_idx(1)\nmov %r0, 0\nexit"
        with bpf.prog_load(ProgType.SOCKET_FILTER, prog(text), fd_array=[unused, m.fileno()]) as p:
            assert bpf.prog_map_ids(p) == (bpf.map_info(m).id,)
        with pytest.raises(bpf.VerifierError) as missing:
            bpf.prog_load(ProgType.SOCKET_FILTER, prog(text))  # no fd_array: nothing at index 1
        assert missing.value.errno == errno.EPROTO
        assert "fd_idx without fd_array is invalid" in missing.value.log.splitlines()


def test_rejected_load_raises_verifier_error_with_log(backend: Backend, no_fd_leak: None) -> None:
    with pytest.raises(bpf.VerifierError) as info:
        bpf.prog_load(ProgType.SOCKET_FILTER, prog("exit"))
    exc = info.value
    assert exc.errno == errno.EACCES
    assert exc.call == "bpf(BPF_PROG_LOAD)"
    assert "R0 !read_ok" in exc.log.splitlines()
    assert not exc.truncated
    assert "R0 !read_ok" in str(exc)
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), copy.errno, copy.log) == (bpf.VerifierError, errno.EACCES, exc.log)


def test_rejected_load_without_log_retry(backend: Backend, no_fd_leak: None) -> None:
    spy = RecordingBackend(backend)
    with pytest.raises(bpf.VerifierError) as info:
        bpf.prog_load(ProgType.SOCKET_FILTER, prog("exit"), log_on_failure=False, backend=spy)
    assert (info.value.errno, info.value.log) == (errno.EACCES, "")
    assert spy.calls == [5]  # one PROG_LOAD, no logged retry


def test_explicit_log_level_returns_log_on_success(backend: Backend, no_fd_leak: None) -> None:
    loaded = bpf.prog_load(ProgType.SOCKET_FILTER, prog(RET_7), log_level=2)
    with loaded.fd:
        assert isinstance(loaded.fd, OwnedFd)
        assert "processed 2 insns" in loaded.log
        assert "exit" in loaded.log


def test_log_grows_until_cap_then_reports_truncation(backend: Backend, no_fd_leak: None) -> None:
    # A long program whose failure comes at the end writes a log far larger than 128 bytes.
    text = "mov %r1, 0\n" * 2000 + "exit"
    spy = RecordingBackend(backend)
    with pytest.raises(bpf.VerifierError) as small:
        bpf.prog_load(ProgType.SOCKET_FILTER, prog(text), log_size_cap=128, backend=spy)
    assert small.value.truncated
    assert small.value.errno == errno.EACCES  # the first failure's errno, not ENOSPC
    assert len(small.value.log) < 128
    assert spy.calls == [5, 5]
    full = RecordingBackend(backend)
    with pytest.raises(bpf.VerifierError) as grown:
        bpf.prog_load(ProgType.SOCKET_FILTER, prog(text), log_level=2, backend=full)
    assert not grown.value.truncated
    assert "R0 !read_ok" in grown.value.log
    assert len(grown.value.log) > 64 * 1024  # needed more than the first buffer
    assert len(full.calls) >= 2  # ENOSPC, then a larger buffer


def test_test_run_socket_filter_retval_and_data(backend: Backend, no_fd_leak: None) -> None:
    packet = bytes(range(64))
    with bpf.prog_load(ProgType.SOCKET_FILTER, prog(RET_7)) as p:
        result = bpf.prog_test_run(p, packet, repeat=5)
        assert result.retval == 7
        # A socket filter sees the packet after the Ethernet header, which comes back zeroed.
        assert result.data_out == b"\0" * 14 + packet[14:]
        assert result.data_size_out == len(packet)
        assert result.duration >= 0


XDP_MARK = """
ldxw %r2, [%r1]
ldxw %r3, [%r1+4]
mov %r4, %r2
add %r4, 1
jgt %r4, %r3, out
stb [%r2], 0xab
out:
mov %r0, 2
exit
"""


def test_test_run_xdp_rewrites_packet(backend: Backend, no_fd_leak: None) -> None:
    packet = bytes(range(1, 61))
    with bpf.prog_load(ProgType.XDP, prog(XDP_MARK), expected_attach_type=AttachType.XDP) as p:
        result = bpf.prog_test_run(p, packet)
        assert result.retval == 2  # XDP_PASS
        assert result.data_out == b"\xab" + packet[1:]
        with pytest.raises(bpf.TestRunTruncated) as info:
            bpf.prog_test_run(p, packet, data_out_size=8)
        truncated = info.value.result
        assert info.value.errno == errno.ENOSPC
        assert truncated.retval == 2
        assert truncated.data_out == b"\xab" + packet[1:8]
        assert truncated.data_size_out == len(packet)
        assert bpf.prog_test_run(p, packet, data_out_size=0).data_out == b""


# ---------------------------------------------------------------------------------------------
# Pinning
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def bpffs() -> Iterator[Path]:
    """A bpffs mounted on a fresh temporary folder (skipped where mounting is not allowed)."""
    path = Path(tempfile.mkdtemp(prefix="bpfsys-bpffs-"))
    done = subprocess.run(
        ["mount", "-t", "bpf", "bpf", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a bpffs: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
        path.rmdir()


def test_pin_and_get(backend: Backend, bpffs: Path, no_fd_leak: None) -> None:
    pinned = bpffs / "counts"
    with bpf.map_create(MapType.ARRAY, 4, 4, 2, name="pinned") as m:
        bpf.map_update_elem(m, u32(1), b"pin!")
        bpf.obj_pin(m, pinned)
        expect_errno(errno.EEXIST, lambda: bpf.obj_pin(m, str(pinned)))
        map_id = bpf.map_info(m).id
    with bpf.obj_get(pinned) as again:  # the pin keeps the map alive after its fd closed
        assert bpf.map_info(again).id == map_id
        assert bpf.map_lookup_elem(again, u32(1), 4) == b"pin!"
    with bpf.obj_get(pinned, file_flags=MapFlag.RDONLY) as ro:
        assert bpf.map_lookup_elem(ro, u32(1), 4) == b"pin!"
        expect_errno(errno.EPERM, lambda: bpf.map_update_elem(ro, u32(1), b"nope"))
    with bpf.prog_load(ProgType.SOCKET_FILTER, prog(RET_7)) as p:
        bpf.obj_pin(p, bpffs / "prog")
        with bpf.obj_get(bpffs / "prog") as p2:
            assert bpf.prog_test_run(p2, b"\0" * 14).retval == 7
    expect_errno(errno.ENOENT, lambda: bpf.obj_get(bpffs / "missing"))


# ---------------------------------------------------------------------------------------------
# Ids and info
# ---------------------------------------------------------------------------------------------
def test_get_next_id_walks_contain_ours(backend: Backend, no_fd_leak: None) -> None:
    with (
        bpf.map_create(MapType.HASH, 4, 4, 1) as m,
        bpf.prog_load(ProgType.SOCKET_FILTER, prog(RET_7)) as p,
    ):
        map_id, prog_id = bpf.map_info(m).id, bpf.prog_info(p).id
        ids = list(bpf.map_ids())
        assert map_id in ids and ids == sorted(set(ids))
        assert prog_id in list(bpf.prog_ids())
        with bpf.map_get_fd_by_id(map_id) as m2:
            assert bpf.map_info(m2).id == map_id
        with bpf.map_get_fd_by_id(map_id, open_flags=MapFlag.RDONLY) as ro:
            expect_errno(errno.EPERM, lambda: bpf.map_update_elem(ro, u32(0), b"xxxx"))
    assert map_id not in list(bpf.map_ids())  # freed with its last fd
    expect_errno(errno.ENOENT, lambda: bpf.map_get_fd_by_id(map_id))


def test_info_len_is_what_the_kernel_filled(backend: Backend, no_fd_leak: None) -> None:
    with bpf.map_create(MapType.HASH, 4, 4, 1) as m:
        info = BpfMapInfo()
        filled = bpf.obj_get_info_by_fd(m, info)
        assert 0 < filled <= ctypes.sizeof(info)
        assert info.key_size == 4

        class Short(AbiStruct):  # a caller that knows only the first two fields
            _spec_ = (("type", ctypes.c_uint32, "4.13"), ("id", ctypes.c_uint32, "4.13"))
            _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32)]

        short = Short()
        assert bpf.obj_get_info_by_fd(m, short) == 8
        assert (short.type, short.id) == (MapType.HASH, info.id)


def test_btf_load_and_map_with_btf(backend: Backend, no_fd_leak: None) -> None:
    with bpf.btf_load(btf_int()) as btf:
        with bpf.map_create(
            MapType.ARRAY, 4, 4, 1, btf_fd=btf, btf_key_type_id=1, btf_value_type_id=1
        ) as m:
            info = bpf.map_info(m)
        assert (info.btf_key_type_id, info.btf_value_type_id) == (1, 1)
        assert info.btf_id in list(bpf.btf_ids())
        with bpf.btf_get_fd_by_id(info.btf_id) as again:
            assert again.fileno() != btf.fileno()
    logged = bpf.btf_load(btf_int(), log_level=1)
    with logged.fd:
        assert "[1] INT int size=4 bits_offset=0 nr_bits=32 encoding=(none)" in logged.log
    with pytest.raises(bpf.VerifierError) as bad:
        bpf.btf_load(btf_int(nr_bits=33))
    assert bad.value.errno == errno.EINVAL
    assert bad.value.call == "bpf(BPF_BTF_LOAD)"
    assert "nr_bits exceeds type_size" in bad.value.log


def btf_int(nr_bits: int = 32) -> bytes:
    """A BTF blob holding one type: [1] INT "int", 4 bytes, `nr_bits` bits."""
    strings = b"\0int\0"
    types = struct.pack("<IIII", 1, 1 << 24, 4, nr_bits)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


# ---------------------------------------------------------------------------------------------
# Stats
# ---------------------------------------------------------------------------------------------
def test_enable_stats_counts_only_while_open(backend: Backend, no_fd_leak: None) -> None:
    if backend.read_file("/proc/sys/kernel/bpf_stats_enabled").strip() != b"0":
        pytest.skip("kernel.bpf_stats_enabled is on: stats are collected regardless")
    with bpf.prog_load(ProgType.SOCKET_FILTER, prog(RET_7)) as p:
        bpf.prog_test_run(p, b"\0" * 14, repeat=3)
        assert bpf.prog_info(p).run_cnt == 0
        with bpf.enable_stats() as stats:
            assert stats.backend is backend
            bpf.prog_test_run(p, b"\0" * 14, repeat=4)
            assert bpf.prog_info(p).run_cnt == 4
            bpf.prog_test_run(p, b"\0" * 14, repeat=2)
            assert bpf.prog_info(p).run_cnt == 6
        bpf.prog_test_run(p, b"\0" * 14, repeat=5)
        assert bpf.prog_info(p).run_cnt == 6


# ---------------------------------------------------------------------------------------------
# Attaching: PROG_ATTACH/QUERY/DETACH, raw tracepoints, links
# ---------------------------------------------------------------------------------------------
def test_sockmap_attach_query_detach(backend: Backend, no_fd_leak: None) -> None:
    verdict = AttachType.SK_SKB_STREAM_VERDICT
    with (
        bpf.map_create(MapType.SOCKMAP, 4, 4, 1) as sockmap,
        bpf.prog_load(ProgType.SK_SKB, prog("mov %r0, 1\nexit"), expected_attach_type=verdict) as p,
    ):
        assert bpf.prog_query(sockmap, verdict).prog_ids == ()
        bpf.prog_attach(p, sockmap, verdict)
        query = bpf.prog_query(sockmap, verdict)
        assert query.prog_ids == (bpf.prog_info(p).id,)
        bpf.prog_detach(sockmap, verdict, prog_fd=p)
        assert bpf.prog_query(sockmap, verdict).prog_ids == ()
        expect_errno(errno.ENOENT, lambda: bpf.prog_detach(sockmap, verdict, prog_fd=p))


def test_raw_tracepoint_link(backend: Backend, no_fd_leak: None) -> None:
    with (
        bpf.prog_load(ProgType.RAW_TRACEPOINT, prog("mov %r0, 0\nexit")) as p,
        bpf.raw_tracepoint_open(p, "sys_enter") as link,
    ):
        info = bpf.link_info(link)
        assert info.type == LinkType.RAW_TRACEPOINT
        assert info.prog_id == bpf.prog_info(p).id
        assert bpf.link_tp_name(link) == "sys_enter"
        assert info.id in list(bpf.link_ids())
        with bpf.link_get_fd_by_id(info.id) as again:
            assert bpf.link_info(again).prog_id == info.prog_id
        expect_errno(errno.EOPNOTSUPP, lambda: bpf.link_detach(link))
        expect_errno(errno.ENOENT, lambda: bpf.raw_tracepoint_open(p, "no_such_tracepoint"))
    with (
        bpf.prog_load(ProgType.PERF_EVENT, prog("mov %r0, 0\nexit")) as pe,
        perf_event_open_cpu_clock(backend) as event,
        bpf.link_create_perf_event(pe, event) as perf_link,
        pytest.raises(ValueError, match="not RAW_TRACEPOINT"),
    ):
        bpf.link_tp_name(perf_link)


def perf_event_open_cpu_clock(backend: Backend) -> OwnedFd:
    attr = PerfEventAttr(
        type=PerfType.SOFTWARE,
        size=ctypes.sizeof(PerfEventAttr),
        config=PerfSwId.CPU_CLOCK,
        sample_period=1_000_000,
        flags=PerfAttrFlag.DISABLED,
    )
    return OwnedFd(syscall(PerfEventOpen(attr, 0, -1, -1, 1 << 3), backend), backend)


def test_perf_event_link_with_cookie(
    backend: Backend, kver: KernelVersion, no_fd_leak: None
) -> None:
    need(kver, "5.15", "perf_event links")
    cookie = 0xDEAD_BEEF_1234_5678
    with (
        perf_event_open_cpu_clock(backend) as event,
        bpf.prog_load(ProgType.PERF_EVENT, prog("mov %r0, 0\nexit")) as p,
        bpf.link_create_perf_event(p, event, bpf_cookie=cookie) as link,
    ):
        info = bpf.link_info(link)
        assert info.type == LinkType.PERF_EVENT
        assert info.prog_id == bpf.prog_info(p).id
        if kver >= KernelVersion(6, 9):
            assert info.perf_event.type == BpfPerfEventType.EVENT
            assert info.perf_event.event.config == PerfSwId.CPU_CLOCK
            assert info.perf_event.event.cookie == cookie
        expect_errno(errno.EEXIST, lambda: bpf.link_create_perf_event(p, event))


# Cgroup attachment needs a real cgroup directory fd: live kernel only.
@pytest.fixture
def cgroup_fd(live: Backend) -> Iterator[int]:
    mounts = live.read_file("/proc/self/mounts").decode().splitlines()
    roots = [line.split()[1] for line in mounts if line.split()[2] == "cgroup2"]
    if not roots:
        pytest.skip("no cgroup2 hierarchy mounted")
    path = tempfile.mkdtemp(prefix="bpfsys-test-", dir=roots[0])
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)
        os.rmdir(path)


def test_cgroup_attach_replace_query_detach(live: Backend, cgroup_fd: int) -> None:
    ingress = AttachType.CGROUP_INET_INGRESS

    def load() -> OwnedFd:
        return bpf.prog_load(
            ProgType.CGROUP_SKB, prog("mov %r0, 1\nexit"), expected_attach_type=ingress
        )

    with load() as p1, load() as p2:
        id1, id2 = bpf.prog_info(p1).id, bpf.prog_info(p2).id
        assert bpf.prog_query(cgroup_fd, ingress) == bpf.ProgQueryResult(0, ())
        bpf.prog_attach(p1, cgroup_fd, ingress, flags=AttachFlag.ALLOW_MULTI)
        assert bpf.prog_query(cgroup_fd, ingress) == bpf.ProgQueryResult(
            AttachFlag.ALLOW_MULTI, (id1,)
        )
        bpf.prog_attach(p2, cgroup_fd, ingress, flags=AttachFlag.ALLOW_MULTI, replace_prog_fd=p1)
        assert bpf.prog_query(cgroup_fd, ingress).prog_ids == (id2,)
        bpf.prog_attach(p1, cgroup_fd, ingress, flags=AttachFlag.ALLOW_MULTI)
        assert bpf.prog_query(cgroup_fd, ingress).prog_ids == (id2, id1)
        bpf.prog_detach(cgroup_fd, ingress, prog_fd=p2)
        bpf.prog_detach(cgroup_fd, ingress, prog_fd=p1)
        assert bpf.prog_query(cgroup_fd, ingress).prog_ids == ()


def test_cgroup_link_update_and_detach(live: Backend, cgroup_fd: int) -> None:
    ingress = AttachType.CGROUP_INET_INGRESS

    def load() -> OwnedFd:
        return bpf.prog_load(
            ProgType.CGROUP_SKB, prog("mov %r0, 1\nexit"), expected_attach_type=ingress
        )

    with load() as p1, load() as p2, bpf.link_create(p1, cgroup_fd, ingress) as link:
        id1, id2 = bpf.prog_info(p1).id, bpf.prog_info(p2).id
        assert bpf.link_info(link).type == LinkType.CGROUP
        assert bpf.prog_query(cgroup_fd, ingress).prog_ids == (id1,)
        bpf.link_update(link, p2)
        assert bpf.link_info(link).prog_id == id2
        expect_errno(errno.EPERM, lambda: bpf.link_update(link, p1, old_prog_fd=p1))
        bpf.link_update(link, p1, old_prog_fd=p2)
        assert bpf.prog_query(cgroup_fd, ingress).prog_ids == (id1,)
        bpf.link_detach(link)
        assert bpf.prog_query(cgroup_fd, ingress).prog_ids == ()
        assert bpf.link_info(link).cgroup.cgroup_id == 0
        expect_errno(errno.ENOLINK, lambda: bpf.link_update(link, p2))


# ---------------------------------------------------------------------------------------------
# Bad input: TypeError / ValueError before any system call
# ---------------------------------------------------------------------------------------------
untyped: Any = bpf
"""The wrappers without static types, so ill-typed arguments reach the runtime checks."""

BAD_INPUT: list[tuple[str, Callable[[Backend], object], type[Exception], str]] = [
    ("map_type", lambda b: untyped.map_create("hash", 4, 4, 1, backend=b), TypeError, "map_type"),
    (
        "key_size-bool",
        lambda b: untyped.map_create(1, True, 4, 1, backend=b),
        TypeError,
        "key_size",
    ),
    ("key_size", lambda b: untyped.map_create(1, -1, 4, 1, backend=b), ValueError, "key_size"),
    (
        "max_entries",
        lambda b: untyped.map_create(1, 4, 4, 2**32, backend=b),
        ValueError,
        "max_entries",
    ),
    (
        "name-long",
        lambda b: untyped.map_create(1, 4, 4, 1, name="x" * 16, backend=b),
        ValueError,
        "name",
    ),
    (
        "name-chars",
        lambda b: untyped.map_create(1, 4, 4, 1, name="a-b", backend=b),
        ValueError,
        "name",
    ),
    (
        "inner",
        lambda b: untyped.map_create(1, 4, 4, 1, inner_map_fd="3", backend=b),
        TypeError,
        "inner_map_fd",
    ),
    (
        "btf-ids",
        lambda b: untyped.map_create(1, 4, 4, 1, btf_key_type_id=1, backend=b),
        ValueError,
        "btf_fd",
    ),
    (
        "map_extra",
        lambda b: untyped.map_create(1, 4, 4, 1, map_extra=-1, backend=b),
        ValueError,
        "map_extra",
    ),
    ("map_fd", lambda b: untyped.map_lookup_elem(-1, b"k", 4, backend=b), ValueError, "map_fd"),
    ("key", lambda b: untyped.map_lookup_elem(3, "key", 4, backend=b), TypeError, "key"),
    ("value", lambda b: untyped.map_update_elem(3, b"k", 5, backend=b), TypeError, "value"),
    (
        "flags",
        lambda b: untyped.map_update_elem(3, b"k", b"v", flags=-1, backend=b),
        ValueError,
        "flags",
    ),
    (
        "value_size",
        lambda b: untyped.map_lookup_elem(3, b"k", -4, backend=b),
        ValueError,
        "value_size",
    ),
    (
        "next-key_size",
        lambda b: untyped.map_get_next_key(3, None, 1.5, backend=b),
        TypeError,
        "key_size",
    ),
    ("count", lambda b: untyped.map_lookup_batch(3, 4, 4, 0, backend=b), ValueError, "count"),
    (
        "in_batch",
        lambda b: untyped.map_lookup_batch(3, 4, 4, 1, in_batch=b"\0", backend=b),
        ValueError,
        "in_batch",
    ),
    (
        "batch-lens",
        lambda b: untyped.map_update_batch(3, [b"a"], [b"b", b"c"], backend=b),
        ValueError,
        "length",
    ),
    (
        "batch-sizes",
        lambda b: untyped.map_update_batch(3, [b"ab", b"c"], [b"x", b"y"], backend=b),
        ValueError,
        "keys",
    ),
    ("batch-empty", lambda b: untyped.map_delete_batch(3, [], backend=b), ValueError, "keys"),
    ("batch-bytes", lambda b: untyped.map_delete_batch(3, b"abcd", backend=b), TypeError, "keys"),
    ("insns-odd", lambda b: untyped.prog_load(1, b"\0" * 7, backend=b), ValueError, "insns"),
    ("insns-empty", lambda b: untyped.prog_load(1, b"", backend=b), ValueError, "insns"),
    ("insns-ints", lambda b: untyped.prog_load(1, [1, 2], backend=b), TypeError, "insns[0]"),
    ("insns-str", lambda b: untyped.prog_load(1, "exit", backend=b), TypeError, "insns"),
    (
        "license",
        lambda b: untyped.prog_load(1, b"\0" * 8, license=b"GPL", backend=b),
        TypeError,
        "license",
    ),
    (
        "log_level",
        lambda b: untyped.prog_load(1, b"\0" * 8, log_level=0, backend=b),
        ValueError,
        "log_level",
    ),
    (
        "log_cap",
        lambda b: untyped.prog_load(1, b"\0" * 8, log_size_cap=1, backend=b),
        ValueError,
        "log_size_cap",
    ),
    (
        "fd_array",
        lambda b: untyped.prog_load(1, b"\0" * 8, fd_array=[], backend=b),
        ValueError,
        "fd_array",
    ),
    (
        "fd_array-item",
        lambda b: untyped.prog_load(1, b"\0" * 8, fd_array=[None], backend=b),
        TypeError,
        "fd_array[0]",
    ),
    (
        "prog-name",
        lambda b: untyped.prog_load(1, b"\0" * 8, name="é", backend=b),
        ValueError,
        "name",
    ),
    ("data_in", lambda b: untyped.prog_test_run(3, "data", backend=b), TypeError, "data_in"),
    ("repeat", lambda b: untyped.prog_test_run(3, b"", repeat=-1, backend=b), ValueError, "repeat"),
    ("cpu", lambda b: untyped.prog_test_run(3, b"", cpu=-1, backend=b), ValueError, "cpu"),
    ("pin-empty", lambda b: untyped.obj_pin(3, "", backend=b), ValueError, "path"),
    ("pin-nul", lambda b: untyped.obj_pin(3, "a\0b", backend=b), ValueError, "path"),
    ("get-int", lambda b: untyped.obj_get(5, backend=b), TypeError, "path"),
    ("attach-type", lambda b: untyped.prog_attach(3, 4, -1, backend=b), ValueError, "attach_type"),
    (
        "detach-fd",
        lambda b: untyped.prog_detach(3, 0, prog_fd=2**31, backend=b),
        ValueError,
        "prog_fd",
    ),
    ("target_fd", lambda b: untyped.link_create(3, -2, 41, backend=b), ValueError, "target_fd"),
    (
        "link-union",
        lambda b: untyped.link_create(3, 4, 41, target_btf_id=1, bpf_cookie=2, backend=b),
        ValueError,
        "exclusive",
    ),
    (
        "cookie",
        lambda b: untyped.link_create(3, 4, 41, bpf_cookie=2**64, backend=b),
        ValueError,
        "bpf_cookie",
    ),
    ("link_update", lambda b: untyped.link_update(3, 4.0, backend=b), TypeError, "new_prog_fd"),
    ("id", lambda b: untyped.map_get_fd_by_id(0, backend=b), ValueError, "id"),
    ("btf-empty", lambda b: untyped.btf_load(b"", backend=b), ValueError, "data"),
    ("info", lambda b: untyped.obj_get_info_by_fd(3, bytearray(8), backend=b), TypeError, "info"),
    ("query", lambda b: untyped.prog_query(3.0, 0, backend=b), TypeError, "target_fd"),
    ("tp-name", lambda b: untyped.raw_tracepoint_open(3, "a\0", backend=b), ValueError, "name"),
    ("stats", lambda b: untyped.enable_stats(-1, backend=b), ValueError, "stats_type"),
]


@pytest.mark.parametrize(
    ("call", "exc_type", "names"), [case[1:] for case in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_raises_before_any_syscall(
    backend: Backend, call: Callable[[Backend], object], exc_type: type[Exception], names: str
) -> None:
    spy = RecordingBackend(backend)
    with pytest.raises(exc_type, match=re.escape(names)):
        call(spy)
    assert spy.calls == []


def test_owned_fd_arguments_are_checked(backend: Backend, no_fd_leak: None) -> None:
    spy = RecordingBackend(backend)
    m = bpf.map_create(MapType.ARRAY, 4, 4, 1)
    with m:
        with pytest.raises(ValueError, match="different backend"):
            bpf.map_lookup_elem(m, u32(0), 4, backend=spy)
        other = bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=spy)
        with other, pytest.raises(ValueError, match="different backend"):
            bpf.map_create(MapType.ARRAY_OF_MAPS, 4, 4, 1, inner_map_fd=other, btf_fd=m)
        assert spy.calls == [0]  # only the MAP_CREATE of `other`
    with pytest.raises(ValueError, match="map_fd is a closed OwnedFd"):
        bpf.map_lookup_elem(m, u32(0), 4)


def test_owned_fd_backend_is_used_when_none_given(backend: Backend, no_fd_leak: None) -> None:
    spy = RecordingBackend(backend)
    with bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=spy) as m:
        assert m.backend is spy
        before = len(spy.calls)
        assert bpf.map_lookup_elem(m, u32(0), 4) == b"\0" * 4
        assert spy.calls[before:] == [1]  # went through the map's backend


# ---------------------------------------------------------------------------------------------
# No fd leaks on error paths
# ---------------------------------------------------------------------------------------------
def _failing(
    backend: Backend, stack: contextlib.ExitStack
) -> dict[str, tuple[int, Callable[[], object]]]:
    """Operations that fail in the kernel: name -> (errno, action). Prerequisites go on the
    stack (opened before the fd count is taken)."""
    sock = stack.enter_context(bpf.prog_load(ProgType.SOCKET_FILTER, prog(RET_7)))
    tp = stack.enter_context(bpf.prog_load(ProgType.TRACEPOINT, prog("mov %r0, 0\nexit")))
    raw_tp = stack.enter_context(bpf.prog_load(ProgType.RAW_TRACEPOINT, prog("mov %r0, 0\nexit")))
    hash_map = stack.enter_context(bpf.map_create(MapType.HASH, 4, 4, 1))
    huge_id = 0x7FFF_FFF0
    return {
        "map_create": (errno.EINVAL, lambda: bpf.map_create(MapType.HASH, 0, 4, 1)),
        "prog_load": (errno.EACCES, lambda: bpf.prog_load(ProgType.SOCKET_FILTER, prog("exit"))),
        "prog_load_logged": (
            errno.EACCES,
            lambda: bpf.prog_load(ProgType.SOCKET_FILTER, prog("exit"), log_level=1),
        ),
        "prog_load_truncated": (
            errno.EACCES,
            lambda: bpf.prog_load(
                ProgType.SOCKET_FILTER, prog("mov %r1, 0\n" * 50 + "exit"), log_size_cap=128
            ),
        ),
        "btf_load": (errno.EINVAL, lambda: bpf.btf_load(btf_int(nr_bits=33))),
        "obj_get": (errno.ENOENT, lambda: bpf.obj_get("/sys/fs/bpf/bpfsys-no-such-pin")),
        "map_get_fd_by_id": (errno.ENOENT, lambda: bpf.map_get_fd_by_id(huge_id)),
        "prog_get_fd_by_id": (errno.ENOENT, lambda: bpf.prog_get_fd_by_id(huge_id)),
        "link_get_fd_by_id": (errno.ENOENT, lambda: bpf.link_get_fd_by_id(huge_id)),
        "btf_get_fd_by_id": (errno.ENOENT, lambda: bpf.btf_get_fd_by_id(huge_id)),
        "raw_tracepoint_open": (
            errno.ENOENT,
            lambda: bpf.raw_tracepoint_open(raw_tp, "bpfsys_no_such_tp"),
        ),
        "link_create": (errno.EBADF, lambda: bpf.link_create(tp, -1, AttachType.PERF_EVENT)),
        "enable_stats": (errno.EINVAL, lambda: bpf.enable_stats(99)),
        "test_run_truncated": (
            errno.ENOSPC,
            lambda: bpf.prog_test_run(sock, b"\0" * 32, data_out_size=1),
        ),
        "lookup_batch": (
            errno.EINVAL,
            lambda: bpf.map_lookup_batch(hash_map, 4, 4, 1, flags=1),
        ),
        "prog_query": (  # a cgroup attach type on an fd that is no cgroup
            errno.EBADF,
            lambda: bpf.prog_query(hash_map, AttachType.CGROUP_INET_INGRESS),
        ),
    }


FAILING = [
    "map_create",
    "prog_load",
    "prog_load_logged",
    "prog_load_truncated",
    "btf_load",
    "obj_get",
    "map_get_fd_by_id",
    "prog_get_fd_by_id",
    "link_get_fd_by_id",
    "btf_get_fd_by_id",
    "raw_tracepoint_open",
    "link_create",
    "enable_stats",
    "test_run_truncated",
    "lookup_batch",
    "prog_query",
]


@pytest.mark.parametrize("name", FAILING)
def test_error_paths_leak_no_fd(
    backend: Backend, no_fd_leak: None, stack: contextlib.ExitStack, name: str
) -> None:
    err, action = _failing(backend, stack)[name]
    before = open_fd_count()
    expect_errno(err, action)
    assert open_fd_count() == before


def test_failing_table_is_complete(backend: Backend, stack: contextlib.ExitStack) -> None:
    assert sorted(_failing(backend, stack)) == sorted(FAILING)
