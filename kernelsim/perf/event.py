"""`PerfEvent`: the kernel object behind a perf event fd, its ioctl state machine and its ring.

Theory of operation
-------------------
An event is created by perf_event_open from a checked attr and the PMU's event source. It is
OFF (attr.disabled) or ACTIVE; ENABLE, DISABLE and REFRESH move it as `TRANSITIONS` says, and
an overflow that uses up the REFRESH budget (`event_limit`) turns it OFF again. With
PERF_IOC_FLAG_GROUP the three apply to the whole group of the event's leader.

Every other ioctl leaves that state alone and acts on one part of the event, each with the
kernel's checks (the table `IOCTLS` maps each request to its handler; a request this kernel
version lacks, or no request at all, is ENOTTY; the request is the ioctl's 32-bit cmd):
RESET (count), PERIOD (sample period, read through a user pointer), ID (written through one),
SET_OUTPUT (which ring the event writes to), SET_FILTER (a trace event filter), SET_BPF
(`attach_program`), PAUSE_OUTPUT (the ring's paused flag), QUERY_BPF (the trace event's program
ids) and MODIFY_ATTRIBUTES (breakpoints only).

The ring: the first mmap(2) of an event makes a `RingBuffer` of 1 + 2^n pages (offset 0,
MAP_SHARED); later mmaps share it and must have the same size. SET_OUTPUT points an event at
another event's ring instead (same CPU, same task, same clock, same direction, target mapped,
source not mapped). When the owner's last mapping goes, every event leaves the ring, as
perf_mmap_close does. Readiness follows perf_poll: an event without a ring is always readable
(POLLHUP); with one it is readable after a wakeup until a poll consumes it.

Programs: `attach_program(prog, cookie)` is perf_event_set_bpf_prog, used by SET_BPF and by
BPF_LINK_CREATE (kernelsim.link). Software and hardware events take one
BPF_PROG_TYPE_PERF_EVENT program; tracing events (tracepoint, kprobe, uprobe) add the program
to their trace event's program array, which every perf event of that trace event shares.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import mmap
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from bpfsys.abi import (
    PERF_IOC_FLAG_GROUP,
    BpfPerfEventType,
    PerfAttrFlag,
    PerfEventAttr,
    PerfEventQueryBpf,
    PerfIoctl,
    PerfType,
    ProgType,
)
from kernelsim.errors import fail
from kernelsim.objects import KernelObject
from kernelsim.perf.attr import UserAttr, copy_attr, has_flag, is_sampling
from kernelsim.perf.buffer import RingBuffer
from kernelsim.perf.filter import EventFilter, parse_filter
from kernelsim.perf.pmu import EventSource, check_breakpoint
from kernelsim.perf.trace_event import BPF_TRACE_MAX_PROGS, AttachedProgram, EventKind
from kernelsim.prog.program import BpfProgram

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.perf_link import PerfLinkTarget

ULONG_MASK: Final = (1 << 64) - 1
ALL_ONES: Final = ULONG_MASK
"""(unsigned long)-1: "no output event" for SET_OUTPUT."""
RB_MAX_PAGES: Final = 1 << 19
"""rb_alloc refuses more data pages (the page pointer array would pass 2^(PAGE_SHIFT +
MAX_PAGE_ORDER) bytes): ENOMEM."""
PERF_EVENT_MLOCK_KB: Final = 516
"""/proc/sys/kernel/perf_event_mlock_kb: what each user may map without CAP_IPC_LOCK, per CPU."""
RLIMIT_MEMLOCK_BYTES: Final = 8 << 20
"""The RLIMIT_MEMLOCK that pages beyond perf_event_mlock_kb are charged to (the usual 8 MiB)."""


class EventState(enum.Enum):
    """enum perf_event_state, as far as the simulator schedules: always on its CPU when on."""

    OFF = "off"
    ACTIVE = "active"


class Trigger(enum.Enum):
    """What moves an event between OFF and ACTIVE."""

    ENABLE = "enable"
    DISABLE = "disable"
    REFRESH = "refresh"
    LIMIT_REACHED = "limit_reached"
    """An overflow used up the REFRESH budget (event_limit reached 0)."""


TRANSITIONS: Final[dict[EventState, dict[Trigger, EventState]]] = {
    EventState.OFF: {
        Trigger.ENABLE: EventState.ACTIVE,
        Trigger.DISABLE: EventState.OFF,
        Trigger.REFRESH: EventState.ACTIVE,
        Trigger.LIMIT_REACHED: EventState.OFF,
    },
    EventState.ACTIVE: {
        Trigger.ENABLE: EventState.ACTIVE,
        Trigger.DISABLE: EventState.OFF,
        Trigger.REFRESH: EventState.ACTIVE,
        Trigger.LIMIT_REACHED: EventState.OFF,
    },
}


class PerfState:
    """Per-kernel perf state: event ids (the global perf_event_id counter) and locked pages."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.last_id = 0
        self.events: list[PerfEvent] = []
        """Live events (for mlock accounting)."""

    def new_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def locked_pages(self) -> int:
        """Pages of every live ring the caller mapped (user->locked_vm)."""
        return sum(e.rb.nr_pages + 1 for e in self.events if e.rb and e.rb.owner is e)


