"""Kernel feature probes, as libbpf (`libbpf_probes.c`, `features.c`) and Aya have them.

Theory of operation
-------------------
Each probe asks the kernel the smallest question that tells a feature apart: load a tiny
program, create a small map, or issue a command with an argument the kernel rejects in a way
that differs between kernels with and without the feature (for example LINK_CREATE with target
fd -1: EBADF when the attach type is known, EINVAL when it is not). A probe answers True or
False from the errno it expects; any other failure (EPERM without privilege, ENOMEM, ...) is
raised as the SyscallError it is and not cached, since it says nothing about the kernel.

Every probe closes everything it opened (`contextlib.ExitStack` of `OwnedFd`s). Answers are
cached per backend object in a `WeakKeyDictionary`; `clear_cache()` forgets them. /proc and
/sys are read only through `backend.read_file`.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import re
from collections.abc import Callable, Collection
from enum import StrEnum
from typing import Final
from weakref import WeakKeyDictionary

from bpfsys import asm, bpf
from bpfsys.abi import (
    AttachType,
    BpfFunc,
    MapFlag,
    MapType,
    ProgType,
)
from bpfsys.backend import Backend, current_backend
from bpfsys.fd import OwnedFd
from bpfsys.syscall import SyscallError

__all__ = [
    "ENOTSUPP",
    "PROBES",
    "Feature",
    "clear_cache",
    "kernel_version_code",
    "probe",
    "probe_all",
]

ENOTSUPP: Final = 524
"""The kernel-internal "operation not supported" errno some commands leak to user space."""


class Feature(StrEnum):
    """The features `probe` knows (the value is the name accepted as a str)."""

    PROG_NAME = "prog_name"
    BPF_LINK = "bpf_link"
    PERF_LINK = "perf_link"
    BPF_COOKIE = "bpf_cookie"
    RINGBUF = "ringbuf"
    BATCH_OPS = "batch_ops"
    ENABLE_STATS = "enable_stats"
    HASH_LOOKUP_AND_DELETE = "hash_lookup_and_delete"
    MMAPABLE_ARRAY = "mmapable_array"
    GLOBAL_DATA = "global_data"
    PROBE_READ_KERNEL = "probe_read_kernel"


RETURN_0: Final = asm.encode([asm.mov64(asm.R0, 0), asm.exit_insn()])


# ---------------------------------------------------------------------------------------------
# Probe helpers
# ---------------------------------------------------------------------------------------------
Probe = Callable[[Backend, contextlib.ExitStack], bool]
"""A probe: asks `backend`, registers what it opens on the stack (closed afterwards)."""

_REJECTED: Final = (errno.EINVAL, errno.EACCES)
"""How a kernel refuses a program or map it does not know (verifier: EACCES or EINVAL)."""


def _answer(
    action: Callable[[], object],
    *,
    yes: Collection[int] = (),
    no: Collection[int] = _REJECTED,
) -> bool:
    """Run `action`: success or an errno in `yes` is True, an errno in `no` is False, any other
    failure is raised. A returned OwnedFd is closed."""
    try:
        result = action()
    except SyscallError as exc:
        if exc.errno in yes:
            return True
        if exc.errno in no:
            return False
        raise
    if isinstance(result, OwnedFd):
        result.close()
    return True


def _keep(stack: contextlib.ExitStack, fd: OwnedFd) -> OwnedFd:
    return stack.enter_context(fd)


def _loads(
    backend: Backend,
    prog_type: ProgType,
    insns: bytes,
    *,
    name: str = "",
    kern_version: int = 0,
) -> Callable[[], object]:
    """The action of loading a program (no verifier log: probes only want the verdict)."""
    return lambda: bpf.prog_load(
        prog_type,
        insns,
        name=name,
        kern_version=kern_version,
        log_on_failure=False,
        backend=backend,
    )


def _prog(
    backend: Backend,
    stack: contextlib.ExitStack,
    prog_type: ProgType,
    expected_attach_type: int = 0,
) -> OwnedFd:
    """A loaded `return 0` program of `prog_type`, closed with the stack."""
    fd = bpf.prog_load(
        prog_type,
        RETURN_0,
        expected_attach_type=expected_attach_type,
        log_on_failure=False,
        backend=backend,
    )
    return _keep(stack, fd)


def kernel_version_code(backend: Backend) -> int:
    """LINUX_VERSION_CODE of the backend's kernel from /proc/sys/kernel/osrelease (0 if
    unreadable); KPROBE programs needed it as kern_version before 5.0."""
    try:
        release = backend.read_file("/proc/sys/kernel/osrelease").decode()
    except OSError:
        return 0
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if match is None:
        return 0
    major, minor, patch = (int(g or 0) for g in match.groups())
    return (major << 16) | (minor << 8) | min(patch, 255)


# ---------------------------------------------------------------------------------------------
# The probes
# ---------------------------------------------------------------------------------------------
def _prog_name(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """A named socket filter loads (4.15); EINVAL: names unknown."""
    return _answer(
        _loads(backend, ProgType.SOCKET_FILTER, RETURN_0, name="bpfsys_name"), no=(errno.EINVAL,)
    )


def _bpf_link(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """LINK_CREATE (5.7), as cilium/ebpf asks: a cgroup_skb program to target fd -1 gives
    EBADF when the command exists, EINVAL when it does not."""
    prog = _prog(backend, stack, ProgType.CGROUP_SKB, AttachType.CGROUP_INET_INGRESS)
    return _answer(
        lambda: bpf.link_create(prog, -1, AttachType.CGROUP_INET_INGRESS, backend=backend),
        yes=(errno.EBADF,),
        no=(errno.EINVAL,),
    )


def _perf_link(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """perf_event links (5.15), as libbpf's probe_perf_link: a tracepoint program, LINK_CREATE
    with target fd -1 and BPF_PERF_EVENT: EBADF means supported, EINVAL not."""
    prog = _prog(backend, stack, ProgType.TRACEPOINT)
    return _answer(
        lambda: bpf.link_create(prog, -1, AttachType.PERF_EVENT, backend=backend),
        yes=(errno.EBADF,),
        no=(errno.EINVAL,),
    )


def _bpf_cookie(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """bpf_get_attach_cookie (5.15) in a kprobe program."""
    insns = asm.encode([asm.call(BpfFunc.GET_ATTACH_COOKIE), asm.exit_insn()])
    return _answer(
        _loads(backend, ProgType.KPROBE, insns, kern_version=kernel_version_code(backend))
    )


def _ringbuf(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """A one-page BPF_MAP_TYPE_RINGBUF (5.8)."""
    return _answer(
        lambda: bpf.map_create(MapType.RINGBUF, 0, 0, mmap.PAGESIZE, backend=backend),
        no=(errno.EINVAL,),
    )


def _batch_ops(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """MAP_LOOKUP_BATCH (5.6) on an empty hash: success/ENOENT (the end) yes, EINVAL no."""
    hash_map = _keep(stack, bpf.map_create(MapType.HASH, 4, 4, 1, backend=backend))
    return _answer(
        lambda: bpf.map_lookup_batch(hash_map, 4, 4, 1, backend=backend),
        no=(errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP),
    )


def _enable_stats(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """BPF_ENABLE_STATS (5.8): the returned fd is closed at once (stats off again)."""
    return _answer(lambda: bpf.enable_stats(backend=backend), no=(errno.EINVAL,))


def _hash_lookup_and_delete(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """MAP_LOOKUP_AND_DELETE_ELEM on a hash map (5.14): ENOENT (absent key) means supported,
    ENOTSUPP/EINVAL that only queues and stacks have it."""
    hash_map = _keep(stack, bpf.map_create(MapType.HASH, 4, 4, 1, backend=backend))
    return _answer(
        lambda: bpf.map_lookup_and_delete_elem(hash_map, b"\0\0\0\0", 4, backend=backend),
        no=(errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP),
    )


def _mmapable_array(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """An array map with BPF_F_MMAPABLE (5.5)."""
    return _answer(
        lambda: bpf.map_create(MapType.ARRAY, 4, 4, 1, flags=MapFlag.MMAPABLE, backend=backend),
        no=(errno.EINVAL,),
    )


def _global_data(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """Direct map-value access (5.2), as libbpf's probe_kern_global_data: a socket filter that
    stores through a BPF_PSEUDO_MAP_VALUE ld_imm64."""
    array = _keep(stack, bpf.map_create(MapType.ARRAY, 4, 32, 1, backend=backend))
    insns = (
        asm.encode([*asm.ld_map_value(asm.R1, array.fileno(), 16), asm.st("dw", asm.R1, 0, 42)])
        + RETURN_0
    )
    return _answer(_loads(backend, ProgType.SOCKET_FILTER, insns))


def _probe_read_kernel(backend: Backend, stack: contextlib.ExitStack) -> bool:
    """bpf_probe_read_kernel (5.5) from a tracepoint program, as libbpf probes it."""
    insns = asm.encode(
        [
            asm.mov64(asm.R1, asm.R10),
            asm.alu64("add", asm.R1, -8),
            asm.mov64(asm.R2, 8),
            asm.mov64(asm.R3, 0),
            asm.call(BpfFunc.PROBE_READ_KERNEL),
            asm.exit_insn(),
        ]
    )
    return _answer(_loads(backend, ProgType.TRACEPOINT, insns))


PROBES: Final[dict[Feature, Probe]] = {
    Feature.PROG_NAME: _prog_name,
    Feature.BPF_LINK: _bpf_link,
    Feature.PERF_LINK: _perf_link,
    Feature.BPF_COOKIE: _bpf_cookie,
    Feature.RINGBUF: _ringbuf,
    Feature.BATCH_OPS: _batch_ops,
    Feature.ENABLE_STATS: _enable_stats,
    Feature.HASH_LOOKUP_AND_DELETE: _hash_lookup_and_delete,
    Feature.MMAPABLE_ARRAY: _mmapable_array,
    Feature.GLOBAL_DATA: _global_data,
    Feature.PROBE_READ_KERNEL: _probe_read_kernel,
}
"""Every probe, by feature."""


# ---------------------------------------------------------------------------------------------
# Cached entry points
# ---------------------------------------------------------------------------------------------
_cache: WeakKeyDictionary[Backend, dict[Feature, bool]] = WeakKeyDictionary()


def _feature(name: object) -> Feature:
    if not isinstance(name, str):
        raise TypeError(f"name must be a Feature or str, got {type(name).__name__}")
    try:
        return Feature(name)
    except ValueError:
        known = ", ".join(f.value for f in Feature)
        raise ValueError(f"unknown feature {name!r} (known: {known})") from None


def probe(name: Feature | str, *, backend: Backend | None = None) -> bool:
    """Whether the backend's kernel has feature `name`; probed once per backend, then cached.

    Raises SyscallError when the probe fails in a way that does not answer the question
    (e.g. EPERM); such failures are not cached."""
    feature = _feature(name)
    b = current_backend() if backend is None else backend
    try:
        answers = _cache.setdefault(b, {})
    except TypeError:  # a backend that cannot be weakly referenced: probe every time
        answers = {}
    if feature not in answers:
        with contextlib.ExitStack() as stack:
            answers[feature] = PROBES[feature](b, stack)
    return answers[feature]


def probe_all(*, backend: Backend | None = None) -> dict[Feature, bool]:
    """Every feature's answer for the backend (each cached as by `probe`)."""
    return {feature: probe(feature, backend=backend) for feature in Feature}


def clear_cache(backend: Backend | None = None) -> None:
    """Forget cached answers: of `backend`, or of every backend when None."""
    if backend is None:
        _cache.clear()
    else:
        with contextlib.suppress(KeyError, TypeError):
            del _cache[backend]
