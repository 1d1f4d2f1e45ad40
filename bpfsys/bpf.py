"""One typed wrapper per bpf() command, in the style of Aya's `sys/bpf.rs` and cilium/ebpf's
`internal/sys`.

Theory of operation
-------------------
Each wrapper validates its arguments (TypeError / ValueError naming the argument, before any
system call), fills the command's attr struct from `bpfsys.abi`, issues it through
`bpfsys.syscall.syscall` and decodes what the kernel wrote back. Memory the kernel reads or writes
(keys, values, instructions, logs, id arrays) lives in ctypes buffers that the wrapper keeps
referenced until the call returns; the attr carries their `ctypes.addressof`.

Backends: every wrapper takes ``backend=`` (keyword). When it is None the backend of the first
`OwnedFd` argument is used, else the current backend (`bpfsys.backend.current_backend`).
`OwnedFd` arguments of another backend are a ValueError. Every fd a wrapper returns is an
`OwnedFd` bound to the backend used; no failure path leaves an fd open.

Kernel conventions kept here rather than hidden:

* lookups return ``None`` on ENOENT (Aya's ``Option``); GET_NEXT_KEY returns ``None`` at the end;
* batch commands report how far they got: `BatchError.count` on failure, and a lookup batch that
  ends with ENOENT is the last page (`BatchResult.next_batch is None`);
* PROG_LOAD / BTF_LOAD retry a failed load with a verifier log that grows on ENOSPC up to a cap
  and raise `VerifierError` with the log text;
* OBJ_GET_INFO_BY_FD passes ``sizeof(info)`` and trusts the length the kernel writes back;
* PROG_TEST_RUN raises `TestRunTruncated` (carrying the result and the sizes the kernel needed)
  when data_out or ctx_out was too small.

Sizes of keys and values are the caller's to know (as with Aya's typed maps): the kernel copies
exactly the map's key/value size, so an output buffer sized with a wrong `value_size` is
overwritten past its end. Use `percpu_value_size` for per-CPU maps.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple, Protocol, TypeAlias, TypeVar, overload
from weakref import WeakKeyDictionary

import attrs

from bpfsys.abi import (
    BPF_OBJ_NAME_LEN,
    AbiStruct,
    AttachFlag,
    AttachType,
    BpfCmd,
    BpfLinkInfo,
    BpfMapInfo,
    BpfProgInfo,
    BtfLoadAttr,
    EnableStatsAttr,
    GetIdAttr,
    InfoByFdAttr,
    LinkCreateAttr,
    LinkDetachAttr,
    LinkType,
    LinkUpdateAttr,
    MapBatchAttr,
    MapCreateAttr,
    MapElemAttr,
    MapFlag,
    ObjPinAttr,
    ProgAttachAttr,
    ProgLoadAttr,
    ProgQueryAttr,
    RawTracepointOpenAttr,
    StatsType,
    TestRunAttr,
    TestRunFlag,
)
from bpfsys.backend import Backend, current_backend
from bpfsys.fd import OwnedFd
from bpfsys.syscall import AttrImage, Ebpf, SyscallError, syscall

__all__ = [
    "BatchError",
    "BatchResult",
    "FdLike",
    "InsnLike",
    "LoadedWithLog",
    "ProgQueryResult",
    "TestRunResult",
    "TestRunTruncated",
    "VerifierError",
    "btf_get_fd_by_id",
    "btf_ids",
    "btf_load",
    "enable_stats",
    "join_percpu",
    "link_create",
    "link_create_perf_event",
    "link_detach",
    "link_get_fd_by_id",
    "link_ids",
    "link_info",
    "link_tp_name",
    "link_update",
    "map_create",
    "map_delete_batch",
    "map_delete_elem",
    "map_freeze",
    "map_get_fd_by_id",
    "map_get_next_key",
    "map_ids",
    "map_info",
    "map_lookup_and_delete_batch",
    "map_lookup_and_delete_elem",
    "map_lookup_batch",
    "map_lookup_elem",
    "map_update_batch",
    "map_update_elem",
    "obj_get",
    "obj_get_info_by_fd",
    "obj_name",
    "obj_pin",
    "parse_cpu_list",
    "percpu_value_size",
    "possible_cpus",
    "prog_attach",
    "prog_detach",
    "prog_get_fd_by_id",
    "prog_ids",
    "prog_info",
    "prog_load",
    "prog_map_ids",
    "prog_query",
    "prog_test_run",
    "raw_tracepoint_open",
    "split_percpu",
]

FdLike: TypeAlias = OwnedFd | int
"""An fd argument: an `OwnedFd` (its backend is used) or a raw fd number."""

BytesLike: TypeAlias = bytes | bytearray | memoryview

U32_MAX: Final = 0xFFFF_FFFF
U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
FD_MAX: Final = 0x7FFF_FFFF
INSN_SIZE: Final = 8
LOG_SIZE_MIN: Final = 64 * 1024
"""First verifier log buffer (cilium/ebpf's minimum); grows on ENOSPC."""
LOG_SIZE_CAP: Final = 16 * 1024 * 1024
"""Default largest verifier log buffer tried before giving up with a truncated log."""
EAGAIN_RETRIES: Final = 5
"""PROG_LOAD attempts on EAGAIN (as libbpf's PROG_LOAD_ATTEMPTS)."""

_OBJ_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.]*$")
_T = TypeVar("_T", bound=AbiStruct)


class InsnLike(Protocol):
    """An instruction object (e.g. `bpfsys.asm.Insn`): 8 bytes, or 16 for ld_imm64."""

    def to_bytes(self) -> bytes: ...


# ---------------------------------------------------------------------------------------------
# Errors and results
# ---------------------------------------------------------------------------------------------
class VerifierError(SyscallError):
    """PROG_LOAD or BTF_LOAD failed; `log` is the verifier's text ("" when none was taken),
    `truncated` tells whether the log hit the size cap."""

    def __init__(self, call: str, err: int, log: str = "", truncated: bool = False) -> None:
        tail = "\n".join(log.rstrip("\n").splitlines()[-20:])
        super().__init__(call, err, f"verifier log:\n{tail}" if tail else None)
        self.log = log
        self.truncated = truncated

    def __reduce__(self) -> tuple[type[VerifierError], tuple[str, int, str, bool]]:  # type: ignore[override]
        return (type(self), (self.call, self.errno or 0, self.log, self.truncated))


class BatchError(SyscallError):
    """A batch command failed after `count` elements were processed (the kernel's count)."""

    def __init__(self, call: str, err: int, count: int) -> None:
        super().__init__(call, err, f"{count} element(s) processed")
        self.count = count

    def __reduce__(self) -> tuple[type[BatchError], tuple[str, int, int]]:  # type: ignore[override]
        return (type(self), (self.call, self.errno or 0, self.count))


