"""`ExecSession`: one native program run against a simulated kernel.

Theory of operation
-------------------
`ExecSession(argv, config)` launches the program under the filter (`kernelsim.exec.launch`),
boots a `Kernel` whose current task is the program (config.pid, config.comm) and whose fd table
is the program's (`RemoteFdTable`), and serves: one loop waits on the listener and on the
release watcher, answers each notification (`SyscallServer`) and applies the answer through
the listener, and applies file releases as they come. It ends when no task is left under the
filter (the listener hangs up); then every file reference the program held is dropped and the
program's exit status is returned (128 + the signal for a killed program, as a shell shows it).

With `record` (a path), the calls served are also written to a scenario file, in the format of
the in-process recorder (`kernelsim.exec.record`); the session tells the recording which fd
numbers the program got and which files it let go.

`lock` is held while a call is served; code that touches the kernel from another thread while
the program runs (a test firing a tracepoint) holds it too: `with session.lock: ...`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs

from bpfsys.backend import Backend
from kernelsim.backend import SimBackend
from kernelsim.exec.closewatch import CloseWatcher
from kernelsim.exec.launch import Launched, launch
from kernelsim.exec.listener import Gone, Listener, Notification
from kernelsim.exec.readiness import Readiness
from kernelsim.exec.record import ExecRecording
from kernelsim.exec.remote_fds import RemoteFdTable
from kernelsim.exec.seccomp import native_arch
from kernelsim.exec.server import Answer, SyscallServer
from kernelsim.exec.tasks import Tasks
from kernelsim.kernel import Kernel, KernelConfig

COMM_LEN: Final = 15


def _apply(listener: Listener, notif_id: int, answer: Answer) -> int | None:
    """Send `answer` (Gone when the task no longer waits); the fd number a new file got."""
    if answer.error:
        listener.reply_error(notif_id, answer.error)
    elif answer.new_file is not None:
        new = answer.new_file
        return listener.reply_fd(notif_id, new.srcfd, new.cloexec)
    elif answer.plain_file is not None:
        plain = answer.plain_file
        listener.reply_fd(notif_id, plain.srcfd, plain.cloexec)
    elif answer.proceed:
        listener.reply_continue(notif_id)
    else:
        listener.reply_value(notif_id, answer.value)
    return None


def exit_code(status: int) -> int:
    """A wait status as a shell shows it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


@attrs.define
class SessionStats:
    """What the loop did (for --verbose and the benchmark)."""

    calls: int = 0
    continued: int = 0
    undelivered: int = 0


