"""The `kernelsim` command line."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from bpfsys.backend import Backend, LiveBackend
from kernelsim import Kernel, KernelConfig, SimBackend
from kernelsim.profile import FEATURES, NAMED_PROFILES, Profile


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
            return 77
        raise
    return 0


def _profiles(args: argparse.Namespace) -> int:
    print(f"{'profile':<8} lacks")
    for version in NAMED_PROFILES:
        lacks = Profile(version).lacks()
        print(f"{version:<8} {', '.join(lacks) if lacks else '-'}")
    print(f"\nfeatures tracked: {len(FEATURES)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kernelsim", description="A simulated Linux kernel for eBPF tooling."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the example job (simulated kernel by default)")
    demo.add_argument("--live", action="store_true", help="run on the live kernel instead")
    demo.add_argument("--kernel", default="6.18", help="simulated kernel version (default 6.18)")
    demo.add_argument("--cpus", type=int, default=2, help="simulated CPUs (default 2)")
    demo.set_defaults(run=_demo)
    profiles = commands.add_parser("profiles", help="list kernel profiles and what each lacks")
    profiles.set_defaults(run=_profiles)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