@attrs.frozen
class BatchResult:
    """One page of a lookup batch; pass `next_batch` as `in_batch` for the next page
    (None: the walk is over)."""

    keys: tuple[bytes, ...]
    values: tuple[bytes, ...]
    next_batch: bytes | None


class LoadedWithLog(NamedTuple):
    """A load made with an explicit log level: the fd and the log the kernel wrote."""

    fd: OwnedFd
    log: str


@attrs.frozen
class TestRunResult:
    """What PROG_TEST_RUN wrote back. `data_size_out`/`ctx_size_out` are the sizes the kernel
    produced (larger than `data_out`/`ctx_out` when the buffers were too small)."""

    __test__ = False  # not a pytest class

    retval: int
    duration: int
    data_out: bytes
    ctx_out: bytes
    data_size_out: int
    ctx_size_out: int


class TestRunTruncated(SyscallError):
    """PROG_TEST_RUN ran but data_out or ctx_out was too small (ENOSPC); `result` holds the
    retval, the truncated output and the sizes the kernel needed."""

    __test__ = False  # not a pytest class

    def __init__(self, call: str, result: TestRunResult) -> None:
        super().__init__(
            call,
            errno.ENOSPC,
            f"output needs data_out={result.data_size_out}, ctx_out={result.ctx_size_out} bytes",
        )
        self.result = result

    def __reduce__(self) -> tuple[type[TestRunTruncated], tuple[str, TestRunResult]]:  # type: ignore[override]
        return (type(self), (self.call, self.result))


@attrs.frozen
class ProgQueryResult:
    """PROG_QUERY: the target's attach flags and the ids of the programs attached to it."""

    attach_flags: int
    prog_ids: tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# Argument checking and memory helpers
# ---------------------------------------------------------------------------------------------
def _int(value: object, name: str, lo: int = 0, hi: int = U32_MAX) -> int:
    """`value` as an int in [lo, hi]; TypeError/ValueError naming `name` otherwise."""
    if type(value) is int and lo <= value <= hi:  # the common case, checked first
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def _fd(value: object, name: str, *, allow_minus_one: bool = False) -> int:
    """The fd number of an `OwnedFd | int` argument (-1 passes as 0xffffffff when allowed)."""
    if isinstance(value, OwnedFd):
        if value.closed:
            raise ValueError(f"{name} is a closed OwnedFd")
        return value.fileno()
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an OwnedFd or an int, got {type(value).__name__}")
    if allow_minus_one and value == -1:
        return U32_MAX
    return _int(value, name, 0, FD_MAX)


def _opt_fd(value: object, name: str) -> int:
    """An optional fd argument: None is 0 (the kernel's "absent")."""
    return 0 if value is None else _fd(value, name)


def _bytes(value: object, name: str) -> bytes:
    if type(value) is bytes:
        return value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes-like, got {type(value).__name__}")
    return bytes(value)


def _resolve_one(backend: Backend | None, arg: object) -> Backend:
    """`_resolve(backend, arg)` for one argument (the element commands' fast path)."""
    if not isinstance(arg, OwnedFd):
        return current_backend() if backend is None else backend
    if backend is None or arg.backend is backend:
        return arg.backend
    raise ValueError("an OwnedFd argument belongs to a different backend than the one used")


def _resolve(backend: Backend | None, *args: object) -> Backend:
    """The backend to use: `backend`, else the first OwnedFd argument's, else the current one.
    OwnedFd arguments of another backend are a ValueError."""
    owners = [a.backend for a in args if isinstance(a, OwnedFd)]
    chosen = backend if backend is not None else (owners[0] if owners else current_backend())
    if any(owner is not chosen for owner in owners):
        raise ValueError("an OwnedFd argument belongs to a different backend than the one used")
    return chosen


class _Buf:
    """A ctypes buffer the kernel reads or writes, alive as long as this object: a copy of
    `data`, or `size` zero bytes (`data` padded to `size` when both are given)."""

    __slots__ = ("addr", "raw", "size")

    def __init__(self, data: bytes = b"", size: int | None = None) -> None:
        n = len(data) if size is None else size
        raw: ctypes.Array[ctypes.c_char] | None = None
        if not n:
            pass
        elif size is None:
            raw = (ctypes.c_char * n).from_buffer_copy(data)
        elif not data:
            raw = (ctypes.c_char * n)()
        else:
            raw = ctypes.create_string_buffer(data, n)
        self.raw = raw
        self.addr = 0 if raw is None else ctypes.addressof(raw)
        self.size = n

    def read(self, n: int | None = None, start: int = 0) -> bytes:
        """`n` bytes (default: to the end) from offset `start`, clamped to the buffer."""
        if self.raw is None:
            return b""
        if n is None and not start:
            return self.raw.raw
        stop = self.size if n is None else min(self.size, start + n)
        return self.raw.raw[start:stop] if stop > start else b""

    def text(self) -> str:
        """The NUL-terminated text at the start of the buffer."""
        return self.read().split(b"\0", 1)[0].decode("utf-8", "replace")


def _name(value: object, arg: str) -> bytes:
    """An object name (map/prog): at most 15 ASCII chars of [A-Za-z0-9_.]."""
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be a str, got {type(value).__name__}")
    if len(value) >= BPF_OBJ_NAME_LEN or not _OBJ_NAME_RE.match(value):
        raise ValueError(
            f"{arg} must be at most {BPF_OBJ_NAME_LEN - 1} chars of [A-Za-z0-9_.], got {value!r}"
        )
    return value.encode("ascii")


def _cstr(value: object, arg: str) -> _Buf:
    """A NUL-terminated string (str or os.PathLike) in a buffer."""
    if not isinstance(value, str | bytes | os.PathLike):
        raise TypeError(f"{arg} must be a str or path, got {type(value).__name__}")
    data = os.fsencode(value)
    if not data or b"\0" in data:
        raise ValueError(f"{arg} must be non-empty and contain no NUL byte, got {value!r}")
    return _Buf(data + b"\0")


def obj_name(raw: bytes) -> str:
    """Decode a kernel `char name[16]` (as found in info structs)."""
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _bpf(cmd: BpfCmd, attr: AttrImage, backend: Backend) -> int:
    return syscall(Ebpf(cmd, attr), backend)


def _bpf_fd(cmd: BpfCmd, attr: AttrImage, backend: Backend) -> OwnedFd:
    return OwnedFd(_bpf(cmd, attr, backend), backend)


