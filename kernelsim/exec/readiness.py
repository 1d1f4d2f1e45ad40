"""Readiness of simulated objects for a traced program's epoll.

Theory of operation
-------------------
A traced program's simulated fd is a memfd, which epoll refuses (EPERM) and poll reports always
readable; the kernel objects behind it become readable when the simulator says so
(`set_ready`, e.g. a perf ring's wakeup). So `epoll_ctl` on a simulated fd is answered here:
the supervisor takes the program's epoll (pidfd_getfd) and registers on it, in the target fd's
place, an eventfd of its own with the program's events and epoll_data. The registration is
keyed as the kernel keys it: (the epoll, the target fd number).

Rules:

* the bridge is edge-triggered (EPOLLET is added): the simulator writes the eventfd once per
  wakeup and never drains it while the object is ready, so each wakeup is one event, as perf's
  poll (which consumes the ring's wakeup) gives one;
* `set_ready(obj)` writes every eventfd registered for `obj`; `clear_ready(obj)` drains them; a
  registration made while `obj` is ready starts readable (epoll reports it once at once);
* ADD of a key already there: EEXIST; MOD or DEL of a missing key: ENOENT (epoll_ctl's own
  answers); DEL closes the eventfd, and `forget(obj)` closes all of an object's when its last
  file is gone (the kernel drops a file's registrations when the file is released).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct

import attrs

from kernelsim.errors import fail
from kernelsim.exec.seccomp import EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLET, Arch
from kernelsim.objects import KernelObject

RegistrationKey = tuple[tuple[int, int], int]
"""((st_dev, st_ino) of the epoll, the target fd number)."""


@attrs.define
class _Registration:
    obj: KernelObject
    eventfd: int


class Readiness:
    """Which simulated objects are ready, and the eventfds that show it to traced epolls."""

    def __init__(self, arch: Arch) -> None:
        self._event = arch.epoll_event
        self._ready: set[KernelObject] = set()
        self._registrations: dict[RegistrationKey, _Registration] = {}
        libc = ctypes.CDLL(None, use_errno=True)
        self._epoll_ctl = libc.epoll_ctl
        self._buf = ctypes.create_string_buffer(self._event.size)

    @property
    def event_layout(self) -> struct.Struct:
        """struct epoll_event on this machine."""
        return self._event

    def _eventfds(self, obj: KernelObject) -> list[int]:
        return [r.eventfd for r in self._registrations.values() if r.obj is obj]

    def set_ready(self, obj: KernelObject) -> None:
        self._ready.add(obj)
        for fd in self._eventfds(obj):
            os.eventfd_write(fd, 1)

    def clear_ready(self, obj: KernelObject) -> None:
        self._ready.discard(obj)
        for fd in self._eventfds(obj):
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)

    def _ctl(self, epoll: int, op: int, fd: int, events: int, data: int) -> None:
        self._event.pack_into(self._buf, 0, events, data)
        if self._epoll_ctl(epoll, op, fd, self._buf) != 0:
            code = ctypes.get_errno()
            fail(code, f"epoll_ctl: {os.strerror(code)}")

    def control(
        self,
        epoll: int,
        key: RegistrationKey,
        op: int,
        obj: KernelObject,
        events: int,
        data: int,
    ) -> None:
        """epoll_ctl(epoll, op, <the target of `key`>, {events, data}) for simulated `obj`;
        `epoll` is this process's copy of the program's epoll fd."""
        found = self._registrations.get(key)
        if op == EPOLL_CTL_ADD:
            if found is not None:
                fail(errno.EEXIST, "the fd is already registered")
            eventfd = os.eventfd(1 if obj in self._ready else 0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            try:
                self._ctl(epoll, op, eventfd, events | EPOLLET, data)
            except OSError:
                os.close(eventfd)
                raise
            self._registrations[key] = _Registration(obj, eventfd)
            return
        if found is None:
            fail(errno.ENOENT, "the fd is not registered")
        if op == EPOLL_CTL_MOD:
            self._ctl(epoll, op, found.eventfd, events | EPOLLET, data)
        elif op == EPOLL_CTL_DEL:
            self._ctl(epoll, op, found.eventfd, 0, 0)
            del self._registrations[key]
            os.close(found.eventfd)
        else:
            fail(errno.EINVAL, f"epoll_ctl op {op}")

    def forget(self, obj: KernelObject) -> None:
        """`obj` has no file left in any traced process: drop its registrations."""
        self._ready.discard(obj)
        for key, registration in list(self._registrations.items()):
            if registration.obj is obj:
                del self._registrations[key]
                os.close(registration.eventfd)

    def close(self) -> None:
        for registration in self._registrations.values():
            os.close(registration.eventfd)
        self._registrations.clear()
        self._ready.clear()
