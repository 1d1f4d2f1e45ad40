"""Kernel objects with reference counts and per-type ids.

Theory of operation
-------------------
Every bpf object (map, program, link, BTF) and every perf event is a `KernelObject` with a
reference count. Whoever holds it keeps a reference: an fd, a pin in bpffs, a program using a
map, a link holding its program, a perf event running a program, a map-in-map slot, a live
mmap. `hold()` takes one, `put()` drops one; at zero the object is gone: its id is freed and
`release()` drops the references it held in turn. Ids are allocated per id space as the kernel's
idr_alloc_cyclic does: increasing from 1, never reused while the counter has not wrapped.
"""

from __future__ import annotations

import errno
from collections import Counter
from typing import TYPE_CHECKING, ClassVar, TypeVar

from kernelsim.errors import fail

if TYPE_CHECKING:
    from bpfsys.backend import Mapping

ID_MAX = 0x7FFFFFFF


class KernelObject:
    """A refcounted kernel object. Created with one reference, owned by the creator."""

    id_space: ClassVar[str | None] = None
    """"prog", "map", "link" or "btf" for objects with ids; None for the rest."""
    anon_name: ClassVar[str] = "[unknown]"
    """What readlink of its fd shows after "anon_inode:"."""

    def __init__(self, registry: ObjectRegistry) -> None:
        self.registry = registry
        self.refcnt = 1
        self.id = 0
        registry.register(self)

    def hold(self) -> None:
        """Take one more reference."""
        if self.refcnt <= 0:
            raise RuntimeError(f"hold() on a released {self!r}")
        self.refcnt += 1

    def put(self) -> None:
        """Drop one reference; the last one frees the object."""
        if self.refcnt <= 0:
            raise RuntimeError(f"put() on a released {self!r}")
        self.refcnt -= 1
        if self.refcnt == 0:
            self.registry.forget(self)
            self.release()

    @property
    def alive(self) -> bool:
        return self.refcnt > 0

    def release(self) -> None:
        """Drop what this object holds (override; called once, at the last put)."""

    def file_closed(self, fd: int) -> None:
        """One fd of this object is being closed (the file's release), before its reference is
        dropped (override where the kernel's release does more, e.g. perf event arrays)."""

    def prepare_poll(self) -> None:
        """poll(2) is about to look at this object's fds: objects whose readiness the kernel
        computes at poll time (perf_poll consumes a ring's wakeup) set it here."""

    # What the fd of this object supports; the defaults are the kernel's answers for an fd
    # whose file has no such operation.
    def ioctl(self, fd: int, request: int, arg: int) -> int:
        """ioctl(2) on an fd of this object."""
        fail(errno.ENOTTY, f"{type(self).__name__} has no ioctl {request:#x}")

    def mmap(self, length: int, prot: int, flags: int, offset: int) -> Mapping:
        """mmap(2) of an fd of this object."""
        fail(errno.ENODEV, f"{type(self).__name__} cannot be mapped")

    def fdinfo(self) -> list[tuple[str, str]]:
        """The object's lines of /proc/self/fdinfo/<fd>, after pos/flags/mnt_id/ino."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} refcnt={self.refcnt}>"


_Obj = TypeVar("_Obj", bound=KernelObject)


class ObjectRegistry:
    """The live objects, their ids per id space, and counts for leak inspection."""

    def __init__(self) -> None:
        self._by_space: dict[str, dict[int, KernelObject]] = {}
        self._next_id: Counter[str] = Counter()
        self._live: Counter[str] = Counter()

    def register(self, obj: KernelObject) -> None:
        self._live[type(obj).__name__] += 1
        space = obj.id_space
        if space is None:
            return
        table = self._by_space.setdefault(space, {})
        candidate = self._next_id[space] + 1
        for _ in range(ID_MAX):
            if candidate > ID_MAX:
                candidate = 1
            if candidate not in table:
                break
            candidate += 1
        else:
            fail(errno.ENOSPC, f"no free {space} id")
        self._next_id[space] = candidate
        obj.id = candidate
        table[candidate] = obj

    def forget(self, obj: KernelObject) -> None:
        self._live[type(obj).__name__] -= 1
        if obj.id_space is not None:
            self._by_space[obj.id_space].pop(obj.id, None)

    def by_id(self, space: str, obj_id: int, cls: type[_Obj]) -> _Obj:
        """The live object `obj_id` of `space`; ENOENT when there is none."""
        obj = self._by_space.get(space, {}).get(obj_id)
        if not isinstance(obj, cls):
            fail(errno.ENOENT, f"no {space} with id {obj_id}")
        return obj

    def next_id(self, space: str, start_id: int) -> int:
        """The smallest live id above `start_id` in `space`; ENOENT past the last one."""
        later = [i for i in self._by_space.get(space, {}) if i > start_id]
        if not later:
            fail(errno.ENOENT, f"no {space} id after {start_id}")
        return min(later)

    def live_counts(self) -> dict[str, int]:
        """Live objects by class name (zero counts left out)."""
        return {name: n for name, n in self._live.items() if n}