# ---------------------------------------------------------------------------------------------
# Per-CPU values
# ---------------------------------------------------------------------------------------------
_possible_cache: WeakKeyDictionary[Backend, int] = WeakKeyDictionary()


def parse_cpu_list(text: str) -> list[int]:
    """Parse a sysfs CPU list ("0-3,5,7-8") into CPU numbers."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def possible_cpus(*, backend: Backend | None = None) -> int:
    """The number of possible CPUs (the per-CPU slot count), read through the backend from
    /sys/devices/system/cpu/possible as highest + 1; cached per backend."""
    b = _resolve(backend)
    try:
        return _possible_cache[b]
    except (KeyError, TypeError):
        pass
    count = max(parse_cpu_list(b.read_file("/sys/devices/system/cpu/possible").decode())) + 1
    with contextlib.suppress(TypeError):  # a backend that cannot be weakly referenced
        _possible_cache[b] = count
    return count


def percpu_value_size(value_size: int, *, backend: Backend | None = None) -> int:
    """The user-space size of a per-CPU value: value_size rounded up to 8, times possible CPUs."""
    size = _int(value_size, "value_size", 1)
    return (size + 7) // 8 * 8 * possible_cpus(backend=backend)


def split_percpu(raw: bytes, value_size: int) -> list[bytes]:
    """Split a per-CPU value into one `value_size`-byte value per CPU (slots are 8-aligned)."""
    size = _int(value_size, "value_size", 1)
    slot = (size + 7) // 8 * 8
    if len(raw) % slot:
        raise ValueError(f"raw per-CPU value of {len(raw)} bytes is not a multiple of {slot}")
    return [raw[i : i + size] for i in range(0, len(raw), slot)]


def join_percpu(values: Sequence[bytes], value_size: int) -> bytes:
    """The per-CPU image of one value per CPU (each padded to a multiple of 8)."""
    size = _int(value_size, "value_size", 1)
    slot = (size + 7) // 8 * 8
    if any(len(v) != size for v in values):
        raise ValueError(f"every per-CPU value must be {size} bytes")
    return b"".join(bytes(v).ljust(slot, b"\0") for v in values)


# ---------------------------------------------------------------------------------------------
# Maps
# ---------------------------------------------------------------------------------------------
def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    *,
    name: str = "",
    flags: int = 0,
    inner_map_fd: FdLike | None = None,
    numa_node: int | None = None,
    map_extra: int = 0,
    map_ifindex: int = 0,
    btf_fd: FdLike | None = None,
    btf_key_type_id: int = 0,
    btf_value_type_id: int = 0,
    btf_vmlinux_value_type_id: int = 0,
    backend: Backend | None = None,
) -> OwnedFd:
    """BPF_MAP_CREATE. `numa_node` also sets BPF_F_NUMA_NODE; the BTF ids need `btf_fd`."""
    if btf_fd is None and (btf_key_type_id or btf_value_type_id):
        raise ValueError("btf_key_type_id/btf_value_type_id need btf_fd")
    attr = MapCreateAttr(
        map_type=_int(map_type, "map_type"),
        key_size=_int(key_size, "key_size"),
        value_size=_int(value_size, "value_size"),
        max_entries=_int(max_entries, "max_entries"),
        map_flags=_int(flags, "flags") | (0 if numa_node is None else MapFlag.NUMA_NODE),
        inner_map_fd=_opt_fd(inner_map_fd, "inner_map_fd"),
        numa_node=0 if numa_node is None else _int(numa_node, "numa_node"),
        map_name=_name(name, "name"),
        map_ifindex=_int(map_ifindex, "map_ifindex"),
        btf_fd=_opt_fd(btf_fd, "btf_fd"),
        btf_key_type_id=_int(btf_key_type_id, "btf_key_type_id"),
        btf_value_type_id=_int(btf_value_type_id, "btf_value_type_id"),
        btf_vmlinux_value_type_id=_int(btf_vmlinux_value_type_id, "btf_vmlinux_value_type_id"),
        map_extra=_int(map_extra, "map_extra", 0, U64_MAX),
    )
    return _bpf_fd(BpfCmd.MAP_CREATE, attr, _resolve(backend, inner_map_fd, btf_fd))


def _elem(
    cmd: BpfCmd,
    map_fd: FdLike,
    key: BytesLike | None,
    value: _Buf | None,
    flags: int,
    backend: Backend | None,
) -> bool:
    """One MapElemAttr command; False on ENOENT (the "absent" answer), True on success."""
    kbuf = None if key is None else _Buf(_bytes(key, "key"))
    attr = MapElemAttr(
        map_fd=_fd(map_fd, "map_fd"),
        key=0 if kbuf is None else kbuf.addr,
        value=0 if value is None else value.addr,
        flags=_int(flags, "flags", 0, U64_MAX),
    )
    try:
        _bpf(cmd, attr, _resolve_one(backend, map_fd))
    except SyscallError as exc:
        if exc.errno == errno.ENOENT and cmd is not BpfCmd.MAP_UPDATE_ELEM:
            return False
        raise
    return True


def _lookup(
    cmd: BpfCmd,
    map_fd: FdLike,
    key: BytesLike | None,
    size: int,
    flags: int,
    backend: Backend | None,
    size_name: str = "value_size",
) -> bytes | None:
    """A MapElemAttr command that fills a `size`-byte buffer; None on ENOENT."""
    out = _Buf(size=_int(size, size_name))
    return out.read() if _elem(cmd, map_fd, key, out, flags, backend) else None


def map_lookup_elem(
    map_fd: FdLike,
    key: BytesLike,
    value_size: int,
    *,
    flags: int = 0,
    backend: Backend | None = None,
) -> bytes | None:
    """BPF_MAP_LOOKUP_ELEM: the `value_size` bytes stored under `key`, or None (ENOENT).

    `flags` may hold BPF_F_LOCK. Queue/stack maps (key_size 0) peek with ``key=b""``."""
    return _lookup(BpfCmd.MAP_LOOKUP_ELEM, map_fd, key, value_size, flags, backend)


def map_lookup_and_delete_elem(
    map_fd: FdLike,
    key: BytesLike,
    value_size: int,
    *,
    flags: int = 0,
    backend: Backend | None = None,
) -> bytes | None:
    """BPF_MAP_LOOKUP_AND_DELETE_ELEM: pop the value under `key` (queue/stack: ``b""``), or
    None when absent/empty (ENOENT)."""
    return _lookup(BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, map_fd, key, value_size, flags, backend)


def map_update_elem(
    map_fd: FdLike,
    key: BytesLike,
    value: BytesLike,
    *,
    flags: int = 0,
    backend: Backend | None = None,
) -> None:
    """BPF_MAP_UPDATE_ELEM with UpdateFlag ANY / NOEXIST / EXIST, optionally | LOCK.

    The kernel answers EEXIST (NOEXIST on a present key), ENOENT (EXIST on an absent key) and
    E2BIG (a full map) as SyscallError."""
    _elem(BpfCmd.MAP_UPDATE_ELEM, map_fd, key, _Buf(_bytes(value, "value")), flags, backend)


def map_delete_elem(map_fd: FdLike, key: BytesLike, *, backend: Backend | None = None) -> bool:
    """BPF_MAP_DELETE_ELEM: True when deleted, False when the key was absent (ENOENT)."""
    return _elem(BpfCmd.MAP_DELETE_ELEM, map_fd, key, None, 0, backend)


def map_get_next_key(
    map_fd: FdLike, key: BytesLike | None, key_size: int, *, backend: Backend | None = None
) -> bytes | None:
    """BPF_MAP_GET_NEXT_KEY: the key after `key` (None: the first key), or None at the end.

    A `key` not in the map gives the first key for hash maps, as the kernel does."""
    return _lookup(BpfCmd.MAP_GET_NEXT_KEY, map_fd, key, key_size, 0, backend, "key_size")


def map_freeze(map_fd: FdLike, *, backend: Backend | None = None) -> None:
    """BPF_MAP_FREEZE: make the map read-only for user space from now on."""
    _elem(BpfCmd.MAP_FREEZE, map_fd, None, None, 0, backend)


def _uniform(items: object, name: str) -> bytes:
    """Concatenate a non-empty sequence of equally sized bytes-like items."""
    if isinstance(items, bytes | bytearray | memoryview | str) or not isinstance(items, Sequence):
        raise TypeError(f"{name} must be a sequence of bytes-like items")
    data = [_bytes(item, f"{name}[{i}]") for i, item in enumerate(items)]
    if not data or any(len(d) != len(data[0]) or not d for d in data):
        raise ValueError(f"{name} must be non-empty items, all of one size")
    return b"".join(data)


def _batch(
    cmd: BpfCmd,
    map_fd: FdLike,
    keys: _Buf,
    values: _Buf,
    count: int,
    elem_flags: int,
    flags: int,
    backend: Backend | None,
    in_batch: _Buf | None = None,
    out_batch: _Buf | None = None,
) -> tuple[int, bool]:
    """One MapBatchAttr command: (count the kernel wrote back, whether it ended with ENOENT).

    ENOENT is the normal end for lookups only; every other failure is a BatchError. The kernel
    zeroes `count` once its argument checks pass and writes the processed count on the way out,
    so a count still equal to the request after a failure (which never happens once the loop
    ran: it stops short of the request) means nothing was processed."""
    attr = MapBatchAttr(
        in_batch=0 if in_batch is None else in_batch.addr,
        out_batch=0 if out_batch is None else out_batch.addr,
        keys=keys.addr,
        values=values.addr,
        count=_int(count, "count"),
        map_fd=_fd(map_fd, "map_fd"),
        elem_flags=_int(elem_flags, "elem_flags", 0, U64_MAX),
        flags=_int(flags, "flags", 0, U64_MAX),
    )
    try:
        _bpf(cmd, attr, _resolve(backend, map_fd))
    except SyscallError as exc:
        if out_batch is not None and exc.errno == errno.ENOENT:
            return int(attr.count), True
        done = int(attr.count)
        raise BatchError(exc.call, exc.errno or 0, 0 if done == count else done) from None
    return int(attr.count), False


def _lookup_batch(
    cmd: BpfCmd,
    map_fd: FdLike,
    key_size: int,
    value_size: int,
    count: int,
    in_batch: BytesLike | None,
    elem_flags: int,
    flags: int,
    backend: Backend | None,
) -> BatchResult:
    ksize = _int(key_size, "key_size", 1)
    vsize = _int(value_size, "value_size", 1)
    n = _int(count, "count", 1)
    token_size = max(ksize, 4)  # hash maps use a u32 bucket cursor, others a key
    token_in = None if in_batch is None else _Buf(_bytes(in_batch, "in_batch"))
    if token_in is not None and token_in.size != token_size:
        raise ValueError(f"in_batch must be {token_size} bytes (a token from a previous call)")
    keys, values, token_out = _Buf(size=ksize * n), _Buf(size=vsize * n), _Buf(size=token_size)
    got, done = _batch(
        cmd, map_fd, keys, values, n, elem_flags, flags, backend, token_in, token_out
    )
    return BatchResult(
        keys=tuple(keys.read(ksize, i * ksize) for i in range(got)),
        values=tuple(values.read(vsize, i * vsize) for i in range(got)),
        next_batch=None if done else token_out.read(),
    )


def map_lookup_batch(
    map_fd: FdLike,
    key_size: int,
    value_size: int,
    count: int,
    *,
    in_batch: BytesLike | None = None,
    elem_flags: int = 0,
    flags: int = 0,
    backend: Backend | None = None,
) -> BatchResult:
    """BPF_MAP_LOOKUP_BATCH: up to `count` elements from `in_batch` (None: the start).

    ENOENT from the kernel means the walk is over: the elements it still copied are returned
    with `next_batch=None`. Other failures raise BatchError (its `count` is what was copied);
    hash maps answer ENOSPC when one bucket holds more than `count` elements."""
    return _lookup_batch(
        BpfCmd.MAP_LOOKUP_BATCH,
        map_fd,
        key_size,
        value_size,
        count,
        in_batch,
        elem_flags,
        flags,
        backend,
    )


def map_lookup_and_delete_batch(
    map_fd: FdLike,
    key_size: int,
    value_size: int,
    count: int,
    *,
    in_batch: BytesLike | None = None,
    elem_flags: int = 0,
    flags: int = 0,
    backend: Backend | None = None,
) -> BatchResult:
    """BPF_MAP_LOOKUP_AND_DELETE_BATCH: as `map_lookup_batch`, deleting what it returns."""
    return _lookup_batch(
        BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH,
        map_fd,
        key_size,
        value_size,
        count,
        in_batch,
        elem_flags,
        flags,
        backend,
    )


def map_update_batch(
    map_fd: FdLike,
    keys: Sequence[BytesLike],
    values: Sequence[BytesLike],
    *,
    elem_flags: int = 0,
    flags: int = 0,
    backend: Backend | None = None,
) -> int:
    """BPF_MAP_UPDATE_BATCH: store `values[i]` under `keys[i]`; the count updated.

    On failure a BatchError whose `count` is how many were updated before it."""
    kimg, vimg = _uniform(keys, "keys"), _uniform(values, "values")
    if len(keys) != len(values):
        raise ValueError(f"keys and values differ in length: {len(keys)} != {len(values)}")
    return _batch(
        BpfCmd.MAP_UPDATE_BATCH,
        map_fd,
        _Buf(kimg),
        _Buf(vimg),
        len(keys),
        elem_flags,
        flags,
        backend,
    )[0]


def map_delete_batch(
    map_fd: FdLike,
    keys: Sequence[BytesLike],
    *,
    elem_flags: int = 0,
    flags: int = 0,
    backend: Backend | None = None,
) -> int:
    """BPF_MAP_DELETE_BATCH: delete `keys`; the count deleted.

    On failure (e.g. ENOENT for an absent key) a BatchError whose `count` is how many were
    deleted before it."""
    kimg = _uniform(keys, "keys")
    return _batch(
        BpfCmd.MAP_DELETE_BATCH, map_fd, _Buf(kimg), _Buf(), len(keys), elem_flags, flags, backend
    )[0]


# ---------------------------------------------------------------------------------------------
# Loading with a log (PROG_LOAD, BTF_LOAD)
# ---------------------------------------------------------------------------------------------
@attrs.frozen
class _LogFields:
    """The names of the log fields of one load attr."""

    level: str
    size: str
    buf: str
    true_size: str


_PROG_LOG: Final = _LogFields("log_level", "log_size", "log_buf", "log_true_size")
_BTF_LOG: Final = _LogFields("btf_log_level", "btf_log_size", "btf_log_buf", "btf_log_true_size")


def _check_log_args(log_level: int | None, log_size_cap: int) -> None:
    if log_level is not None:
        _int(log_level, "log_level", 1)
    _int(log_size_cap, "log_size_cap", 128)


def _attempt(cmd: BpfCmd, attr: AttrImage, backend: Backend) -> int:
    """One load, retried on EAGAIN (the verifier gives up on a pending signal)."""
    for _ in range(EAGAIN_RETRIES - 1):
        try:
            return _bpf(cmd, attr, backend)
        except SyscallError as exc:
            if exc.errno != errno.EAGAIN:
                raise
    return _bpf(cmd, attr, backend)


def _load(
    cmd: BpfCmd,
    attr: AttrImage,
    names: _LogFields,
    log_level: int | None,
    log_size_cap: int,
    log_on_failure: bool,
    backend: Backend,
) -> tuple[OwnedFd, str]:
    """Load without a log (unless `log_level` is given); on failure retry with a log that grows
    on ENOSPC up to `log_size_cap`, then raise VerifierError with the log text."""
    call = Ebpf(cmd, attr).name
    first: SyscallError | None = None
    if log_level is None:
        try:
            return OwnedFd(_attempt(cmd, attr, backend), backend), ""
        except SyscallError as exc:
            if not log_on_failure:
                raise VerifierError(call, exc.errno or 0) from None
            first = exc
    size = min(LOG_SIZE_MIN, log_size_cap)
    while True:
        buf = _Buf(size=size)
        setattr(attr, names.level, 1 if log_level is None else log_level)
        setattr(attr, names.size, size)
        setattr(attr, names.buf, buf.addr)
        setattr(attr, names.true_size, 0)
        try:
            fd = _attempt(cmd, attr, backend)
        except SyscallError as exc:
            log = buf.text()
            if exc.errno == errno.ENOSPC and size < log_size_cap:
                size = min(log_size_cap, max(int(getattr(attr, names.true_size)), size * 4))
                continue
            truncated = exc.errno == errno.ENOSPC
            err = first.errno if first is not None else exc.errno
            raise VerifierError(call, err or 0, log, truncated) from None
        return OwnedFd(fd, backend), buf.text()


def _insns(insns: object) -> bytes:
    """The instruction image of `bytes | Sequence[InsnLike]`."""
    if isinstance(insns, bytes | bytearray | memoryview):
        image = bytes(insns)
    elif isinstance(insns, Sequence) and not isinstance(insns, str):
        parts = []
        for i, insn in enumerate(insns):
            to_bytes = getattr(insn, "to_bytes", None)
            if not callable(to_bytes) or isinstance(insn, int):
                raise TypeError(f"insns[{i}] has no to_bytes(): {type(insn).__name__}")
            parts.append(_bytes(to_bytes(), f"insns[{i}].to_bytes()"))
        image = b"".join(parts)
    else:
        raise TypeError(f"insns must be bytes or a sequence of instructions, got {insns!r}")
    if not image or len(image) % INSN_SIZE or len(image) // INSN_SIZE > U32_MAX:
        raise ValueError(f"insns must be a non-empty multiple of 8 bytes, got {len(image)}")
    return image


@overload
def prog_load(
    prog_type: int,
    insns: bytes | Sequence[InsnLike],
    license: str = ...,
    *,
    name: str = ...,
    expected_attach_type: int = ...,
    kern_version: int = ...,
    flags: int = ...,
    attach_btf_id: int = ...,
    attach_prog_fd: FdLike | None = ...,
    fd_array: Sequence[FdLike] | None = ...,
    prog_ifindex: int = ...,
    log_level: None = ...,
    log_size_cap: int = ...,
    log_on_failure: bool = ...,
    backend: Backend | None = ...,
) -> OwnedFd: ...


@overload
def prog_load(
    prog_type: int,
    insns: bytes | Sequence[InsnLike],
    license: str = ...,
    *,
    name: str = ...,
    expected_attach_type: int = ...,
    kern_version: int = ...,
    flags: int = ...,
    attach_btf_id: int = ...,
    attach_prog_fd: FdLike | None = ...,
    fd_array: Sequence[FdLike] | None = ...,
    prog_ifindex: int = ...,
    log_level: int,
    log_size_cap: int = ...,
    log_on_failure: bool = ...,
    backend: Backend | None = ...,
) -> LoadedWithLog: ...


def prog_load(
    prog_type: int,
    insns: bytes | Sequence[InsnLike],
    license: str = "GPL",
    *,
    name: str = "",
    expected_attach_type: int = 0,
    kern_version: int = 0,
    flags: int = 0,
    attach_btf_id: int = 0,
    attach_prog_fd: FdLike | None = None,
    fd_array: Sequence[FdLike] | None = None,
    prog_ifindex: int = 0,
    log_level: int | None = None,
    log_size_cap: int = LOG_SIZE_CAP,
    log_on_failure: bool = True,
    backend: Backend | None = None,
) -> OwnedFd | LoadedWithLog:
    """BPF_PROG_LOAD. `insns` is the raw image or objects with `to_bytes()`.

    Without `log_level` the program is loaded without a log and the fd returned; a failure is
    retried with log level 1 (unless `log_on_failure` is False) in a buffer that grows on
    ENOSPC up to `log_size_cap`, and raised as VerifierError carrying the log. With an explicit
    `log_level` every attempt is logged and a `LoadedWithLog(fd, log)` is returned."""
    image = _Buf(_insns(insns))
    if not isinstance(license, str) or "\0" in license or not license.isascii():
        raise TypeError(f"license must be an ASCII str without NUL, got {license!r}")
    _check_log_args(log_level, log_size_cap)
    if fd_array is not None and (isinstance(fd_array, bytes | str) or not fd_array):
        raise ValueError("fd_array must be a non-empty sequence of fds")
    fds = [_fd(f, f"fd_array[{i}]") for i, f in enumerate(fd_array or ())]
    fd_image = (ctypes.c_int32 * len(fds))(*fds) if fds else None
    lic = _Buf(license.encode() + b"\0")
    attr = ProgLoadAttr(
        prog_type=_int(prog_type, "prog_type"),
        insn_cnt=image.size // INSN_SIZE,
        insns=image.addr,
        license=lic.addr,
        kern_version=_int(kern_version, "kern_version"),
        prog_flags=_int(flags, "flags"),
        prog_name=_name(name, "name"),
        prog_ifindex=_int(prog_ifindex, "prog_ifindex"),
        expected_attach_type=_int(expected_attach_type, "expected_attach_type"),
        attach_btf_id=_int(attach_btf_id, "attach_btf_id"),
        attach_prog_fd=_opt_fd(attach_prog_fd, "attach_prog_fd"),
        fd_array=0 if fd_image is None else ctypes.addressof(fd_image),
    )
    b = _resolve(backend, attach_prog_fd, *(fd_array or ()))
    fd, log = _load(BpfCmd.PROG_LOAD, attr, _PROG_LOG, log_level, log_size_cap, log_on_failure, b)
    return fd if log_level is None else LoadedWithLog(fd, log)


@overload
def btf_load(
    data: BytesLike,
    *,
    log_level: None = ...,
    log_size_cap: int = ...,
    log_on_failure: bool = ...,
    backend: Backend | None = ...,
) -> OwnedFd: ...


@overload
def btf_load(
    data: BytesLike,
    *,
    log_level: int,
    log_size_cap: int = ...,
    log_on_failure: bool = ...,
    backend: Backend | None = ...,
) -> LoadedWithLog: ...


def btf_load(
    data: BytesLike,
    *,
    log_level: int | None = None,
    log_size_cap: int = LOG_SIZE_CAP,
    log_on_failure: bool = True,
    backend: Backend | None = None,
) -> OwnedFd | LoadedWithLog:
    """BPF_BTF_LOAD of a raw BTF blob, with the same log handling as `prog_load`."""
    blob = _Buf(_bytes(data, "data"))
    size = blob.size
    if not size:
        raise ValueError("data must not be empty")
    _check_log_args(log_level, log_size_cap)
    attr = BtfLoadAttr(btf=blob.addr, btf_size=_int(size, "len(data)"))
    fd, log = _load(
        BpfCmd.BTF_LOAD,
        attr,
        _BTF_LOG,
        log_level,
        log_size_cap,
        log_on_failure,
        _resolve(backend),
    )
    return fd if log_level is None else LoadedWithLog(fd, log)


# ---------------------------------------------------------------------------------------------
# Pinning, attaching, test runs
# ---------------------------------------------------------------------------------------------
def obj_pin(fd: FdLike, path: str | os.PathLike[str], *, backend: Backend | None = None) -> None:
    """BPF_OBJ_PIN: pin the map/program/link `fd` at `path` on a bpffs."""
    pathname = _cstr(path, "path")
    attr = ObjPinAttr(pathname=pathname.addr, bpf_fd=_fd(fd, "fd"))
    _bpf(BpfCmd.OBJ_PIN, attr, _resolve(backend, fd))


def obj_get(
    path: str | os.PathLike[str], *, file_flags: int = 0, backend: Backend | None = None
) -> OwnedFd:
    """BPF_OBJ_GET: a new fd of the object pinned at `path` (`file_flags`: BPF_F_RDONLY...)."""
    pathname = _cstr(path, "path")
    attr = ObjPinAttr(pathname=pathname.addr, file_flags=_int(file_flags, "file_flags"))
    return _bpf_fd(BpfCmd.OBJ_GET, attr, _resolve(backend))


def prog_attach(
    prog_fd: FdLike,
    target_fd: FdLike,
    attach_type: int,
    *,
    flags: int = 0,
    replace_prog_fd: FdLike | None = None,
    backend: Backend | None = None,
) -> None:
    """BPF_PROG_ATTACH (`flags`: AttachFlag). `replace_prog_fd` also sets BPF_F_REPLACE."""
    attr = ProgAttachAttr(
        target_fd=_fd(target_fd, "target_fd"),
        attach_bpf_fd=_fd(prog_fd, "prog_fd"),
        attach_type=_int(attach_type, "attach_type"),
        attach_flags=_int(flags, "flags") | (0 if replace_prog_fd is None else AttachFlag.REPLACE),
        replace_bpf_fd=_opt_fd(replace_prog_fd, "replace_prog_fd"),
    )
    _bpf(BpfCmd.PROG_ATTACH, attr, _resolve(backend, prog_fd, target_fd, replace_prog_fd))


def prog_detach(
    target_fd: FdLike,
    attach_type: int,
    *,
    prog_fd: FdLike | None = None,
    backend: Backend | None = None,
) -> None:
    """BPF_PROG_DETACH: detach `prog_fd` (or the only program) of `attach_type` from target."""
    attr = ProgAttachAttr(
        target_fd=_fd(target_fd, "target_fd"),
        attach_bpf_fd=_opt_fd(prog_fd, "prog_fd"),
        attach_type=_int(attach_type, "attach_type"),
    )
    _bpf(BpfCmd.PROG_DETACH, attr, _resolve(backend, target_fd, prog_fd))


def prog_test_run(
    prog_fd: FdLike,
    data_in: BytesLike = b"",
    *,
    data_out_size: int | None = None,
    ctx_in: BytesLike | None = None,
    ctx_out_size: int = 0,
    repeat: int = 0,
    flags: int = 0,
    cpu: int | None = None,
    backend: Backend | None = None,
) -> TestRunResult:
    """BPF_PROG_TEST_RUN: run the program `repeat` times (0 = once) on `data_in`/`ctx_in`.

    `data_out_size` defaults to len(data_in) + 256 (room for programs that grow packets); 0
    asks for no data back. `cpu` also sets BPF_F_TEST_RUN_ON_CPU. When the kernel reports
    ENOSPC because an output buffer was too small, TestRunTruncated carries the result."""
    din = _Buf(_bytes(data_in, "data_in"))
    dout = _Buf(
        size=din.size + 256 if data_out_size is None else _int(data_out_size, "data_out_size")
    )
    cin = _Buf() if ctx_in is None else _Buf(_bytes(ctx_in, "ctx_in"))
    cout = _Buf(size=_int(ctx_out_size, "ctx_out_size"))
    attr = TestRunAttr(
        prog_fd=_fd(prog_fd, "prog_fd"),
        data_size_in=din.size,
        data_size_out=dout.size,
        data_in=din.addr,
        data_out=dout.addr,
        repeat=_int(repeat, "repeat"),
        ctx_size_in=cin.size,
        ctx_size_out=cout.size,
        ctx_in=cin.addr,
        ctx_out=cout.addr,
        flags=_int(flags, "flags") | (0 if cpu is None else TestRunFlag.RUN_ON_CPU),
        cpu=0 if cpu is None else _int(cpu, "cpu"),
    )

    def result() -> TestRunResult:
        return TestRunResult(
            retval=int(attr.retval),
            duration=int(attr.duration),
            data_out=dout.read(int(attr.data_size_out)),
            ctx_out=cout.read(int(attr.ctx_size_out)),
            data_size_out=int(attr.data_size_out),
            ctx_size_out=int(attr.ctx_size_out),
        )

    try:
        _bpf(BpfCmd.PROG_TEST_RUN, attr, _resolve(backend, prog_fd))
    except SyscallError as exc:
        res = result()
        if exc.errno == errno.ENOSPC and (
            res.data_size_out > len(res.data_out) or res.ctx_size_out > len(res.ctx_out)
        ):
            raise TestRunTruncated(exc.call, res) from None
        raise
    return result()


def prog_query(
    target_fd: FdLike,
    attach_type: int,
    *,
    query_flags: int = 0,
    backend: Backend | None = None,
) -> ProgQueryResult:
    """BPF_PROG_QUERY: the attach flags and program ids at `target_fd` for `attach_type`.

    Two calls, as libbpf: the first learns the count, the second fetches the ids (repeated
    when programs were attached in between and the kernel answers ENOSPC)."""
    b = _resolve(backend, target_fd)
    target = _fd(target_fd, "target_fd")
    kind = _int(attach_type, "attach_type")
    qflags = _int(query_flags, "query_flags")
    capacity = 0
    while True:
        ids = (ctypes.c_uint32 * capacity)()
        attr = ProgQueryAttr(
            target_fd=target,
            attach_type=kind,
            query_flags=qflags,
            prog_ids=ctypes.addressof(ids) if capacity else 0,
            prog_cnt=capacity,
        )
        try:
            _bpf(BpfCmd.PROG_QUERY, attr, b)
        except SyscallError as exc:
            if exc.errno == errno.ENOSPC:
                capacity = max(int(attr.prog_cnt), capacity * 2)
                continue
            raise
        count = int(attr.prog_cnt)
        if count <= capacity:
            return ProgQueryResult(int(attr.attach_flags), tuple(ids[:count]))
        capacity = count


# ---------------------------------------------------------------------------------------------
# Ids and info
# ---------------------------------------------------------------------------------------------
def _next_ids(cmd: BpfCmd, backend: Backend | None) -> Iterator[int]:
    """Walk a GET_NEXT_ID command from 0 until ENOENT."""
    b = _resolve(backend)
    attr = GetIdAttr()
    while True:
        try:
            _bpf(cmd, attr, b)
        except SyscallError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise
        yield int(attr.next_id)
        attr.start_id = attr.next_id


def prog_ids(*, backend: Backend | None = None) -> Iterator[int]:
    """BPF_PROG_GET_NEXT_ID: the ids of all loaded programs, ascending."""
    return _next_ids(BpfCmd.PROG_GET_NEXT_ID, backend)


def map_ids(*, backend: Backend | None = None) -> Iterator[int]:
    """BPF_MAP_GET_NEXT_ID: the ids of all maps, ascending."""
    return _next_ids(BpfCmd.MAP_GET_NEXT_ID, backend)


def link_ids(*, backend: Backend | None = None) -> Iterator[int]:
    """BPF_LINK_GET_NEXT_ID: the ids of all links, ascending."""
    return _next_ids(BpfCmd.LINK_GET_NEXT_ID, backend)


def btf_ids(*, backend: Backend | None = None) -> Iterator[int]:
    """BPF_BTF_GET_NEXT_ID: the ids of all BTF objects, ascending."""
    return _next_ids(BpfCmd.BTF_GET_NEXT_ID, backend)


def _fd_by_id(cmd: BpfCmd, obj_id: int, open_flags: int, backend: Backend | None) -> OwnedFd:
    attr = GetIdAttr(start_id=_int(obj_id, "id", 1), open_flags=_int(open_flags, "open_flags"))
    return _bpf_fd(cmd, attr, _resolve(backend))


def prog_get_fd_by_id(prog_id: int, *, backend: Backend | None = None) -> OwnedFd:
    """BPF_PROG_GET_FD_BY_ID (ENOENT: no such program)."""
    return _fd_by_id(BpfCmd.PROG_GET_FD_BY_ID, prog_id, 0, backend)


def map_get_fd_by_id(
    map_id: int, *, open_flags: int = 0, backend: Backend | None = None
) -> OwnedFd:
    """BPF_MAP_GET_FD_BY_ID (`open_flags`: BPF_F_RDONLY / BPF_F_WRONLY)."""
    return _fd_by_id(BpfCmd.MAP_GET_FD_BY_ID, map_id, open_flags, backend)


def link_get_fd_by_id(link_id: int, *, backend: Backend | None = None) -> OwnedFd:
    """BPF_LINK_GET_FD_BY_ID."""
    return _fd_by_id(BpfCmd.LINK_GET_FD_BY_ID, link_id, 0, backend)


def btf_get_fd_by_id(btf_id: int, *, backend: Backend | None = None) -> OwnedFd:
    """BPF_BTF_GET_FD_BY_ID."""
    return _fd_by_id(BpfCmd.BTF_GET_FD_BY_ID, btf_id, 0, backend)


def obj_get_info_by_fd(fd: FdLike, info: AbiStruct, *, backend: Backend | None = None) -> int:
    """BPF_OBJ_GET_INFO_BY_FD into `info` (which may carry pointers to fill); returns the
    length the kernel filled (the kernel writes back min(sizeof(info), its own size))."""
    if not isinstance(info, AbiStruct):
        raise TypeError(f"info must be an AbiStruct, got {type(info).__name__}")
    attr = InfoByFdAttr(
        bpf_fd=_fd(fd, "fd"), info_len=ctypes.sizeof(info), info=ctypes.addressof(info)
    )
    _bpf(BpfCmd.OBJ_GET_INFO_BY_FD, attr, _resolve(backend, fd))
    return int(attr.info_len)


def _info(fd: FdLike, cls: type[_T], backend: Backend | None) -> _T:
    info = cls()
    obj_get_info_by_fd(fd, info, backend=backend)
    return info


def prog_info(fd: FdLike, *, backend: Backend | None = None) -> BpfProgInfo:
    """The program's `struct bpf_prog_info` (name: `obj_name(info.name)`)."""
    return _info(fd, BpfProgInfo, backend)


