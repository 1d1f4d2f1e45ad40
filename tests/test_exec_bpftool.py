"""kernelsim exec acceptance: bpftool, run as uid 65534 against the simulated kernel, prints what
it prints on the live kernel for the same steps.

The steps: map create (pinned), update, lookup, dump, getnext, delete, show, list; prog load of
a clang-built object (pinned), prog show, prog list. On the live kernel they run as root in a
private mount namespace with a bpffs at /sys/fs/bpf; under exec as uid 65534, where the pins go
to the simulated bpffs. `map list` and `prog list` on the live kernel show every object of the
machine: only ours (named xm_*) are compared. Ids, fds, load times and uids are masked, a hash
map's dump is compared in key order (the live kernel's order follows a random hash seed), and so
are the program facts that belong to the loader's model rather than to exec (listed in
PROG_MODEL_FIELDS and in docs/fidelity/exec.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest
from exec_support import NOBODY, PROGRAMS, Running, need_exec, shared_dir

from kernelsim.pytest_plugin import live_unavailable_reason

BPFTOOL: Final = shutil.which("bpftool") or "/usr/sbin/bpftool"
STEPS: Final = """
B={bpftool}
step() {{ echo "## $*"; $B "$@" 2>&1; echo "## rc $?"; }}
step map create /sys/fs/bpf/xm_hash type hash key 4 value 4 entries 16 name xm_hash
step map update pinned /sys/fs/bpf/xm_hash key 1 0 0 0 value 2 0 0 0
step map update pinned /sys/fs/bpf/xm_hash key 3 0 0 0 value 4 0 0 0 noexist
step map update pinned /sys/fs/bpf/xm_hash key 3 0 0 0 value 5 0 0 0 noexist
step map update pinned /sys/fs/bpf/xm_hash key 3 0 0 0 value 6 0 0 0 exist
step map lookup pinned /sys/fs/bpf/xm_hash key 1 0 0 0
step map lookup pinned /sys/fs/bpf/xm_hash key 9 0 0 0
step map dump pinned /sys/fs/bpf/xm_hash
step map show pinned /sys/fs/bpf/xm_hash
step -j map show pinned /sys/fs/bpf/xm_hash
step map create /sys/fs/bpf/xm_array type array key 4 value 8 entries 4 name xm_array
step map update pinned /sys/fs/bpf/xm_array key 2 0 0 0 value 1 2 3 4 5 6 7 8
step map dump pinned /sys/fs/bpf/xm_array
step map getnext pinned /sys/fs/bpf/xm_array key 1 0 0 0
step map getnext pinned /sys/fs/bpf/xm_array key 3 0 0 0
step map delete pinned /sys/fs/bpf/xm_hash key 1 0 0 0
step map delete pinned /sys/fs/bpf/xm_hash key 1 0 0 0
step map create /sys/fs/bpf/xm_hash type hash key 4 value 4 entries 16 name xm_hash
step map create /sys/fs/bpf/nodir/xm_hash type hash key 4 value 4 entries 16 name xm_hash
step map list
step prog load {object} /sys/fs/bpf/xm_prog
step prog show pinned /sys/fs/bpf/xm_prog
step prog list
step map list
"""
PROG_MODEL_FIELDS: Final = (
    (re.compile(r"xlated \d+B  (not jited|jited \d+B)"), "xlated <model>"),
    (re.compile(r"\n\tbtf_id <id>(?=\n|$)"), ""),
)
"""Program facts of the loader's model, masked here (see docs/fidelity/exec.md)."""


def _blocks(text: str) -> list[str]:
    """bpftool's plain `list` output as one block per object (its first line and the indented
    lines after it)."""
    blocks: list[str] = []
    for line in text.splitlines():
        if line.startswith(("\t", " ")) and blocks:
            blocks[-1] += "\n" + line
        else:
            blocks.append(line)
    return blocks


def normalize(output: str) -> str:
    """Mask ids and times; keep only our objects in the list commands."""
    sections = re.split(r"^(## .*)$", output, flags=re.MULTILINE)
    kept: list[str] = []
    for index, section in enumerate(sections):
        if index % 2 == 1:
            kept.append(section)
            continue
        title = sections[index - 1] if index else ""
        if title.endswith(" list"):
            section = "".join(f"\n{b}" for b in _blocks(section) if "xm_" in b) + "\n"
        if " map dump " in title:  # a hash map's order depends on its random hash seed
            lines = section.strip("\n").splitlines()
            entries = sorted(line for line in lines if line.startswith("key"))
            rest = [line for line in lines if not line.startswith("key")]
            section = "".join(f"\n{line}" for line in entries + rest) + "\n"
        kept.append(section)
    text = "".join(kept)
    text = re.sub(r"^\d+: ", "<id>: ", text, flags=re.MULTILINE)
    text = re.sub(r'"id":\d+', '"id":<id>', text)
    text = re.sub(r"(map_ids|btf_id) [\d,]+", r"\1 <id>", text)
    text = re.sub(r"loaded_at \S+  uid \d+", "loaded_at <time>  uid <uid>", text)
    for pattern, replacement in PROG_MODEL_FIELDS:
        text = pattern.sub(replacement, text)
    return text


@pytest.fixture(scope="module")
def work() -> Path:
    need_exec()
    clang = shutil.which("clang")
    if clang is None or not Path(BPFTOOL).exists():
        pytest.skip("needs bpftool and clang (apt-get install bpftool clang libbpf-dev)")
    directory = shared_dir()
    obj = directory / "count.bpf.o"
    subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", f"-I/usr/include/{os.uname().machine}-linux-gnu",
         "-c", str(PROGRAMS / "count.bpf.c"), "-o", str(obj)],
        check=True,
    )  # fmt: skip
    obj.chmod(0o644)
    script = directory / "steps.sh"
    script.write_text(STEPS.format(bpftool=BPFTOOL, object=obj))
    script.chmod(0o644)
    return directory


def run_simulated(work: Path) -> str:
    running = Running(["sh", str(work / "steps.sh")], user=NOBODY)
    code, out = running.finish()
    assert code == 0, out
    return out


def run_live(work: Path) -> str:
    reason = live_unavailable_reason()
    if reason is not None or shutil.which("unshare") is None:
        pytest.skip(reason or "needs unshare(1) for a private bpffs")
    script = f"mount -t bpf bpf /sys/fs/bpf && sh {work / 'steps.sh'}"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"cannot mount a private bpffs: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bpftool_prints_what_it_prints_on_the_live_kernel(work: Path) -> None:
    simulated = normalize(run_simulated(work))
    assert "## rc 0" in simulated
    live = normalize(run_live(work))
    assert simulated.splitlines() == live.splitlines()


def test_bpftool_as_nobody_gets_nothing_from_the_live_kernel(work: Path) -> None:
    """The control: the same user without exec is refused by the live kernel."""
    done = subprocess.run(
        [BPFTOOL, "map", "create", "/sys/fs/bpf/xm_x", "type", "hash", "key", "4", "value", "4",
         "entries", "1", "name", "xm_x"],
        capture_output=True, text=True, check=False, user=NOBODY[0], group=NOBODY[1],
        extra_groups=[],
    )  # fmt: skip
    assert done.returncode != 0
    assert "Operation not permitted" in done.stderr or "permission" in done.stderr.lower()
