"""The bpf_conformance suite (../shared/conformance/tests) on both engines, as uBPF's plugin
runs it; and, on the live kernel, every case the verifier accepts as an XDP program gives the
same r0 through PROG_TEST_RUN on the simulated kernel."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from bpfsys.abi import BpfCmd, ProgLoadAttr, ProgType, TestRunAttr
from bpfsys.asm import encode
from bpfsys.backend import Backend
from bpfsys.conformance import ConformanceCase, load_case
from kernelsim.backend import SimBackend
from kernelsim.prog.interpreter import Engine, run_conformance
from kernelsim.prog.interpreter.conformance import run_case

CONFORMANCE_TESTS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "tests"
CASE_FILES = sorted(CONFORMANCE_TESTS.glob("*.data")) if CONFORMANCE_TESTS.is_dir() else []
ENGINES = [Engine.COMPILED, Engine.NAIVE]


@pytest.fixture
def case_file(request: pytest.FixtureRequest, conformance_dir: Path) -> Path:
    path: Path = request.param
    return path


def test_the_suite_is_complete(conformance_dir: Path) -> None:
    assert len(list((conformance_dir / "tests").glob("*.data"))) == 313


@pytest.mark.parametrize("engine", ENGINES, ids=[e.value for e in ENGINES])
@pytest.mark.parametrize("case_file", CASE_FILES, ids=[p.stem for p in CASE_FILES], indirect=True)
def test_case(case_file: Path, engine: Engine) -> None:
    case = load_case(case_file)
    result = run_case(case, engine)
    assert result.error is None, result.error
    assert result.result == case.result


def test_run_conformance_reports_every_case(conformance_dir: Path) -> None:
    results = run_conformance(conformance_dir / "tests", ENGINES)
    assert len(results) == 2 * 313
    assert [r.name for r in results if not r.passed] == []


def test_run_conformance_reports_failures(tmp_path: Path) -> None:
    (tmp_path / "wrong.data").write_text("-- asm\nmov %r0, 1\nexit\n-- result\n0x2\n")
    (tmp_path / "fault.data").write_text("-- asm\nldxdw %r0, [%r1+0]\nexit\n-- result\n0x0\n")
    by_name = {r.name: r for r in run_conformance(tmp_path)}
    assert (by_name["wrong"].result, by_name["wrong"].passed) == (1, False)
    assert by_name["fault"].error is not None and "insn 0" in by_name["fault"].error


# -- the live kernel as the oracle ---------------------------------------------------------
def _load_xdp(backend: Backend, case: ConformanceCase) -> int:
    insns = encode(case.program())
    image = ctypes.create_string_buffer(insns, len(insns))
    license = ctypes.create_string_buffer(b"GPL")
    attr = ProgLoadAttr(
        prog_type=ProgType.XDP,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(image),
        license=ctypes.addressof(license),
    )
    return backend.bpf(BpfCmd.PROG_LOAD, attr, ctypes.sizeof(attr))


def _test_run_retval(backend: Backend, fd: int, data: bytes) -> int:
    buf = ctypes.create_string_buffer(data, len(data))
    out = ctypes.create_string_buffer(len(data) + 256)
    attr = TestRunAttr(
        prog_fd=fd,
        data_in=ctypes.addressof(buf),
        data_size_in=len(data),
        data_out=ctypes.addressof(out),
        data_size_out=len(data) + 256,
        repeat=1,
    )
    backend.bpf(BpfCmd.PROG_TEST_RUN, attr, ctypes.sizeof(attr))
    return int(attr.retval)


@pytest.mark.parametrize("case_file", CASE_FILES, ids=[p.stem for p in CASE_FILES], indirect=True)
def test_live_accepted_cases_match_through_test_run(case_file: Path, live: Backend) -> None:
    case = load_case(case_file)
    if case.mem:
        pytest.skip("reads its memory through r1, which PROG_TEST_RUN makes the xdp_md context")
    data = bytes(64)
    try:
        fd = _load_xdp(live, case)
    except OSError:
        pytest.skip("the live verifier refuses this program as XDP")
    try:
        expected = _test_run_retval(live, fd, data)
    finally:
        live.close(fd)
    sim = SimBackend()
    sim_fd = _load_xdp(sim, case)
    try:
        assert _test_run_retval(sim, sim_fd, data) == expected
    finally:
        sim.close(sim_fd)
