"""kernelsim exec under random input: random bpf() attrs from a native program.

One program (Python's bpfsys live backend, as uid 65534) stays up for the whole test and makes
each call hypothesis asks for: bpf(cmd, attr bytes, size), printing the result or the errno, and
closing any fd it got at once. Whatever the bytes, the program gets a result or an errno (never
the ENOSYS of a simulator failure), the session serves on, and when the program exits every
object it made is gone.
"""

from __future__ import annotations

import ctypes
import sys
import textwrap

from exec_support import BPF_CHILD, Running, need_exec, shared_dir, snippet_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfsys.abi import BpfCmd, MapCreateAttr, MapType

CHILD = textwrap.dedent(
    """
    import sys
    for line in sys.stdin:
        cmd, size, raw = line.split()
        image = bytearray.fromhex(raw) if raw != "-" else bytearray()
        image += bytes(max(0, int(size) - len(image)))
        try:
            result = backend.bpf(int(cmd), image, int(size))
        except OSError as exc:
            say("errno", exc.errno)
            continue
        if result > 2 and int(cmd) in FD_COMMANDS:
            os.close(result)
        say("ok", result)
    """
)
FD_COMMANDS = [
    BpfCmd.MAP_CREATE,
    BpfCmd.PROG_LOAD,
    BpfCmd.OBJ_GET,
    BpfCmd.PROG_GET_FD_BY_ID,
    BpfCmd.MAP_GET_FD_BY_ID,
    BpfCmd.BTF_LOAD,
    BpfCmd.LINK_CREATE,
    BpfCmd.RAW_TRACEPOINT_OPEN,
    BpfCmd.BTF_GET_FD_BY_ID,
    BpfCmd.LINK_GET_FD_BY_ID,
]
COMMANDS = sorted(BpfCmd, key=int)
random_calls = st.tuples(
    st.one_of(st.sampled_from(COMMANDS), st.integers(-1, 64)),
    st.binary(max_size=160),
    st.one_of(st.integers(0, 200), st.sampled_from([4095, 4096, 4097])),
)
map_creations = st.builds(
    lambda kind, key, value, entries, flags: (
        int(BpfCmd.MAP_CREATE),
        bytes(
            MapCreateAttr(
                map_type=kind, key_size=key, value_size=value, max_entries=entries, map_flags=flags
            )
        ),
        ctypes.sizeof(MapCreateAttr),
    ),
    st.sampled_from(list(MapType)),
    st.integers(0, 16),
    st.integers(0, 64),
    st.integers(0, 4096),
    st.sampled_from([0, 1, 1 << 10, 1 << 3]),
)
"""MAP_CREATE attrs of small sizes, so that many get past the checks and make maps."""


def test_random_attrs_get_an_answer_and_leave_nothing_behind() -> None:
    need_exec()
    snippet = f"FD_COMMANDS = {[int(c) for c in FD_COMMANDS]}\n" + CHILD
    path = snippet_file(shared_dir(), snippet)
    running = Running([sys.executable, str(BPF_CHILD), "--drop", str(path)])

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.one_of(random_calls, map_creations))
    def call(request: tuple[int, bytes, int]) -> None:
        cmd, attr, size = request
        running.send(f"{int(cmd)} {size} {attr.hex() or '-'}")
        answer = running.line()
        kind, _, value = answer.partition(" ")
        assert kind in ("ok", "errno"), answer
        if kind == "errno":
            assert int(value) != 38, "ENOSYS: the simulator failed on this call"

    call()
    code, rest = running.finish()
    assert code == 0, rest
    assert running.session.server.internal_errors == 0
    assert running.kernel.live_objects() == {}
