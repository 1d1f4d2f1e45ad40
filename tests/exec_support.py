"""Helpers for the kernelsim exec tests: run a native program under ExecSession (or directly on
the live kernel) and talk to it line by line."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import IO

import pytest

from kernelsim.exec.launch import ExecRefused
from kernelsim.exec.session import ExecSession
from kernelsim.kernel import KernelConfig

PROGRAMS = Path(__file__).resolve().parent / "exec_programs"
BPF_CHILD = PROGRAMS / "bpf_child.py"
NOBODY = (65534, 65534)
LINE_TIMEOUT_S = 60.0


@cache
def exec_unavailable_reason() -> str | None:
    """Why kernelsim exec cannot run here (the refusal's reason), or None."""
    try:
        session = ExecSession(["true"])
    except ExecRefused as exc:
        return f"kernelsim exec refused: {exc}"
    code = session.serve()
    return None if code == 0 else f"kernelsim exec: `true` exited {code}"


def need_exec() -> None:
    reason = exec_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@cache
def _shared_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="kernelsim-exec-"))
    base.chmod(0o755)
    atexit.register(shutil.rmtree, base, True)
    return base


def shared_dir() -> Path:
    """A fresh directory uid 65534 can read (pytest's tmp_path is private to root), removed
    when the tests end."""
    path = Path(tempfile.mkdtemp(dir=_shared_base()))
    path.chmod(0o755)
    return path


class Running:
    """A program under `kernelsim exec`, served in a thread, with pipes for stdin and stdout
    (stderr goes to stdout unless told otherwise)."""

    def __init__(
        self,
        argv: Sequence[str],
        config: KernelConfig | None = None,
        *,
        user: tuple[int, int] | None = None,
        merge_stderr: bool = True,
    ) -> None:
        in_read, in_write = os.pipe()
        out_read, out_write = os.pipe()
        stdio = (in_read, out_write, out_write if merge_stderr else None)
        try:
            self.session = ExecSession(argv, config, stdio=stdio, user=user)
        finally:
            os.close(in_read)
            os.close(out_write)
        self.kernel = self.session.kernel
        self._stdin: IO[str] = os.fdopen(in_write, "w")
        self._stdout: IO[str] = os.fdopen(out_read, "r")
        self._thread = self.session.serve_in_thread()

    def line(self) -> str:
        """The program's next line of output (AssertionError when it does not come)."""
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._stdout.readline()))
        reader.start()
        reader.join(LINE_TIMEOUT_S)
        assert result, "the program printed no line in time"
        return result[0].rstrip("\n")

    def send(self, text: str) -> None:
        self._stdin.write(text + "\n")
        self._stdin.flush()

    def finish(self) -> tuple[int, str]:
        """Close stdin, wait for the end; (exit code, the rest of the output)."""
        self._stdin.close()
        rest = self._stdout.read()
        self._stdout.close()
        self._thread.join(LINE_TIMEOUT_S)
        assert not self._thread.is_alive(), "the session did not end"
        status = self.session.exit_status
        assert status is not None
        return os.waitstatus_to_exitcode(status), rest


def snippet_file(directory: Path, snippet: str) -> Path:
    path = directory / "snippet.py"
    path.write_text(snippet)
    path.chmod(0o644)
    return path


def run_snippet_exec(
    snippet: str, config: KernelConfig | None = None, *, stdin: str = ""
) -> tuple[int, str]:
    """Run a bpf_child snippet under kernelsim exec, dropping to uid 65534; (code, stdout)."""
    path = snippet_file(shared_dir(), snippet)
    running = Running([sys.executable, str(BPF_CHILD), "--drop", str(path)], config)
    if stdin:
        running.send(stdin)
    try:
        return running.finish()
    finally:
        shutil.rmtree(path.parent)


def run_snippet_live(snippet: str, *, stdin: str = "") -> tuple[int, str]:
    """Run the same snippet directly on the live kernel (as this process's user)."""
    path = snippet_file(shared_dir(), snippet)
    try:
        done = subprocess.run(
            [sys.executable, str(BPF_CHILD), str(path)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=LINE_TIMEOUT_S,
            check=False,
        )
    finally:
        shutil.rmtree(path.parent)
    return done.returncode, done.stdout