class PerfEvent(KernelObject):
    """A perf event."""

    anon_name = "[perf_event]"

    def __init__(
        self,
        kernel: Kernel,
        attr: PerfEventAttr,
        source: EventSource,
        cpu: int,
        task_pid: int | None,
        group_leader: PerfEvent | None,
    ) -> None:
        super().__init__(kernel.objects)
        self.kernel = kernel
        self.attr = attr
        self.source = source
        self.cpu = cpu
        """The CPU the event counts on; -1 for a task event on any CPU."""
        self.task_pid = task_pid
        """The task a task event follows; None for a CPU-wide event."""
        state = kernel.subsystem(PerfState)
        self.id = state.new_id()
        self.state = EventState.OFF if has_flag(attr, PerfAttrFlag.DISABLED) else EventState.ACTIVE
        self.count = 0
        self.lost_samples = 0
        """Samples the ring dropped (event->lost_samples, PERF_FORMAT_LOST)."""
        self.event_limit = 0
        self.sample_period = attr.sample_period
        self.filter: EventFilter | None = None
        self.program: BpfProgram | None = None
        self.bpf_cookie = 0
        self.rb: RingBuffer | None = None
        self.time_enabled = 0
        self._enabled_at = kernel.now_ns
        self.group_leader: PerfEvent = group_leader or self
        self.siblings: list[PerfEvent] = []
        if group_leader is not None:
            group_leader.siblings.append(self)
        if source.trace is not None:
            source.trace.perf_refcount += 1
        state.events.append(self)

    # -- what the event is --------------------------------------------------------------------
    @property
    def is_tracing(self) -> bool:
        """perf_event_is_tracing: a tracepoint, kprobe or uprobe event."""
        return self.source.trace is not None

    @property
    def write_backward(self) -> bool:
        return has_flag(self.attr, PerfAttrFlag.WRITE_BACKWARD)

    @property
    def clock(self) -> int | None:
        """The event's clock: the clockid with use_clockid, else None (perf_clock)."""
        return self.attr.clockid if has_flag(self.attr, PerfAttrFlag.USE_CLOCKID) else None

    @property
    def active(self) -> bool:
        return self.state is EventState.ACTIVE

    @property
    def oncpu(self) -> int:
        """The CPU the event runs on while active (event->oncpu), -1 when it is not."""
        if not self.active:
            return -1
        return self.cpu if self.cpu >= 0 else 0

    def enabled_time(self) -> int:
        """Nanoseconds the event has been ACTIVE."""
        extra = self.kernel.now_ns - self._enabled_at if self.active else 0
        return self.time_enabled + extra

    # -- the state machine --------------------------------------------------------------------
    def fire(self, trigger: Trigger) -> None:
        """Apply `trigger` (TRANSITIONS), keeping the enabled time."""
        new = TRANSITIONS[self.state][trigger]
        if new is self.state:
            return
        now = self.kernel.now_ns
        if self.active:
            self.time_enabled += now - self._enabled_at
        else:
            self._enabled_at = now
        self.state = new
        self._update_user_page()

    def _each(self, flags: int, action: Callable[[PerfEvent], None]) -> None:
        """perf_event_for_each (group) or the event alone."""
        if flags & PERF_IOC_FLAG_GROUP:
            leader = self.group_leader
            for event in (leader, *leader.siblings):
                action(event)
        else:
            action(self)

    # -- ioctl ----------------------------------------------------------------------------------
    def ioctl(self, fd: int, request: int, arg: int) -> int:
        cmd = request & 0xFFFFFFFF
        try:
            known = PerfIoctl(cmd)
        except ValueError:
            fail(errno.ENOTTY, f"no perf ioctl {cmd:#x}")
        if not self.kernel.profile.has(known):
            fail(errno.ENOTTY, f"{known.c_name} is newer than this kernel")
        self.sync_ring()
        handler = IOCTLS[known]
        return handler(self, arg & ULONG_MASK)

    def _enable(self, arg: int) -> int:
        self._each(arg & 0xFFFFFFFF, lambda e: e.fire(Trigger.ENABLE))
        return 0

    def _disable(self, arg: int) -> int:
        self._each(arg & 0xFFFFFFFF, lambda e: e.fire(Trigger.DISABLE))
        return 0

    def _reset(self, arg: int) -> int:
        def reset(event: PerfEvent) -> None:
            event.count = 0
            event._update_user_page()

        self._each(arg & 0xFFFFFFFF, reset)
        return 0

    def _refresh(self, arg: int) -> int:
        if has_flag(self.attr, PerfAttrFlag.INHERIT) or not is_sampling(self.attr):
            fail(errno.EINVAL, "REFRESH needs a sampling event that is not inherited")
        refresh = ctypes.c_int32(arg & 0xFFFFFFFF).value
        self.event_limit += refresh
        self.fire(Trigger.REFRESH)
        return 0

    def _period(self, arg: int) -> int:
        (value,) = struct.unpack("<Q", self.kernel.memory.read(arg, 8))
        if not is_sampling(self.attr):
            fail(errno.EINVAL, "PERIOD on an event that does not sample")
        if not value or value >> 63:
            fail(errno.EINVAL, f"sample period {value:#x}")
        self.sample_period = value
        return 0

    def _id(self, arg: int) -> int:
        self.kernel.memory.write(arg, struct.pack("<Q", self.id))
        return 0

    def _set_output(self, arg: int) -> int:
        target: PerfEvent | None = None
        if arg != ALL_ONES:
            fd = ctypes.c_int32(arg & 0xFFFFFFFF).value
            target = self.kernel.fds.get(fd, PerfEvent, wrong_type=errno.EBADF)
        self.set_output(target)
        return 0

    def _set_filter(self, arg: int) -> int:
        page = self.kernel.config.page_size
        raw, terminated = self.kernel.memory.read_cstring(arg, page)
        if not terminated:
            fail(errno.EINVAL, f"filter longer than {page - 1} bytes")
        if not self.is_tracing or self.source.trace is None:
            fail(errno.EINVAL, "SET_FILTER on an event that is not a trace event")
        if self.filter is not None:
            fail(errno.EEXIST, "the event already has a filter")
        self.filter = parse_filter(raw.decode("latin-1"), self.source.trace.fields)
        return 0

    def _set_bpf(self, arg: int) -> int:
        fd = ctypes.c_int32(arg & 0xFFFFFFFF).value
        program = self.kernel.fds.get(fd, BpfProgram)
        self.attach_program(program, 0)
        return 0

    def _pause_output(self, arg: int) -> int:
        rb = self.rb
        if rb is None or not rb.nr_pages:
            fail(errno.EINVAL, "PAUSE_OUTPUT on an event without ring pages")
        rb.ring.paused = bool(arg)
        return 0

    def _query_bpf(self, arg: int) -> int:
        kernel = self.kernel
        if not kernel.perfmon_capable():
            fail(errno.EPERM, "QUERY_BPF needs CAP_PERFMON")
        if self.attr.type != PerfType.TRACEPOINT or self.source.trace is None:
            fail(errno.EINVAL, "QUERY_BPF on an event that is not PERF_TYPE_TRACEPOINT")
        head = ctypes.sizeof(PerfEventQueryBpf)
        query = PerfEventQueryBpf.from_buffer_copy(kernel.memory.read(arg, head))
        ids_len = query.ids_len
        if ids_len > BPF_TRACE_MAX_PROGS:
            fail(errno.E2BIG, f"ids_len {ids_len} > {BPF_TRACE_MAX_PROGS}")
        ids = [entry.program.id for entry in self.source.trace.programs]
        kernel.memory.write(arg + PerfEventQueryBpf.prog_cnt.offset, struct.pack("<I", len(ids)))
        shown = (ids + [0] * ids_len)[:ids_len]
        kernel.memory.write(arg + head, struct.pack(f"<{ids_len}I", *shown))
        if ids_len and len(ids) > ids_len:
            fail(errno.ENOSPC, f"{len(ids)} programs, room for {ids_len}")
        return 0

    def _modify_attributes(self, arg: int) -> int:
        new = copy_attr(self.kernel, UserAttr(self.kernel.memory, arg))
        if new.type != self.attr.type:
            fail(errno.EINVAL, "MODIFY_ATTRIBUTES cannot change the event type")
        if self.attr.type != PerfType.BREAKPOINT:
            fail(errno.EOPNOTSUPP, "only breakpoints can be modified")
        check_breakpoint(self.kernel, new)
        self.attr.bp_type, self.attr.config1, self.attr.config2 = (
            new.bp_type,
            new.config1,
            new.config2,
        )
        return 0

    # -- programs -------------------------------------------------------------------------------
    @property
    def programs(self) -> list[BpfProgram]:
        """The program attached through this event (SET_BPF or a perf link): at most one."""
        return [] if self.program is None else [self.program]

    def programs_to_run(self) -> list[AttachedProgram]:
        """What runs when the event fires: the trace event's program array for tracing events
        (programs attached through any perf event of that trace event), else this event's."""
        if self.source.trace is not None:
            return list(self.source.trace.programs)
        if self.program is None:
            return []
        return [AttachedProgram(self.program, self.bpf_cookie)]

    def attach_program(self, program: BpfProgram, cookie: int) -> None:
        """perf_event_set_bpf_prog: attach `program` (holding a reference) or raise the errno."""
        trace = self.source.trace
        if self.attr.type in (PerfType.HARDWARE, PerfType.SOFTWARE):
            if self.program is not None:
                fail(errno.EEXIST, "the event already has a program")
            if program.prog_type != ProgType.PERF_EVENT:
                fail(errno.EINVAL, f"{program.prog_type.name} program on a software event")
        else:
            if trace is None:
                fail(errno.EINVAL, "programs attach to software or trace events only")
            wanted = ProgType.KPROBE if trace.kind.is_probe else ProgType.TRACEPOINT
            if program.prog_type != wanted:
                fail(errno.EINVAL, f"{program.prog_type.name} program on a {trace.kind.value}")
            if self.program is not None:
                fail(errno.EEXIST, "the event already has a program")
            trace.attach(program, cookie)
        program.hold()
        self.program = program
        self.bpf_cookie = cookie

    def detach_program(self, program: BpfProgram) -> None:
        """perf_event_detach_bpf_prog: drop `program` if it is the attached one."""
        if self.program is not program:
            return
        if self.source.trace is not None:
            self.source.trace.detach(program)
        self.program = None
        self.bpf_cookie = 0
        program.put()

    def link_target(self) -> PerfLinkTarget:
        """What the event is, for a perf link's info (bpf_get_perf_event_info)."""
        from kernelsim.perf_link import PerfLinkTarget  # perf_link imports the kernel's core

        trace = self.source.trace
        if trace is None:
            return PerfLinkTarget(
                BpfPerfEventType.EVENT, config=self.attr.config, type=self.attr.type
            )
        probe = trace.probe
        if probe is None:
            return PerfLinkTarget(BpfPerfEventType.TRACEPOINT, name=trace.name.encode())
        if trace.kind is EventKind.KPROBE:
            kind = BpfPerfEventType.KRETPROBE if probe.is_return else BpfPerfEventType.KPROBE
        else:
            kind = BpfPerfEventType.URETPROBE if probe.is_return else BpfPerfEventType.UPROBE
        return PerfLinkTarget(
            kind, probe.name, probe.offset, probe.addr, ref_ctr_offset=probe.ref_ctr_offset
        )

    # -- the ring -------------------------------------------------------------------------------
    def set_output(self, target: PerfEvent | None) -> None:
        """perf_event_set_output: write into `target`'s ring, or back to none (None)."""
        if target is not None:
            if target is self:
                fail(errno.EINVAL, "an event cannot output into itself")
            if target.cpu != self.cpu:
                fail(errno.EINVAL, "output redirection across CPUs")
            if target.cpu == -1 and target.task_pid != self.task_pid:
                fail(errno.EINVAL, "output redirection to another task's event")
            if target.clock != self.clock:
                fail(errno.EINVAL, "output redirection between clocks")
            if target.write_backward != self.write_backward:
                fail(errno.EINVAL, "output redirection between ring directions")
        target_rb = target.ring_buffer() if target is not None else None
        own = self.ring_buffer()
        if own is not None and own.owner is self:
            fail(errno.EINVAL, "the event's own ring is mapped")
        if target is not None and target_rb is None:
            fail(errno.EINVAL, "the output event has no mapped ring")
        self._attach_ring(target_rb)

    def ring_buffer(self) -> RingBuffer | None:
        """The ring the event writes into (after noticing unmapped rings)."""
        self.sync_ring()
        return self.rb

    def sync_ring(self) -> None:
        """perf_mmap_close for mappings the caller closed: the ring's events all leave it."""
        rb = self.rb
        if rb is not None and not rb.mapped():
            for event in list(rb.events):
                event._attach_ring(None)

    def _attach_ring(self, rb: RingBuffer | None) -> None:
        """ring_buffer_attach: leave the old ring (freed with its last event), join `rb`."""
        old = self.rb
        if old is rb:
            return
        if old is not None:
            old.events.remove(self)
            if not old.events:
                old.release()
        self.rb = rb
        if rb is not None:
            rb.events.append(self)
        self.refresh_readiness()

    def mmap(self, length: int, prot: int, flags: int, offset: int) -> mmap.mmap:
        """perf_mmap (module docstring): the caller's mapping of the event's ring."""
        page = self.kernel.config.page_size
        if length <= 0 or offset < 0 or offset % page:
            fail(errno.EINVAL, f"bad mmap length {length} or offset {offset}")
        if prot & mmap.PROT_EXEC:
            fail(errno.EPERM, "perf rings live on a noexec mount")
        if self.cpu == -1 and has_flag(self.attr, PerfAttrFlag.INHERIT):
            fail(errno.EINVAL, "inherited task events cannot be mapped")
        if flags & (mmap.MAP_SHARED | mmap.MAP_PRIVATE) != mmap.MAP_SHARED:
            fail(errno.EINVAL, "perf rings are MAP_SHARED")
        pages = -(-length // page)
        nr_pages = pages - 1
        if offset:
            fail(errno.EINVAL, "no AUX area: the ring starts at offset 0")
        if nr_pages and nr_pages & (nr_pages - 1):
            fail(errno.EINVAL, f"{nr_pages} data pages is not a power of two")
        rb = self.ring_buffer()
        if rb is not None:
            if rb.nr_pages != nr_pages:
                fail(errno.EINVAL, f"the ring has {rb.nr_pages} data pages, not {nr_pages}")
            if rb.owner is not self:
                fail(errno.EBUSY, "the event writes into another event's ring")
            return rb.map(length, prot)
        if nr_pages > RB_MAX_PAGES:
            fail(errno.ENOMEM, f"{nr_pages} data pages")
        self._check_mlock(pages)
        watermark = self.attr.wakeup_events if has_flag(self.attr, PerfAttrFlag.WATERMARK) else 0
        rb = RingBuffer(
            self, page, nr_pages, writable=bool(prot & mmap.PROT_WRITE), watermark=watermark
        )
        mapping = rb.map(length, prot)
        self._attach_ring(rb)
        self._update_user_page()
        return mapping

    def _check_mlock(self, pages: int) -> None:
        """perf_mmap's locked-memory limit for callers without CAP_IPC_LOCK."""
        kernel = self.kernel
        if kernel.capable_sys_admin() or kernel.sysctl["perf_event_paranoid"] < 0:
            return
        page_kb = kernel.config.page_size // 1024
        user_limit = PERF_EVENT_MLOCK_KB // page_kb * kernel.config.online
        locked = kernel.subsystem(PerfState).locked_pages() + pages
        extra = max(0, locked - user_limit)
        if extra > RLIMIT_MEMLOCK_BYTES // kernel.config.page_size:
            fail(errno.EPERM, f"{locked} perf pages locked, more than the limit allows")

    def _update_user_page(self) -> None:
        rb = self.rb
        if rb is not None and not rb.released and rb.owner is self:
            enabled = self.enabled_time()
            rb.ring.update_user_page(self.count, enabled, enabled)

    # -- poll -----------------------------------------------------------------------------------
    def readable(self) -> bool:
        """What perf_poll reports without consuming: POLLHUP without a ring, else a wakeup."""
        rb = self.rb
        return rb is None or bool(rb.ring.poll)

    def refresh_readiness(self) -> None:
        """Mirror `readable()` on every fd of the event."""
        fds = self.kernel.fds
        if self.readable():
            fds.set_ready(self)
        else:
            fds.clear_ready(self)

    def wake_up(self) -> None:
        """ring_buffer_wakeup: every event writing into this event's ring becomes readable."""
        rb = self.rb
        for event in rb.events if rb is not None else [self]:
            self.kernel.fds.set_ready(event)

    def prepare_poll(self) -> None:
        """perf_poll: the readiness this poll sees, consuming the ring's wakeup."""
        self.sync_ring()
        rb = self.rb
        if rb is None:
            self.kernel.fds.set_ready(self)
            return
        if rb.ring.take_poll():
            self.kernel.fds.set_ready(self)
            for event in rb.events:
                if event is not self:
                    self.kernel.fds.clear_ready(event)
        else:
            self.kernel.fds.clear_ready(self)

    # -- lifetime -------------------------------------------------------------------------------
    def release(self) -> None:
        if self.program is not None:
            self.detach_program(self.program)
        if self.source.trace is not None:
            self.source.trace.perf_refcount -= 1
        self._attach_ring(None)
        leader = self.group_leader
        if leader is self:
            for sibling in self.siblings:
                sibling.group_leader = sibling
            self.siblings = []
        else:
            leader.siblings.remove(self)
        self.kernel.subsystem(PerfState).events.remove(self)

    def __repr__(self) -> str:
        return (
            f"<PerfEvent id={self.id} type={self.attr.type} config={self.attr.config} "
            f"cpu={self.cpu} {self.state.value}>"
        )


IOCTLS: Final[dict[PerfIoctl, Callable[[PerfEvent, int], int]]] = {
    PerfIoctl.ENABLE: PerfEvent._enable,
    PerfIoctl.DISABLE: PerfEvent._disable,
    PerfIoctl.RESET: PerfEvent._reset,
    PerfIoctl.REFRESH: PerfEvent._refresh,
    PerfIoctl.PERIOD: PerfEvent._period,
    PerfIoctl.ID: PerfEvent._id,
    PerfIoctl.SET_OUTPUT: PerfEvent._set_output,
    PerfIoctl.SET_FILTER: PerfEvent._set_filter,
    PerfIoctl.SET_BPF: PerfEvent._set_bpf,
    PerfIoctl.PAUSE_OUTPUT: PerfEvent._pause_output,
    PerfIoctl.QUERY_BPF: PerfEvent._query_bpf,
    PerfIoctl.MODIFY_ATTRIBUTES: PerfEvent._modify_attributes,
}
"""The perf ioctls and their handlers (every PerfIoctl member has one)."""