def map_info(fd: FdLike, *, backend: Backend | None = None) -> BpfMapInfo:
    """The map's `struct bpf_map_info`."""
    return _info(fd, BpfMapInfo, backend)


def link_info(fd: FdLike, *, backend: Backend | None = None) -> BpfLinkInfo:
    """The link's `struct bpf_link_info` (a raw tracepoint's name: `link_tp_name`)."""
    return _info(fd, BpfLinkInfo, backend)


def prog_map_ids(fd: FdLike, *, backend: Backend | None = None) -> tuple[int, ...]:
    """The ids of the maps the program uses (two info calls: count, then ids)."""
    count = prog_info(fd, backend=backend).nr_map_ids
    while True:
        ids = (ctypes.c_uint32 * max(count, 1))()
        info = BpfProgInfo(nr_map_ids=count, map_ids=ctypes.addressof(ids))
        obj_get_info_by_fd(fd, info, backend=backend)
        if info.nr_map_ids <= count:
            return tuple(ids[: info.nr_map_ids])
        count = info.nr_map_ids


def link_tp_name(fd: FdLike, *, backend: Backend | None = None) -> str:
    """The tracepoint name of a raw tracepoint link (two info calls: length, then name)."""
    info = link_info(fd, backend=backend)
    if info.type != LinkType.RAW_TRACEPOINT:
        raise ValueError(f"fd is a link of type {info.type}, not RAW_TRACEPOINT")
    size = info.raw_tracepoint.tp_name_len
    name = _Buf(size=max(size, 1))
    info = BpfLinkInfo()
    info.raw_tracepoint.tp_name = name.addr
    info.raw_tracepoint.tp_name_len = max(size, 1)
    obj_get_info_by_fd(fd, info, backend=backend)
    return name.text()


