"""`OwnedFd`: an fd that belongs to a backend and is closed through it exactly once."""

from __future__ import annotations

import contextlib
import warnings
from types import TracebackType
from typing import Self

from bpfsys.backend import Backend, current_backend


class Closeable:
    """A context manager base: `with obj:` gives `obj` and calls `obj.close()` on the way out."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OwnedFd(Closeable):
    """An open fd of a backend. Closing is idempotent; a leaked one warns (ResourceWarning).

    `close()` releases the fd through the backend that made it; `take()` gives the raw number up
    (the caller then owns it). Use as a context manager to close on exit.
    """

    __slots__ = ("_backend", "_fd")

    def __init__(self, fd: int, backend: Backend | None = None) -> None:
        if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
            raise ValueError(f"fd must be a non-negative int, got {fd!r}")
        self._fd: int | None = fd
        self._backend = current_backend() if backend is None else backend

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def closed(self) -> bool:
        return self._fd is None

    def fileno(self) -> int:
        """The fd number; ValueError once closed."""
        if self._fd is None:
            raise ValueError("I/O operation on a closed OwnedFd")
        return self._fd

    def __int__(self) -> int:
        return self.fileno()

    def take(self) -> int:
        """Give up ownership: return the fd number without closing it."""
        fd = self.fileno()
        self._fd = None
        return fd

    def close(self) -> None:
        """Close the fd through its backend, once; later calls do nothing."""
        fd, self._fd = self._fd, None
        if fd is not None:
            self._backend.close(fd)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is None:
            return
        text = f"unclosed {self!r}"
        with contextlib.suppress(OSError):
            self.close()
        warnings.warn(text, ResourceWarning, stacklevel=2)

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"fd={self._fd}"
        return f"<OwnedFd {state} backend={type(self._backend).__name__}>"
