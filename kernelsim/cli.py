"""The `kernelsim` command line.

Subcommands and exit codes (0 success, 1 a difference or a failure found, 2 bad usage or a
scenario file that cannot be used, 77 the live kernel refused bpf()):

* ``run [--kernel V] [--cpus N] [--record FILE] -- CMD...``: run an unmodified bpfsys program
  on the simulated kernel (``BPFSYS_BACKEND=sim:...`` in its environment); its exit code.
* ``record [-o FILE] [--sim --kernel V --cpus N] -- CMD...``: run it on the live kernel (or the
  simulator) recording every call to FILE; its exit code.
* ``replay FILE... | --all [--kernel V] [--cpus N]``: issue each recording again on the
  simulated kernel (the recording's own profile unless given) and print a pass/differs table;
  ``--all`` replays the shipped library (scenarios/).
* ``diff A B``: compare two recordings event by event.
* ``conformance DIR``: the bpf_conformance suite on the interpreter, pass/fail per file.
* ``profiles``, ``demo``.

``--json`` (replay, diff, conformance) prints one JSON document for CI instead of tables.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bpfsys.backend import BACKEND_ENV, RECORD_SOURCE_ENV, Backend, LiveBackend
from kernelsim import Kernel, KernelConfig, SimBackend
from kernelsim.profile import FEATURES, NAMED_PROFILES, Profile

EXIT_OK = 0
EXIT_DIFFERS = 1
EXIT_USAGE = 2
EXIT_NO_PRIVILEGE = 77
LIBRARY = Path(__file__).resolve().parents[1] / "scenarios"
"""The shipped scenario library (a source checkout's scenarios/)."""


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


@contextmanager
def _progress(args: argparse.Namespace, total: int, what: str) -> Iterator[Any]:
    """A progress bar on stderr for long runs (none with --json or fewer than 3 items)."""
    if getattr(args, "json", False) or total < 3:
        yield None
        return
    with Progress(console=Console(stderr=True), transient=True) as progress:
        yield (progress, progress.add_task(what, total=total))


def _advance(bar: Any) -> None:
    if bar is not None:
        progress, task = bar
        progress.advance(task)


# ---------------------------------------------------------------------------------------------
# demo, profiles
# ---------------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from kernelsim import demo

    backend: Backend
    if args.live:
        backend = LiveBackend()
        where = "the live kernel"
    else:
        backend = SimBackend(Kernel(KernelConfig(version=args.kernel, cpus=args.cpus)))
        where = f"the simulated kernel {args.kernel} ({args.cpus} CPUs)"
    print(f"kernelsim demo on {where}")
    try:
        demo.run(backend)
    except OSError as exc:
        if args.live and exc.errno in (errno.EPERM, errno.EACCES):
            print(f"the live kernel refused bpf(): {exc}; run as root or with CAP_BPF")
            return EXIT_NO_PRIVILEGE
        raise
    return EXIT_OK


def _profiles(args: argparse.Namespace) -> int:
    print(f"{'profile':<8} lacks")
    for version in NAMED_PROFILES:
        lacks = Profile(version).lacks()
        print(f"{version:<8} {', '.join(lacks) if lacks else '-'}")
    print(f"\nfeatures tracked: {len(FEATURES)}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# run, record
# ---------------------------------------------------------------------------------------------
def _sim_spec(kernel: str, cpus: int) -> str:
    return f"sim:kernel={kernel},cpus={cpus}"


def _command(args: argparse.Namespace) -> list[str]:
    command = list(args.command_line)
    if command[:1] == ["--"]:
        command = command[1:]
    return command


def _spawn(command: list[str], spec: str) -> int:
    """Run `command` with BPFSYS_BACKEND=`spec`; its exit code (127: not found)."""
    if not command:
        print("kernelsim: no command given (put it after --)", file=sys.stderr)
        return EXIT_USAGE
    env = {**os.environ, BACKEND_ENV: spec, RECORD_SOURCE_ENV: " ".join(command)}
    try:
        return subprocess.run(command, env=env, check=False).returncode
    except FileNotFoundError:
        print(f"kernelsim: command not found: {command[0]}", file=sys.stderr)
        return 127


def _run(args: argparse.Namespace) -> int:
    spec = _sim_spec(args.kernel, args.cpus)
    if args.record:
        spec = f"record:{args.record};{spec}"
    return _spawn(_command(args), spec)


def _record(args: argparse.Namespace) -> int:
    inner = _sim_spec(args.kernel, args.cpus) if args.sim else "live"
    code = _spawn(_command(args), f"record:{args.output};{inner}")
    if code == EXIT_OK:
        print(f"recorded {args.output}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------
# replay, diff
# ---------------------------------------------------------------------------------------------
def _library_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "file": report.path,
        "passed": report.passed,
        "events": len(report.results),
        "differences": [
            {"line": r.line, "event": r.summary, "path": d.path, "expected": d.expected,
             "actual": d.actual}
            for r in report.failures
            for d in r.differences
        ],
    }  # fmt: skip


def _print_differences(console: Console, report: Any, limit: int) -> None:
    shown = 0
    for result in report.failures:
        for diff in result.differences:
            if shown == limit:
                console.print("    ... and more (use --verbose for all)")
                return
            console.print(
                f"    line {result.line} [bold]{result.summary}[/]: {diff.path}: "
                f"expected {diff.expected!r}, got {diff.actual!r}",
                markup=True,
            )
            shown += 1


def _replay(args: argparse.Namespace) -> int:
    from kernelsim.scenario import ScenarioError, load_scenario, replay_against

    files = [Path(f) for f in args.files]
    if args.all:
        files += _library_files(Path(args.library))
    if not files:
        print("kernelsim replay: give scenario files or --all", file=sys.stderr)
        return EXIT_USAGE
    console = _console()
    rows: list[tuple[str, str, int, int, str]] = []
    reports: list[dict[str, Any]] = []
    differing_reports: list[Any] = []
    worst = EXIT_OK
    with _progress(args, len(files), "replaying") as bar:
        for path in files:
            try:
                scenario = load_scenario(path)
            except ScenarioError as exc:
                rows.append((str(path), "-", 0, 0, f"bad file: {exc.reason}"))
                reports.append({"file": str(path), "error": str(exc)})
                worst = EXIT_USAGE
                _advance(bar)
                continue
            version = args.kernel or scenario.kernel_version
            cpus = args.cpus or scenario.possible_cpus
            backend = SimBackend(Kernel(KernelConfig(version=version, cpus=cpus)))
            try:
                report = replay_against(scenario, backend)
            except ScenarioError as exc:
                rows.append((str(path), version, 0, 0, f"bad file: {exc.reason}"))
                reports.append({"file": str(path), "error": str(exc)})
                worst = EXIT_USAGE
                _advance(bar)
                continue
            finally:
                backend.kernel.close_all()
            differing = len(report.failures)
            rows.append(
                (str(path), version, len(report.results), differing,
                 "pass" if report.passed else "differs")
            )  # fmt: skip
            reports.append({**_report_json(report), "kernel": version, "cpus": cpus})
            if not report.passed:
                worst = max(worst, EXIT_DIFFERS)
            _advance(bar)
            if not report.passed:
                differing_reports.append(report)
    if args.json:
        print(json.dumps({"replays": reports, "passed": worst == EXIT_OK}, indent=2))
        return worst
    table = Table(title="scenario replay on the simulated kernel")
    for column in ("scenario", "kernel", "events", "differing", "result"):
        table.add_column(column, justify="right" if column in ("events", "differing") else "left")
    for name, version, events, differing, result in rows:
        style = "green" if result == "pass" else "red"
        table.add_row(
            Path(name).name, version, str(events), str(differing), f"[{style}]{result}[/]"
        )
    console.print(table)
    for report in differing_reports:
        console.print(f"[bold]{report.path}[/]", markup=True)
        _print_differences(console, report, 10_000 if args.verbose else 5)
    passed = sum(1 for row in rows if row[4] == "pass")
    console.print(f"{passed} passed, {len(rows) - passed} failed")
    return worst


def _diff(args: argparse.Namespace) -> int:
    from kernelsim.scenario import ScenarioError, diff_scenarios

    try:
        report = diff_scenarios(args.a, args.b)
    except ScenarioError as exc:
        print(f"kernelsim diff: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({**_report_json(report), "b": args.b}, indent=2))
    else:
        console = _console()
        if report.passed:
            console.print(f"{args.a} and {args.b}: no differences ({len(report.results)} events)")
        else:
            console.print(f"{args.a} and {args.b} differ in {len(report.failures)} events:")
            _print_differences(console, report, 10_000)
    return EXIT_OK if report.passed else EXIT_DIFFERS


# ---------------------------------------------------------------------------------------------
# conformance
# ---------------------------------------------------------------------------------------------
def _conformance(args: argparse.Namespace) -> int:
    from kernelsim.prog.interpreter import run_conformance

    directory = Path(args.directory)
    if not directory.is_dir():
        print(f"kernelsim conformance: {directory} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = run_conformance(directory)
    except (OSError, ValueError) as exc:
        print(f"kernelsim conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    failed = [r for r in results if not r.passed]
    if args.json:
        print(json.dumps({
            "passed": len(results) - len(failed),
            "failed": len(failed),
            "results": [
                {"name": r.name, "engine": r.engine.name.lower(), "passed": r.passed,
                 "expected": r.expected, "result": r.result, "error": r.error}
                for r in results
            ],
        }, indent=2))  # fmt: skip
        return EXIT_DIFFERS if failed else EXIT_OK
    console = _console()
    table = Table(title=f"bpf_conformance: {directory}")
    for column in ("file", "engine", "result", "detail"):
        table.add_column(column)
    for r in results:
        detail = r.error or ("" if r.passed else f"expected {r.expected}, got {r.result}")
        mark = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
        if r.passed and not args.verbose:
            continue
        table.add_row(r.name, r.engine.name.lower(), mark, detail)
    if table.row_count:
        console.print(table)
    console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return EXIT_DIFFERS if failed else EXIT_OK


# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------
def _sim_options(parser: argparse.ArgumentParser, kernel: str | None, cpus: int | None) -> None:
    shown_kernel = kernel or "the recording's"
    shown_cpus = cpus or "the recording's"
    parser.add_argument(
        "--kernel", default=kernel, help=f"simulated kernel version ({shown_kernel})"
    )
    parser.add_argument("--cpus", type=int, default=cpus, help=f"simulated CPUs ({shown_cpus})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernelsim",
        description="A simulated Linux kernel for eBPF tooling.",
        epilog="exit codes: 0 success, 1 differences or failures, 2 bad usage or bad file",
    )
    commands = parser.add_subparsers(dest="subcommand", required=True)

    demo = commands.add_parser("demo", help="run the example job (simulated kernel by default)")
    demo.add_argument("--live", action="store_true", help="run on the live kernel instead")
    demo.add_argument("--kernel", default="6.18", help="simulated kernel version (default 6.18)")
    demo.add_argument("--cpus", type=int, default=2, help="simulated CPUs (default 2)")
    demo.set_defaults(run=_demo)

    profiles = commands.add_parser("profiles", help="list kernel profiles and what each lacks")
    profiles.set_defaults(run=_profiles)

    run = commands.add_parser(
        "run",
        help="run a bpfsys program on the simulated kernel",
        description="Run CMD with BPFSYS_BACKEND naming the simulated kernel; exits as CMD.",
    )
    _sim_options(run, "6.18", 2)
    run.add_argument("--record", metavar="FILE", help="also record every call to FILE")
    run.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    run.set_defaults(run=_run)

    record = commands.add_parser(
        "record",
        help="run a bpfsys program on the live kernel, recording a scenario",
        description="Run CMD with every backend call recorded to FILE; exits as CMD.",
    )
    record.add_argument("-o", "--output", default="recording.jsonl", metavar="FILE")
    record.add_argument("--sim", action="store_true", help="record on the simulator instead")
    _sim_options(record, "6.18", 2)
    record.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    record.set_defaults(run=_record)

    replay = commands.add_parser(
        "replay",
        help="replay recordings on the simulated kernel: a pass/differs table",
        description="Issue each recording's calls on the simulated kernel and compare every "
        "result with the recorded one.",
    )
    replay.add_argument("files", nargs="*", metavar="FILE")
    replay.add_argument("--all", action="store_true", help="replay the shipped library too")
    replay.add_argument("--library", default=str(LIBRARY), help="the library for --all")
    _sim_options(replay, None, None)
    replay.add_argument("--json", action="store_true", help="one JSON document (for CI)")
    replay.add_argument("-v", "--verbose", action="store_true", help="every difference")
    replay.set_defaults(run=_replay)

    diff = commands.add_parser("diff", help="compare two recordings event by event")
    diff.add_argument("a", metavar="A")
    diff.add_argument("b", metavar="B")
    diff.add_argument("--json", action="store_true", help="one JSON document (for CI)")
    diff.set_defaults(run=_diff)

    conformance = commands.add_parser(
        "conformance", help="run the bpf_conformance suite on the interpreter"
    )
    conformance.add_argument("directory", metavar="DIR", help="a directory of *.data files")
    conformance.add_argument("--json", action="store_true", help="one JSON document (for CI)")
    conformance.add_argument("-v", "--verbose", action="store_true", help="list passes too")
    conformance.set_defaults(run=_conformance)
    from kernelsim.exec.cli import add_exec_command  # the exec subcommand lives in its package

    add_exec_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