class ExecSession:
    """A program running against a simulated kernel (module docstring)."""

    def __init__(
        self,
        argv: Sequence[str],
        config: KernelConfig | None = None,
        *,
        env: Mapping[str, str] | None = None,
        stdio: Sequence[int | None] = (None, None, None),
        user: tuple[int, int] | None = None,
        wrap: Callable[[SimBackend], Backend] | None = None,
        record: str | os.PathLike[str] | None = None,
    ) -> None:
        """Launch `argv` with `env`, `stdio` and `user` (`kernelsim.exec.launch.launch`); it
        waits for `serve`. `wrap` puts a delegating backend (fault injection) around the
        simulator; `record` is a scenario file to record the calls served to."""
        if not argv:
            raise ValueError("no program to run")
        arch = native_arch()
        self._launched: Launched = launch(argv, env, stdio, user)
        pid = self._launched.pid
        base = KernelConfig() if config is None else config
        comm = os.path.basename(argv[0])[:COMM_LEN]
        try:
            self.kernel = Kernel(attrs.evolve(base, pid=pid, comm=comm))
            self.watcher = CloseWatcher()
        except BaseException:
            self._abort()
            raise
        self.pid = pid
        self.lock = threading.RLock()
        self.stats = SessionStats()
        self.fds = RemoteFdTable(self.watcher, Readiness(arch))
        self.tasks = Tasks(arch)
        sim = SimBackend(self.kernel)
        inner: Backend = sim if wrap is None else wrap(sim)
        self.server = SyscallServer(self.kernel, inner, self.fds, self.tasks, arch)
        self.recording: ExecRecording | None = None
        if record is not None:
            try:
                self.recording = ExecRecording(
                    record, inner, self.server.memory, self.fds, shlex.join(argv)
                )
            except BaseException:
                self._abort()
                raise
            self.server.backend = self.recording.backend
        self.backend: Backend = self.server.backend
        self.listener = self._launched.listener
        self.exit_status: int | None = None

    @property
    def wait_killable(self) -> bool:
        """Whether a signal cannot interrupt a served call (WAIT_KILLABLE_RECV, 5.19)."""
        return self._launched.wait_killable

    def _abort(self) -> None:
        self._launched.listener.close()
        self._launched.go.close()
        os.waitpid(self._launched.pid, 0)

    # -- serving ---------------------------------------------------------------------------------
    def _serve_one(self, notification: Notification) -> None:
        server = self.server
        with self.lock:
            self.stats.calls += 1
            # a file the caller released before this call is gone before the call, as in the
            # kernel (its release event was queued during the caller's close)
            self.fds.on_releases()
            answer = server.answer(notification)
            self.stats.continued += answer.proceed
            recording = self.recording
            try:
                self._replace(notification.id, answer)
                fd = _apply(self.listener, notification.id, answer)
            except Gone:
                self.stats.undelivered += 1
                if recording is not None:
                    recording.undelivered(answer.new_file)
                server.undelivered(answer)
            except OSError as exc:  # the caller could not take the fd (EMFILE): its errno
                if recording is not None:
                    recording.undelivered(answer.new_file)
                server.undelivered(answer)
                with contextlib.suppress(Gone):
                    self.listener.reply_error(notification.id, exc.errno or errno.EINVAL)
            else:
                if recording is not None and fd is not None:
                    recording.delivered(answer.new_file, fd)
                server.delivered(answer)
            finally:
                if answer.plain_file is not None:
                    os.close(answer.plain_file.srcfd)

    def _replace(self, notif_id: int, answer: Answer) -> None:
        """Switch the caller's fd to the answer's file first, where it says so."""
        if answer.replace is None:
            return
        fd, pending = answer.replace
        try:
            self.listener.replace_fd(notif_id, pending.srcfd, fd, pending.cloexec)
        except OSError:
            self.fds.abandoned(pending)
            raise
        if self.recording is not None:
            self.recording.replaced(fd, pending)
        self.fds.installed(pending)

    def serve(self) -> int:
        """Let the program run and serve it until no task is left; its exit code."""
        self._launched.start()
        listener, watcher = self.listener, self.watcher
        poller = select.epoll()
        poller.register(listener.fd, select.EPOLLIN)
        poller.register(watcher.fd, select.EPOLLIN)
        try:
            done = False
            while not done:
                for fd, events in poller.poll():
                    if fd == watcher.fd:
                        with self.lock:
                            self.fds.on_releases()
                    elif events & select.EPOLLIN:
                        notification = listener.receive()
                        if notification is not None:
                            self._serve_one(notification)
                    else:
                        done = True
        finally:
            poller.close()
            self._finish()
        assert self.exit_status is not None
        return exit_code(self.exit_status)

    def _finish(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        self.exit_status = status
        with self.lock:
            self.fds.on_releases()
            self.fds.release_all()
            self.fds.readiness.close()
            if self.recording is not None:
                self.recording.close()
        self.listener.close()
        self.watcher.close()
        self.tasks.close()
        self.server.memory.close()

    def serve_in_thread(self) -> threading.Thread:
        """`serve` in a new thread (tests drive the kernel meanwhile, holding `lock`)."""
        thread = threading.Thread(target=self.serve, name=f"kernelsim-exec-{self.pid}", daemon=True)
        thread.start()
        return thread
