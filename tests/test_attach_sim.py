"""Program attachment on the simulated kernel under several version profiles (`sim_factory`):
the link path on kernels with perf_event links (5.15+), SET_BPF + ENABLE before, cookies only
with links, uprobes through the PMU or tracefs, and nothing left behind after detach.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from test_attach import TRACEPOINT, event_lines, libc_with_getpid, trivial

from bpfsys import bpf
from bpfsys.abi import LinkType, ProgType
from bpfsys.attach import (
    Attachment,
    AttachNotSupported,
    PerfAttachMethod,
    ProbeSource,
    attach_kprobe,
    attach_tracepoint,
    attach_uprobe,
)
from bpfsys.fd import OwnedFd
from bpfsys.perf_event import PMU_ROOT, QueryBpf, SetBpf, perf_event_ioctl
from bpfsys.syscall import SyscallError
from kernelsim.backend import SimBackend

LINK, IOCTL = PerfAttachMethod.LINK, PerfAttachMethod.IOCTL
PROFILES = [("6.18", LINK), ("6.1", LINK), ("5.15", LINK), ("5.10", IOCTL), ("5.4", IOCTL)]
"""Named profiles and the method AUTO must choose on them (perf_event links came in 5.15)."""
SimFactory = Callable[..., SimBackend]


def assert_attached(attachment: Attachment, prog: OwnedFd, *, tracepoint_event: bool) -> None:
    """The event holds `prog`, as the live kernel lets one see it: a second SET_BPF is EEXIST;
    a link reports the program; QUERY_BPF lists it on PERF_TYPE_TRACEPOINT events (tracepoints
    and tracefs probes) and is EINVAL on PMU probe events (measured on 6.18)."""
    prog_id = bpf.prog_info(prog).id
    with pytest.raises(SyscallError) as second:
        perf_event_ioctl(attachment.perf_fd, SetBpf(prog))
    assert second.value.errno == errno.EEXIST
    if attachment.method is LINK:
        assert attachment.link_fd is not None
        info = bpf.link_info(attachment.link_fd)
        assert (info.type, info.prog_id) == (LinkType.PERF_EVENT, prog_id)
    else:
        assert attachment.link_fd is None
    if tracepoint_event:
        assert perf_event_ioctl(attachment.perf_fd, QueryBpf(8)) == [prog_id]
    else:
        with pytest.raises(SyscallError) as query:
            perf_event_ioctl(attachment.perf_fd, QueryBpf(8))
        assert query.value.errno == errno.EINVAL


def assert_released(sim: SimBackend, attachment: Attachment, baseline: dict[str, int]) -> None:
    assert attachment.detached and attachment.perf_fd.closed
    assert sim.kernel.live_objects() == baseline


@pytest.mark.parametrize(("version", "method"), PROFILES, ids=[v for v, _ in PROFILES])
def test_tracepoint_method_follows_the_profile(
    sim_factory: SimFactory, no_fd_leak: None, version: str, method: PerfAttachMethod
) -> None:
    sim = sim_factory(version=version)
    baseline = sim.kernel.live_objects()
    with trivial(sim, ProgType.TRACEPOINT) as prog:
        attachment = attach_tracepoint(prog, *TRACEPOINT)
        assert attachment.method is method
        assert_attached(attachment, prog, tracepoint_event=True)
        attachment.detach()
    assert_released(sim, attachment, baseline)


@pytest.mark.parametrize(("version", "method"), PROFILES, ids=[v for v, _ in PROFILES])
def test_cookie_only_with_a_perf_link(
    sim_factory: SimFactory, no_fd_leak: None, version: str, method: PerfAttachMethod
) -> None:
    sim = sim_factory(version=version)
    baseline = sim.kernel.live_objects()
    with trivial(sim, ProgType.TRACEPOINT) as prog:
        if method is LINK:
            with attach_tracepoint(prog, *TRACEPOINT, cookie=7) as attachment:
                assert attachment.method is LINK
        else:
            with pytest.raises(AttachNotSupported):
                attach_tracepoint(prog, *TRACEPOINT, cookie=7)
    assert sim.kernel.live_objects() == baseline


@pytest.mark.parametrize("version", ["6.1", "5.4"])
@pytest.mark.parametrize("source", [ProbeSource.PMU, ProbeSource.TRACEFS])
def test_uprobe_attach_and_detach(
    sim_factory: SimFactory, no_fd_leak: None, version: str, source: ProbeSource
) -> None:
    sim = sim_factory(version=version)
    baseline = sim.kernel.live_objects()
    with trivial(sim, ProgType.KPROBE) as prog:
        attachment = attach_uprobe(prog, libc_with_getpid(), "getpid", source=source)
        event = attachment.probe_event
        assert (event is not None) is (source is ProbeSource.TRACEFS)
        if event is not None:
            assert event_lines(sim, event) != []
        assert_attached(attachment, prog, tracepoint_event=event is not None)
        attachment.detach()
        if event is not None:
            assert event_lines(sim, event) == []
    assert_released(sim, attachment, baseline)


def test_kprobe_follows_what_the_simulated_kernel_offers(
    sim_factory: SimFactory, no_fd_leak: None
) -> None:
    """With the simulated kprobe PMU the probe attaches; without it, AttachNotSupported."""
    sim = sim_factory()
    with trivial(sim, ProgType.KPROBE) as prog:
        try:
            sim.read_file(f"{PMU_ROOT}/kprobe/type")
        except FileNotFoundError:
            with pytest.raises(AttachNotSupported):
                attach_kprobe(prog, "do_sys_openat2")
            return
        with attach_kprobe(prog, "do_sys_openat2") as attachment:
            assert_attached(attachment, prog, tracepoint_event=attachment.probe_event is not None)
