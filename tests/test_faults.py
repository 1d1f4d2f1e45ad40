"""Fault injection: plans (pure), `FaultBackend` on both backends, spoiled ring writes on the
simulator, and the mechanics of the exhaustive mode. The exhaustive runs over bpfsys code are
in test_faults_exhaustive.py."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys import bpf
from bpfsys.abi import (
    BpfCmd,
    MapType,
    PerfAttrFlag,
    PerfEventAttr,
    PerfIoctl,
    PerfSwId,
    PerfType,
    SampleType,
)
from bpfsys.backend import Backend, LiveBackend, use_backend
from bpfsys.fd import OwnedFd
from bpfsys.perf_buffer import PerfBuffer, PerfBufferError, PerfEventArray
from bpfsys.perf_event import perf_event_open
from bpfsys.perf_records import LostRecord, Record, Sample
from bpfsys.syscall import SyscallError
from kernelsim.backend import SimBackend
from kernelsim.faults import (
    NO_FAULTS,
    Call,
    FaultBackend,
    FaultPlan,
    FaultRule,
    Match,
    Outcome,
    RingFault,
    RingRule,
    Syscall,
    exhaustive_faults,
)
from kernelsim.faults.plan import Injector, RingInjector
from kernelsim.perf.output import perf_output

PAGE = mmap.PAGESIZE


def map_create_rule(nth: int, err: int = errno.EPERM) -> FaultRule:
    return FaultRule(Match(Syscall.BPF, BpfCmd.MAP_CREATE), err, nth=nth)


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------
def test_calls_print_as_the_call_they_are() -> None:
    assert str(Call(Syscall.BPF, BpfCmd.MAP_CREATE)) == "bpf(BPF_MAP_CREATE)"
    assert str(Call("ioctl", PerfIoctl.ENABLE, 5)) == "ioctl(PERF_EVENT_IOC_ENABLE, fd=5)"
    assert str(Call("read_file", path="/sys/x")) == "read_file('/sys/x')"
    assert str(Call("bpf", 999)) == "bpf(999)"


def test_match_selects_by_syscall_command_and_path() -> None:
    create = Call(Syscall.BPF, BpfCmd.MAP_CREATE)
    assert Match().matches(create)
    assert Match("bpf").matches(create)
    assert Match("bpf", BpfCmd.MAP_CREATE).matches(create)
    assert not Match("bpf", BpfCmd.PROG_LOAD).matches(create)
    assert not Match("ioctl").matches(create)
    online = Call("read_file", path="/sys/devices/system/cpu/online")
    assert Match("read_file", path="/sys/devices/system/cpu/*").matches(online)
    assert not Match("read_file", path="/proc/*").matches(online)
    assert not Match(path="/sys/*").matches(create)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Match("poll", 3), "command only narrows bpf and ioctl"),
        (lambda: Match("kexec"), "'kexec' is not a valid Syscall"),
        (lambda: FaultRule(Match()), "exactly one of nth and probability"),
        (lambda: FaultRule(Match(), nth=1, probability=0.5), "exactly one of"),
        (lambda: FaultRule(Match(), nth=0), "nth counts from 1"),
        (lambda: FaultRule(Match(), probability=0.0), r"probability must be in \(0, 1\]"),
        (lambda: FaultRule(Match(), errno=0, nth=1), "must be > 0"),
        (lambda: RingRule("melt", nth=1), "'melt' is not a valid RingFault"),
        (lambda: RingRule(RingFault.DROP), "exactly one of nth and probability"),
    ],
)
def test_bad_rules_are_refused(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_an_nth_rule_fires_on_its_nth_match_only() -> None:
    injector = Injector((map_create_rule(2),))
    create, load = Call("bpf", BpfCmd.MAP_CREATE), Call("bpf", BpfCmd.PROG_LOAD)
    decided = [injector.decide(call) for call in (create, load, create, create, load, create)]
    assert [rule is not None for rule in decided] == [False, False, True, False, False, False]


def test_rules_count_on_their_own_and_the_first_that_fires_wins() -> None:
    first = FaultRule(Match("bpf"), errno.EPERM, nth=3)
    second = FaultRule(Match(), errno.ENOMEM, nth=3)
    injector = Injector((first, second))
    poll, create = Call("poll"), Call("bpf", BpfCmd.MAP_CREATE)
    decided = [injector.decide(call) for call in (poll, create, create, create, poll)]
    assert decided == [None, None, second, first, None]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), probability=st.floats(0.05, 1.0))
def test_a_probability_rule_is_the_same_for_the_same_seed(seed: int, probability: float) -> None:
    rule = FaultRule(Match("bpf"), probability=probability, seed=seed)
    calls = [Call("bpf", BpfCmd.MAP_CREATE), Call("poll")] * 100

    def fired() -> list[bool]:
        injector = Injector((rule,))
        return [injector.decide(call) is not None for call in calls]

    run = fired()
    assert run == fired()
    assert not any(run[1::2]), "only bpf calls count"
    hits = sum(run)
    assert probability < 1.0 or hits == 100
    assert 100 * probability - 35 <= hits <= 100 * probability + 35


def test_ring_rules_count_the_records_written() -> None:
    injector = RingInjector((RingRule(RingFault.TORN, nth=2), RingRule(RingFault.DROP, nth=2)))
    assert [injector.decide() for _ in range(4)] == [None, RingFault.TORN, None, None]


def test_plans_say_what_they_do() -> None:
    assert str(NO_FAULTS) == "no faults"
    plan = FaultPlan(
        [map_create_rule(2), FaultRule(Match("poll"), errno.EINTR, probability=0.5, seed=7)],
        [RingRule("short", nth=1)],
    )
    assert str(plan) == (
        "EPERM on bpf(BPF_MAP_CREATE), match #2; EINTR on poll(), p=0.5 seed=7; "
        "short ring record, match #1"
    )
    assert FaultPlan.fail_call(4, errno.EIO).rules == (FaultRule(Match(), errno.EIO, nth=5),)


# ---------------------------------------------------------------------------------------------
# FaultBackend, on every backend
# ---------------------------------------------------------------------------------------------
def test_the_nth_matching_command_fails_and_the_others_pass(backend: Backend) -> None:
    faults = FaultBackend(backend, FaultPlan([map_create_rule(2, errno.ENOMEM)]))
    with bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=faults) as first:
        with pytest.raises(SyscallError) as failed:
            bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=faults)
        assert failed.value.errno == errno.ENOMEM
        assert failed.value.call == "bpf(BPF_MAP_CREATE)"
        assert "injected ENOMEM on call #1" in str(failed.value)
        with bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=faults) as third:
            assert bpf.map_info(third).id == bpf.map_info(first).id + 1, "#2 never reached"
    assert [str(record.call) for record in faults.injected] == ["bpf(BPF_MAP_CREATE)"]
    assert faults.injected[0].index == 1


def test_an_ioctl_request_fails_and_perf_buffer_leaves_nothing_open(backend: Backend) -> None:
    rule = FaultRule(Match("ioctl", PerfIoctl.ENABLE), errno.EBUSY, nth=1)
    faults = FaultBackend(backend, FaultPlan([rule]))
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(SyscallError) as failed:
        PerfBuffer.open(0, 1, backend=faults)
    assert (failed.value.errno, failed.value.call) == (errno.EBUSY, "ioctl(PERF_EVENT_IOC_ENABLE)")
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert [record.call.syscall for record in faults.calls] == [
        Syscall.PERF_EVENT_OPEN,
        Syscall.MMAP,
        Syscall.IOCTL,
        Syscall.MUNMAP,
        Syscall.CLOSE,
    ]


def test_a_file_read_fails_by_path(backend: Backend) -> None:
    rule = FaultRule(Match("read_file", path="*/cpu/possible"), errno.ENOENT, nth=1)
    faults = FaultBackend(backend, FaultPlan([rule]))
    with pytest.raises(FileNotFoundError, match="injected ENOENT"):
        bpf.possible_cpus(backend=faults)
    assert bpf.possible_cpus(backend=faults) >= 1


def test_poll_can_be_interrupted(backend: Backend) -> None:
    faults = FaultBackend(backend, FaultPlan([FaultRule(Match("poll"), errno.EINTR, nth=1)]))
    with (
        bpf.map_create(MapType.PERF_EVENT_ARRAY, 4, 4, 1, backend=faults) as events,
        PerfEventArray.open(events, 1, cpus=[0], backend=faults) as array,
    ):
        with pytest.raises(InterruptedError, match="injected EINTR"):
            array.poll(timeout=0)
        assert array.poll(timeout=0) == []


def test_a_failed_close_still_releases_the_fd(backend: Backend) -> None:
    faults = FaultBackend(backend, FaultPlan([FaultRule(Match("close"), errno.EIO, nth=1)]))
    fd = bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=faults)
    number = fd.fileno()
    with pytest.raises(OSError, match="injected EIO") as failed:
        fd.close()
    assert failed.value.errno == errno.EIO
    assert fd.closed
    with pytest.raises(OSError) as gone:
        os.fstat(number)
    assert gone.value.errno == errno.EBADF


def test_every_call_is_logged_with_where_it_came_from(backend: Backend) -> None:
    faults = FaultBackend(backend)
    with use_backend(faults), bpf.map_create(MapType.HASH, 4, 4, 2) as fd:
        assert bpf.map_lookup_elem(fd, bytes(4), 4) is None
    assert [str(record.call) for record in faults.calls] == [
        "bpf(BPF_MAP_CREATE)",
        "bpf(BPF_MAP_LOOKUP_ELEM)",
        f"close(fd={fd_number(faults)})",
    ]
    lookup = faults.calls[1]
    functions = [frame.function for frame in lookup.stack]
    assert functions[:2] == ["syscall", "_bpf"]
    assert "map_lookup_elem" in functions
    assert lookup.stack[-1].file == "tests/test_faults.py"
    assert "bpfsys/syscall.py:" in lookup.where and " <- " in lookup.where
    assert faults.injected == []


def fd_number(faults: FaultBackend) -> int:
    fd = faults.calls[-1].call.fd
    assert fd is not None
    return fd


def test_the_same_seed_fails_the_same_calls(backend: Backend) -> None:
    rule = FaultRule(Match("bpf", BpfCmd.MAP_UPDATE_ELEM), errno.E2BIG, probability=0.3, seed=11)

    def failed_updates() -> list[int]:
        faults = FaultBackend(backend, FaultPlan([rule]))
        failed = []
        with bpf.map_create(MapType.HASH, 4, 4, 64, backend=faults) as fd:
            for key in range(40):
                try:
                    bpf.map_update_elem(fd, key.to_bytes(4, "little"), bytes(4))
                except SyscallError as exc:
                    assert exc.errno == errno.E2BIG
                    failed.append(key)
        return failed

    first = failed_updates()
    assert first == failed_updates()
    assert 0 < len(first) < 40


def test_ring_rules_need_the_simulator() -> None:
    with pytest.raises(ValueError, match="ring rules act in the simulated kernel"):
        FaultBackend(LiveBackend(), FaultPlan(ring=[RingRule(RingFault.DROP, nth=1)]))
    nested = FaultBackend(FaultBackend(SimBackend()), FaultPlan(ring=[RingRule("drop", nth=1)]))
    assert nested.inner is not None


# ---------------------------------------------------------------------------------------------
# Spoiled ring writes (the simulator's perf output path)
# ---------------------------------------------------------------------------------------------
def ring_faults(sim: SimBackend, *rules: RingRule) -> FaultBackend:
    return FaultBackend(sim, FaultPlan(ring=rules))


def write(sim: SimBackend, buffer: PerfBuffer, data: bytes) -> int:
    return perf_output(sim.kernel, buffer.fileno(), data)


def raws(records: list[Record]) -> list[bytes | int]:
    """Samples as their first bytes, lost records as their count."""
    out: list[bytes | int] = []
    for record in records:
        if isinstance(record, Sample):
            out.append((record.raw or b"")[:4])
        else:
            assert isinstance(record, LostRecord)
            out.append(record.lost)
    return out


def test_a_dropped_record_is_reported_lost(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory()
    faults = ring_faults(sim, RingRule(RingFault.DROP, nth=2))
    with PerfBuffer.open(0, 1, backend=faults) as buffer:
        assert [write(sim, buffer, data) for data in (b"aaaa", b"bbbb", b"cccc")] == [
            0,
            -errno.ENOSPC,
            0,
        ]
        assert raws(list(buffer.records())) == [b"aaaa", 1, b"cccc"]


def test_a_torn_record_is_refused_until_the_next_write_completes_it(
    sim_factory: Callable[..., SimBackend],
) -> None:
    sim = sim_factory()
    faults = ring_faults(sim, RingRule(RingFault.TORN, nth=2))
    with PerfBuffer.open(0, 1, backend=faults) as buffer:
        write(sim, buffer, b"aaaa")
        write(sim, buffer, b"b" * 40)
        assert raws(list(buffer.records())) == [b"aaaa"]
        with pytest.raises(PerfBufferError, match="past data_head"):
            list(buffer.records())
        write(sim, buffer, b"cccc")
        assert raws(list(buffer.records())) == [b"bbbb", b"cccc"]


@settings(max_examples=40, deadline=None)
@given(
    before=st.lists(st.integers(0, 200), max_size=4),
    spoiled=st.integers(0, 300),
    after=st.integers(0, 100),
)
def test_a_short_record_never_breaks_the_reader(
    before: list[int], spoiled: int, after: int
) -> None:
    sim = SimBackend()
    faults = ring_faults(sim, RingRule(RingFault.SHORT, nth=len(before) + 1))
    with PerfBuffer.open(0, 2, backend=faults) as buffer:
        for n in before:
            write(sim, buffer, b"\x11" * n)
        write(sim, buffer, bytes(i & 0xFF for i in range(spoiled)))
        try:
            delivered = raws(list(buffer.records()))
        except PerfBufferError:
            buffer.reader.drop_pending()
        else:
            assert delivered[: len(before)] == [b"\x11" * min(n, 4) for n in before]
        buffer.reader.drop_pending()
        write(sim, buffer, b"dddd" * (after // 4 + 1))
        assert raws(list(buffer.records())) == [b"dddd"]
    sim.kernel.close_all()


def test_ring_rules_count_over_every_ring(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(cpus=2)
    faults = ring_faults(sim, RingRule(RingFault.DROP, nth=3))
    with PerfBuffer.open(0, 1, backend=faults) as a, PerfBuffer.open(1, 1, backend=faults) as b:
        results = [write(sim, ring, b"xxxx") for ring in (a, b, a, b)]
        assert results == [0, 0, -errno.ENOSPC, 0]
        assert raws(list(a.records())) == [b"xxxx"]
        assert raws(list(b.records())) == [b"xxxx", b"xxxx"]


def test_backward_rings_are_left_alone(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory()
    faults = ring_faults(sim, RingRule(RingFault.DROP, probability=1.0))
    attr = PerfEventAttr(
        type=PerfType.SOFTWARE,
        size=ctypes.sizeof(PerfEventAttr),
        config=PerfSwId.BPF_OUTPUT,
        sample_type=SampleType.RAW,
        sample_period=1,
        flags=PerfAttrFlag.WRITE_BACKWARD,
    )
    with perf_event_open(attr, -1, 0, backend=faults) as fd:
        mapping = faults.mmap(fd.fileno(), 2 * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, 0)
        try:
            assert perf_output(sim.kernel, fd.fileno(), b"back") == 0
        finally:
            faults.munmap(mapping)


# ---------------------------------------------------------------------------------------------
# The exhaustive mode's own rules
# ---------------------------------------------------------------------------------------------
def array(backend: Backend) -> OwnedFd:
    return bpf.map_create(MapType.ARRAY, 4, 4, 1, backend=backend)


def test_outcomes_absorbed_raised_and_escaped() -> None:
    def scenario(backend: Backend) -> None:
        with array(backend) as fd:  # call 0, then close: call 3
            with contextlib.suppress(SyscallError):
                bpf.map_update_elem(fd, bytes(4), b"abcd")  # call 1: handled
            try:
                bpf.map_lookup_elem(fd, bytes(4), 4)  # call 2: turned into a ValueError
            except SyscallError as exc:
                raise ValueError("lookup failed") from exc

    report = exhaustive_faults(scenario, SimBackend)
    assert [(r.site.index, r.outcome) for r in report.results] == [
        (0, Outcome.RAISED),
        (1, Outcome.ABSORBED),
        (2, Outcome.ESCAPED),
        (3, Outcome.RAISED),
    ]
    (escape,) = report.escapes
    assert escape.error == "ValueError: lookup failed"
    assert escape.raised_at[0].function.endswith("<locals>.scenario")
    assert escape.raised_at[0].file == "tests/test_faults.py"
    assert not report.ok and report.failures == [escape]
    assert report.summary() == (
        "4 call sites x (EPERM): 1 absorbed, 2 raised, 1 escaped; 1 escaped, 0 leaked"
    )
    text = report.format()
    assert "call #2 bpf(BPF_MAP_LOOKUP_ELEM) failing with EPERM: escaped" in text
    assert "    ValueError: lookup failed" in text
    with pytest.raises(AssertionError, match="call #2 bpf"):
        report.assert_ok()


def test_leaks_on_failure_paths_are_named() -> None:
    def scenario(backend: Backend) -> None:
        fd = array(backend).take()  # an fd nobody closes when what follows fails
        bpf.map_update_elem(fd, bytes(4), b"abcd", backend=backend)
        backend.close(fd)

    report = exhaustive_faults(scenario, SimBackend, (errno.EPERM, errno.EFAULT))
    assert [(r.site.index, r.errno, r.outcome) for r in report.leaks] == [
        (1, errno.EPERM, Outcome.RAISED),
        (1, errno.EFAULT, Outcome.RAISED),
    ]
    assert report.leaks[0].leaks == (
        "simulated fds left open: fd "
        f"{report.calls[2].call.fd} <ArrayMap id=1 ARRAY key=4 value=4 max=1>",
    )
    assert report.escapes == []


def test_fds_closed_only_by_the_garbage_collector_are_leaks() -> None:
    def scenario(backend: Backend) -> None:
        fd = array(backend)
        bpf.map_update_elem(fd, bytes(4), b"abcd")
        fd.close()

    report = exhaustive_faults(scenario, SimBackend)
    (leak,) = report.leaks
    assert leak.site.index == 1
    assert leak.leaks[0].startswith("ResourceWarning: unclosed <OwnedFd fd=")


def test_a_scenario_that_does_not_repeat_itself_diverges() -> None:
    runs = iter(range(100))

    def scenario(backend: Backend) -> None:
        if next(runs) % 2:
            backend.read_file("/proc/sys/kernel/osrelease")
        with array(backend):
            pass

    report = exhaustive_faults(scenario, SimBackend)
    diverged, closed = report.results
    assert diverged.outcome is Outcome.DIVERGED
    assert diverged.diverged_call == Call("read_file", path="/proc/sys/kernel/osrelease")
    assert "the run made read_file('/proc/sys/kernel/osrelease') there instead" in str(report)
    assert closed.outcome is Outcome.RAISED
    assert report.failures == [diverged]


def test_the_counting_run_must_pass_and_not_leak() -> None:
    def fails(backend: Backend) -> None:
        raise KeyError("broken")

    with pytest.raises(KeyError, match="broken"):
        exhaustive_faults(fails, SimBackend)

    def leaks(backend: Backend) -> None:
        array(backend).take()

    with pytest.raises(AssertionError, match="the scenario leaks without faults"):
        exhaustive_faults(leaks, SimBackend)
    with pytest.raises(ValueError, match="errnos must be positive"):
        exhaustive_faults(leaks, SimBackend, ())


def test_sites_limit_the_faulted_runs() -> None:
    def scenario(backend: Backend) -> None:
        with array(backend) as fd:
            bpf.map_update_elem(fd, bytes(4), b"abcd")

    report = exhaustive_faults(scenario, SimBackend, (errno.EPERM, errno.EINVAL), sites=[1])
    assert len(report.calls) == 3
    assert [(r.site.index, r.errno) for r in report.results] == [
        (1, errno.EPERM),
        (1, errno.EINVAL),
    ]
    assert report.ok
