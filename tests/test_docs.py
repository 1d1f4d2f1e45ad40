"""The documentation's code runs: every snippet marked in docs/ is executed on the simulator.

Theory of operation
-------------------
A fenced block is *marked* by an HTML comment on the line right before its opening fence
(invisible on the rendered site):

* ``<!-- docs-test: run -->`` -- a ``python`` block, executed in this process in the page's
  namespace (the page's run blocks share it, in page order, as a reader's session would), with
  a fresh `SimBackend` made current for the whole page and ``BPFSYS_BACKEND=sim`` in the
  environment, inside the page's working directory;
* ``<!-- docs-test: file NAME -->`` -- the block's text is written to NAME in the page's working
  directory (a module, a test file, a conftest.py) when the page reaches it;
* ``<!-- docs-test: shell -->`` -- an ``sh`` block run by ``bash -e`` in that directory, with
  the running interpreter first on PATH; it must exit 0.

The blocks of a page are processed in page order in one temporary directory, so a shell block
can run the test files written above it and a run block can import the modules. At the end of
a page the page's simulated kernel must have no fd open: the snippets clean up after
themselves. Every ``python`` block of a tutorial must be marked ``run`` or ``file``, so that
no tutorial code goes untested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs
import pytest

from bpfsys.backend import BACKEND_ENV, use_backend
from kernelsim import SimBackend

REPO: Final = Path(__file__).resolve().parents[1]
DOCS: Final = REPO / "docs"
TUTORIALS: Final = DOCS / "tutorials"
MARKER: Final = re.compile(r"<!--\s*docs-test:\s*(?P<kind>\S+)(?:\s+(?P<arg>\S+))?\s*-->")
FENCE: Final = re.compile(r"^(?P<ticks>`{3,})(?P<lang>[\w+-]*)(?P<info>.*)$")
KINDS: Final = {"run": "python", "file": None, "shell": "sh"}
"""Marker kinds and the fence language each needs (None: any)."""
SHELL_TIMEOUT_S: Final = 300
CLEAN_ENV: Final = ("BPFSYS_BACKEND", "KERNELSIM_TEST_BACKENDS", "PYTEST_ADDOPTS")
"""Variables of this run that would change what the docs' commands do."""


class DocsError(ValueError):
    """A page whose markers or fences are malformed."""


@attrs.frozen
class Block:
    """One fenced block: where it is, its language, its marker (if any) and its text."""

    page: Path
    line: int
    """The line number of the opening fence (1-based)."""
    lang: str
    kind: str | None
    arg: str | None
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    """The fenced blocks of `page` (top-level fences only), with their markers."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        marker = MARKER.fullmatch(lines[index].strip())
        if marker is not None and (index + 1 >= len(lines) or not FENCE.match(lines[index + 1])):
            raise DocsError(f"{page}:{index + 1}: a docs-test marker must precede a fence")
        if fence is None:
            index += 1
            continue
        ticks, start = fence["ticks"], index
        index += 1
        while index < len(lines) and lines[index].rstrip() != ticks:
            index += 1
        if index == len(lines):
            raise DocsError(f"{page}:{start + 1}: fence never closed")
        before = MARKER.fullmatch(lines[start - 1].strip()) if start else None
        kind = None if before is None else before["kind"]
        if kind is not None and kind not in KINDS:
            raise DocsError(f"{page}:{start}: unknown docs-test kind {kind!r}")
        wanted = KINDS.get(kind or "")
        if kind is not None and wanted is not None and fence["lang"] != wanted:
            raise DocsError(f"{page}:{start + 1}: a {kind} block must be ```{wanted}")
        if kind == "file" and (before is None or not before["arg"]):
            raise DocsError(f"{page}:{start}: docs-test: file needs a file name")
        blocks.append(
            Block(
                page=page,
                line=start + 1,
                lang=fence["lang"],
                kind=kind,
                arg=None if before is None else before["arg"],
                text="\n".join(lines[start + 1 : index]) + "\n",
            )
        )
        index += 1
    return blocks


def pages_with_snippets() -> list[Path]:
    """The pages that mark blocks (read at collection time: other pages are not parsed)."""
    return sorted(
        page for page in DOCS.rglob("*.md") if MARKER.search(page.read_text(encoding="utf-8"))
    )


def subprocess_env() -> dict[str, str]:
    """This process's environment without the variables that choose backends, with the
    running interpreter first on PATH (the docs say ``python3``)."""
    env = {key: value for key, value in os.environ.items() if key not in CLEAN_ENV}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_shell(block: Block, workdir: Path) -> None:
    done = subprocess.run(
        ["bash", "-e", "-c", block.text],
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"{block.where}: the shell block exited {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )


@pytest.fixture
def page_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The page's working directory: current, first on sys.path; modules imported from it
    are forgotten afterwards, so pages do not see each other's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(BACKEND_ENV, "sim")
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.mark.parametrize(
    "page", pages_with_snippets(), ids=lambda page: str(page.relative_to(DOCS))
)
def test_page_snippets_run(page: Path, page_sandbox: Path) -> None:
    sim = SimBackend()
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in parse_blocks(page):
        if block.kind == "file":
            assert block.arg is not None
            target = page_sandbox / block.arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
        elif block.kind == "shell":
            run_shell(block, page_sandbox)
        elif block.kind == "run":
            code = compile(block.text, block.where, "exec")
            with use_backend(sim):
                exec(code, namespace)
    assert sim.kernel.open_fds() == [], f"{page}: the snippets left simulated fds open"


def test_every_tutorial_python_block_runs() -> None:
    tutorials = sorted(TUTORIALS.glob("*.md"))
    assert tutorials, f"no tutorials under {TUTORIALS}"
    unmarked = [
        block.where
        for page in tutorials
        for block in parse_blocks(page)
        if block.lang == "python" and block.kind not in ("run", "file")
    ]
    assert unmarked == [], "tutorial python blocks without a docs-test marker"
    for page in tutorials:
        assert any(block.kind for block in parse_blocks(page)), f"{page}: nothing is run"


def test_parser_reads_markers_and_fences(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n<!-- docs-test: file a.py -->\n```python\nx = 1\n```\n"
        "````md\n```python\nnot a block\n```\n````\n"
        "<!-- docs-test: shell -->\n```sh\ntrue\n```\n",
        encoding="utf-8",
    )
    blocks = [(b.line, b.lang, b.kind, b.arg, b.text) for b in parse_blocks(page)]
    assert blocks == [
        (3, "python", "file", "a.py", "x = 1\n"),
        (6, "md", None, None, "```python\nnot a block\n```\n"),
        (12, "sh", "shell", None, "true\n"),
    ]
    for bad in (
        "<!-- docs-test: run -->\ntext\n",
        "<!-- docs-test: run -->\n```sh\ntrue\n```\n",
        "<!-- docs-test: file -->\n```python\nx = 1\n```\n",
        "<!-- docs-test: eval -->\n```python\nx = 1\n```\n",
        "```python\nx = 1\n",
    ):
        page.write_text(bad, encoding="utf-8")
        with pytest.raises(DocsError):
            parse_blocks(page)