# ---------------------------------------------------------------------------------------------
# Links, tracepoints, stats
# ---------------------------------------------------------------------------------------------
def raw_tracepoint_open(
    prog_fd: FdLike, name: str | None, *, backend: Backend | None = None
) -> OwnedFd:
    """BPF_RAW_TRACEPOINT_OPEN: a link of `prog_fd` to raw tracepoint `name` (None for
    BTF-typed programs whose target came with the load)."""
    tp = _Buf() if name is None else _cstr(name, "name")
    attr = RawTracepointOpenAttr(name=tp.addr, prog_fd=_fd(prog_fd, "prog_fd"))
    return _bpf_fd(BpfCmd.RAW_TRACEPOINT_OPEN, attr, _resolve(backend, prog_fd))


def link_create(
    prog_fd: FdLike,
    target_fd: FdLike,
    attach_type: int,
    *,
    flags: int = 0,
    target_btf_id: int | None = None,
    bpf_cookie: int | None = None,
    backend: Backend | None = None,
) -> OwnedFd:
    """BPF_LINK_CREATE: a link of `prog_fd` to `target_fd` (an fd, or an ifindex for XDP).

    `target_fd=-1` is passed as the kernel's u32 0xffffffff (feature probes use it).
    `target_btf_id` and `bpf_cookie` (perf_event links) share a union: give at most one."""
    if target_btf_id is not None and bpf_cookie is not None:
        raise ValueError("target_btf_id and bpf_cookie are exclusive")
    attr = LinkCreateAttr(
        prog_fd=_fd(prog_fd, "prog_fd"),
        target_fd=_fd(target_fd, "target_fd", allow_minus_one=True),
        attach_type=_int(attach_type, "attach_type"),
        flags=_int(flags, "flags"),
    )
    if target_btf_id is not None:
        attr.target_btf_id = _int(target_btf_id, "target_btf_id")
    if bpf_cookie is not None:
        attr.perf_event.bpf_cookie = _int(bpf_cookie, "bpf_cookie", 0, U64_MAX)
    return _bpf_fd(BpfCmd.LINK_CREATE, attr, _resolve(backend, prog_fd, target_fd))


