"""Feature probes: answers per kernel version, per-backend caching, fault handling, no leaks."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from conftest import open_fd_count
from spies import RecordingBackend

from bpfsys import features
from bpfsys.abi import BpfCmd
from bpfsys.backend import Backend
from bpfsys.features import Feature
from bpfsys.kversion import KernelVersion
from bpfsys.syscall import SyscallError

SINCE = {
    Feature.PROG_NAME: "4.15",
    Feature.BPF_LINK: "5.7",
    Feature.PERF_LINK: "5.15",
    Feature.BPF_COOKIE: "5.15",
    Feature.RINGBUF: "5.8",
    Feature.BATCH_OPS: "5.6",
    Feature.ENABLE_STATS: "5.8",
    Feature.HASH_LOOKUP_AND_DELETE: "5.14",
    Feature.MMAPABLE_ARRAY: "5.5",
    Feature.GLOBAL_DATA: "5.2",
    Feature.PROBE_READ_KERNEL: "5.5",
}
"""The release that added each feature."""


def kernel_version(backend: Backend) -> KernelVersion:
    return KernelVersion.parse(backend.read_file("/proc/sys/kernel/osrelease").decode())


def test_every_feature_has_a_probe_and_a_version() -> None:
    assert set(features.PROBES) == set(Feature) == set(SINCE)


@pytest.mark.parametrize("feature", list(Feature), ids=[f.value for f in Feature])
def test_probe_matches_kernel_version(backend: Backend, no_fd_leak: None, feature: Feature) -> None:
    expected = kernel_version(backend) >= KernelVersion.parse(SINCE[feature])
    before = open_fd_count()
    assert features.probe(feature) is expected
    assert features.probe(feature.value, backend=backend) is expected  # str names work too
    assert open_fd_count() == before


def test_probe_all(backend: Backend, no_fd_leak: None) -> None:
    answers = features.probe_all(backend=backend)
    kver = kernel_version(backend)
    assert answers == {f: kver >= KernelVersion.parse(SINCE[f]) for f in Feature}


def test_answers_are_cached_per_backend(backend: Backend, no_fd_leak: None) -> None:
    first, second = RecordingBackend(backend), RecordingBackend(backend)
    assert features.probe(Feature.RINGBUF, backend=first)
    assert first.calls == [BpfCmd.MAP_CREATE]
    assert features.probe(Feature.RINGBUF, backend=first)
    assert first.calls == [BpfCmd.MAP_CREATE]  # cached: no second probe
    assert features.probe(Feature.RINGBUF, backend=second)
    assert second.calls == [BpfCmd.MAP_CREATE]  # another backend probes for itself
    features.clear_cache(first)
    assert features.probe(Feature.RINGBUF, backend=first)
    assert features.probe(Feature.RINGBUF, backend=second)
    assert (len(first.calls), len(second.calls)) == (2, 1)
    features.clear_cache()
    assert features.probe(Feature.RINGBUF, backend=second)
    assert len(second.calls) == 2


# What each probe does when an older kernel refuses its question: (command, errno).
REFUSALS: list[tuple[Feature, BpfCmd, int]] = [
    (Feature.PROG_NAME, BpfCmd.PROG_LOAD, errno.EINVAL),
    (Feature.BPF_LINK, BpfCmd.LINK_CREATE, errno.EINVAL),
    (Feature.PERF_LINK, BpfCmd.LINK_CREATE, errno.EINVAL),
    (Feature.BPF_COOKIE, BpfCmd.PROG_LOAD, errno.EINVAL),
    (Feature.BPF_COOKIE, BpfCmd.PROG_LOAD, errno.EACCES),
    (Feature.RINGBUF, BpfCmd.MAP_CREATE, errno.EINVAL),
    (Feature.BATCH_OPS, BpfCmd.MAP_LOOKUP_BATCH, errno.EINVAL),
    (Feature.ENABLE_STATS, BpfCmd.ENABLE_STATS, errno.EINVAL),
    (Feature.HASH_LOOKUP_AND_DELETE, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, features.ENOTSUPP),
    (Feature.HASH_LOOKUP_AND_DELETE, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, errno.EINVAL),
    (Feature.MMAPABLE_ARRAY, BpfCmd.MAP_CREATE, errno.EINVAL),
    (Feature.GLOBAL_DATA, BpfCmd.PROG_LOAD, errno.EINVAL),
    (Feature.PROBE_READ_KERNEL, BpfCmd.PROG_LOAD, errno.EINVAL),
]


@pytest.mark.parametrize(
    ("feature", "cmd", "err"),
    REFUSALS,
    ids=[f"{f.value}-{errno.errorcode.get(e, e)}" for f, _, e in REFUSALS],
)
def test_refusal_means_unsupported(
    backend: Backend, no_fd_leak: None, feature: Feature, cmd: BpfCmd, err: int
) -> None:
    older = RecordingBackend(backend, fail={cmd: err})
    assert features.probe(feature, backend=older) is False
    assert cmd in older.calls


@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOMEM])
def test_unexpected_errors_raise_and_are_not_cached(
    backend: Backend, no_fd_leak: None, err: int
) -> None:
    flaky = RecordingBackend(backend, fail={BpfCmd.LINK_CREATE: err})
    before = open_fd_count()
    with pytest.raises(SyscallError) as info:
        features.probe(Feature.PERF_LINK, backend=flaky)
    assert info.value.errno == err
    assert open_fd_count() == before  # the probe's program was closed on the way out
    flaky.fail.clear()
    assert features.probe(Feature.PERF_LINK, backend=flaky) is (
        kernel_version(backend) >= KernelVersion(5, 15)
    )


def test_unknown_names_are_rejected_without_syscalls(backend: Backend) -> None:
    spy = RecordingBackend(backend)
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        features.probe("nope", backend=spy)
    untyped: Any = features
    with pytest.raises(TypeError, match="name must be"):
        untyped.probe(3, backend=spy)
    assert spy.calls == []


class FakeRelease(RecordingBackend):
    """A backend whose /proc/sys/kernel/osrelease reads `release`."""

    def __init__(self, inner: Backend, release: bytes) -> None:
        super().__init__(inner)
        self.release = release
        self.paths: list[str] = []

    def read_file(self, path: str) -> bytes:
        self.paths.append(path)
        if path == "/proc/sys/kernel/osrelease":
            return self.release
        return super().read_file(path)


@pytest.mark.parametrize(
    ("release", "code"),
    [
        (b"5.4.0-91-generic\n", 0x050400),
        (b"6.18.44-fc\n", 0x061200 | 44),
        (b"4.19.300\n", 0x041300 | 255),  # the patch level saturates at 255
        (b"garbage\n", 0),
    ],
)
def test_kernel_version_code_reads_through_backend(
    backend: Backend, release: bytes, code: int
) -> None:
    fake = FakeRelease(backend, release)
    assert features.kernel_version_code(fake) == code
    assert fake.paths == ["/proc/sys/kernel/osrelease"]


def test_bpf_cookie_probe_passes_kern_version(backend: Backend, no_fd_leak: None) -> None:
    fake = FakeRelease(backend, backend.read_file("/proc/sys/kernel/osrelease"))
    assert features.probe(Feature.BPF_COOKIE, backend=fake) is (
        kernel_version(backend) >= KernelVersion(5, 15)
    )
    assert "/proc/sys/kernel/osrelease" in fake.paths
