"""`kernelsim exec`: run a native program against the simulated kernel.

    kernelsim exec [--kernel V] [--cpus N] [--online-cpus N] [--privileges P] [--user UID[:GID]]
                   [--record FILE] [-v] -- PROGRAM ARGS...

--record FILE writes the calls served to FILE in the scenario format of the in-process recorder
(`kernelsim.exec.record`), so `kernelsim replay` and `kernelsim diff` take it like any other.

Exits as the program does (128 + N when signal N killed it); 126 with the reason on stderr when
this machine cannot run it against the simulator (kernelsim.exec.launch), 2 for bad usage.
While the program runs, SIGINT is left to the program (the terminal sends it to both), and
SIGTERM and SIGHUP are passed on to it.
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import sys
from typing import Any

from kernelsim.exec.launch import EXIT_REFUSED, ExecRefused
from kernelsim.exec.session import ExecSession
from kernelsim.kernel import KernelConfig, Privileges

EXIT_USAGE = 2


def _user(spec: str) -> tuple[int, int]:
    """UID[:GID] or a user name: (uid, gid); the gid defaults to the user's (or the uid)."""
    name, _, group = spec.partition(":")
    try:
        if name.isdigit():
            uid = int(name)
            try:
                gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                gid = uid
        else:
            entry = pwd.getpwnam(name)
            uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no user {name!r}") from None
    return uid, int(group) if group else gid


def add_exec_command(subparsers: Any) -> None:
    """Add `exec` to the `kernelsim` command's subparsers."""
    parser = subparsers.add_parser(
        "exec",
        help="run a native program (bpftool, a libbpf tool) against the simulated kernel",
        description="Run PROGRAM with its bpf(), perf_event_open() and perf ioctl calls, its "
        "mmaps and epoll registrations of their fds, and its reads of the kernel's files "
        "answered by a simulated kernel (seccomp user notification). No privilege is needed.",
        epilog="exit status: the program's; 126 when the simulator cannot be put in front of "
        "it here (the reason is printed); 2 for bad usage",
    )
    parser.add_argument("--kernel", default="6.18", help="simulated kernel version (6.18)")
    parser.add_argument("--cpus", type=int, default=2, help="simulated possible CPUs (2)")
    parser.add_argument("--online-cpus", type=int, default=None, help="online CPUs (all)")
    parser.add_argument(
        "--privileges",
        choices=[p.value for p in Privileges],
        default=Privileges.ROOT.value,
        help="what the simulated kernel lets the program do (root)",
    )
    parser.add_argument(
        "--user", type=_user, default=None, metavar="UID[:GID]",
        help="run the program as this user (the supervisor needs the right to switch to it)",
    )  # fmt: skip
    parser.add_argument(
        "--record", metavar="FILE", default=None,
        help="also record the calls served to FILE (a scenario: kernelsim replay/diff read it)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="report the calls served")
    parser.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- PROGRAM ARGS")
    parser.set_defaults(run=run_exec)


def run_exec(args: argparse.Namespace) -> int:
    command = list(args.command_line)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("kernelsim exec: no program given (put it after --)", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = KernelConfig(
            version=args.kernel,
            cpus=args.cpus,
            online_cpus=args.online_cpus,
            privileges=args.privileges,
        )
    except (ValueError, TypeError) as exc:
        print(f"kernelsim exec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        session = ExecSession(command, config, user=args.user, record=args.record)
    except ExecRefused as exc:
        print(f"kernelsim exec: cannot run {command[0]} here: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        if args.record is None:
            raise
        print(f"kernelsim exec: cannot record to {args.record}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    previous = {number: signal.getsignal(number) for number in _HANDLED}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda received, _frame: os.kill(session.pid, received))
    try:
        code = session.serve()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if args.verbose:
        stats = session.stats
        print(
            f"kernelsim exec: {stats.calls} calls served, {stats.continued} passed to the real "
            f"kernel, {stats.undelivered} answers the program did not wait for; "
            f"killable waits only: {session.wait_killable}",
            file=sys.stderr,
        )
    return code


_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