def link_create_perf_event(
    prog_fd: FdLike, perf_fd: FdLike, *, bpf_cookie: int = 0, backend: Backend | None = None
) -> OwnedFd:
    """LINK_CREATE of a perf event (attach type BPF_PERF_EVENT) with a BPF cookie."""
    return link_create(
        prog_fd, perf_fd, AttachType.PERF_EVENT, bpf_cookie=bpf_cookie, backend=backend
    )


def link_update(
    link_fd: FdLike,
    new_prog_fd: FdLike,
    *,
    old_prog_fd: FdLike | None = None,
    flags: int = 0,
    backend: Backend | None = None,
) -> None:
    """BPF_LINK_UPDATE: swap the link's program; `old_prog_fd` also sets BPF_F_REPLACE (the
    kernel then answers EPERM when the link's program is another)."""
    attr = LinkUpdateAttr(
        link_fd=_fd(link_fd, "link_fd"),
        new_prog_fd=_fd(new_prog_fd, "new_prog_fd"),
        flags=_int(flags, "flags") | (0 if old_prog_fd is None else AttachFlag.REPLACE),
        old_prog_fd=_opt_fd(old_prog_fd, "old_prog_fd"),
    )
    _bpf(BpfCmd.LINK_UPDATE, attr, _resolve(backend, link_fd, new_prog_fd, old_prog_fd))


def link_detach(link_fd: FdLike, *, backend: Backend | None = None) -> None:
    """BPF_LINK_DETACH: detach the link from its target; the fd stays open (and defunct)."""
    attr = LinkDetachAttr(link_fd=_fd(link_fd, "link_fd"))
    _bpf(BpfCmd.LINK_DETACH, attr, _resolve(backend, link_fd))


def enable_stats(
    stats_type: int = StatsType.RUN_TIME, *, backend: Backend | None = None
) -> OwnedFd:
    """BPF_ENABLE_STATS: run-time statistics are collected while the returned fd is open."""
    attr = EnableStatsAttr(type=_int(stats_type, "stats_type"))
    return _bpf_fd(BpfCmd.ENABLE_STATS, attr, _resolve(backend))
