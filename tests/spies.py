"""Delegating backends that tests use to watch and steer the calls bpfsys makes."""

from __future__ import annotations

import os

from bpfsys.backend import Backend, DelegatingBackend, WritableBuffer


class RecordingBackend(DelegatingBackend):
    """Delegates to `inner`, records every bpf() command, and fails the commands in `fail`
    with the errno given (a fault injector for probes and error paths)."""

    def __init__(self, inner: Backend, fail: dict[int, int] | None = None) -> None:
        super().__init__(inner)
        self.fail = dict(fail or {})
        self.calls: list[int] = []

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        self.calls.append(int(cmd))
        if int(cmd) in self.fail:
            err = self.fail[int(cmd)]
            raise OSError(err, os.strerror(err))
        return self.inner.bpf(cmd, attr, size)
