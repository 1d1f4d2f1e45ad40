"""kernelsim exec: native programs against the simulated kernel through seccomp notification.

The programs are Python running bpfsys's *live* backend (tests/exec_programs/bpf_child.py):
real system calls, made as uid 65534 without capabilities, answered by the simulator. Where the
live kernel can be used, the same program runs on it directly and the outputs are compared line
by line (the differential cases); the rest checks what only the simulator shows (object
lifetimes, readiness, files).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from exec_support import (
    BPF_CHILD,
    NOBODY,
    Running,
    need_exec,
    run_snippet_exec,
    run_snippet_live,
    shared_dir,
    snippet_file,
)

from kernelsim.exec.session import ExecSession
from kernelsim.kernel import KernelConfig
from kernelsim.perf.event import PerfEvent
from kernelsim.perf.output import perf_output
from kernelsim.pytest_plugin import live_unavailable_reason

PRELUDE = textwrap.dedent(
    """
    A = abi

    def outcome(fn):
        try:
            return f"ok {fn()}"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))

    def run(cmd, attr, size=None):
        return backend.bpf(cmd, attr, ctypes.sizeof(attr) if size is None else size)

    def new_map(kind, key_size, value_size, entries, flags=0):
        attr = A.MapCreateAttr(map_type=kind, key_size=key_size, value_size=value_size,
                               max_entries=entries, map_flags=flags)
        return run(A.BpfCmd.MAP_CREATE, attr)

    kept = []

    def elem(fd, key, value=None, flags=0):
        kept.append((key, value))  # the attr holds their addresses
        return A.MapElemAttr(map_fd=fd, key=ctypes.addressof(key),
                             value=0 if value is None else ctypes.addressof(value), flags=flags)
    """
)


@pytest.fixture(autouse=True)
def _exec_available() -> None:
    need_exec()


def differential(snippet: str) -> str:
    """Run `snippet` under exec (as uid 65534) and, where possible, on the live kernel; assert
    both outputs are equal; the output."""
    code = PRELUDE + textwrap.dedent(snippet)
    sim_code, sim_out = run_snippet_exec(code)
    assert sim_code == 0, sim_out
    if live_unavailable_reason() is None:
        live_code, live_out = run_snippet_live(code)
        assert live_code == 0, live_out
        assert sim_out.splitlines() == live_out.splitlines()
    return sim_out


def test_map_commands_and_their_errnos() -> None:
    out = differential(
        """
        fd = new_map(A.MapType.HASH, 4, 8, 4)
        key, value, out = ctypes.c_uint32(7), ctypes.c_uint64(0x1122), ctypes.c_uint64()
        say("update", outcome(lambda: run(A.BpfCmd.MAP_UPDATE_ELEM, elem(fd, key, value))))
        say("lookup", outcome(lambda: run(A.BpfCmd.MAP_LOOKUP_ELEM, elem(fd, key, out))),
            hex(out.value))
        say("noexist", outcome(lambda: run(A.BpfCmd.MAP_UPDATE_ELEM, elem(fd, key, value, 1))))
        other = ctypes.c_uint32(8)
        say("missing", outcome(lambda: run(A.BpfCmd.MAP_LOOKUP_ELEM, elem(fd, other, out))))
        bad = A.MapElemAttr(map_fd=fd, key=8, value=ctypes.addressof(out))
        say("bad key pointer", outcome(lambda: run(A.BpfCmd.MAP_LOOKUP_ELEM, bad)))
        big = bytearray(8192)
        say("size beyond a page", outcome(lambda: backend.bpf(A.BpfCmd.MAP_LOOKUP_ELEM, big,
                                                             4097)))
        tail = bytearray(4096)
        tail[4095] = 1
        say("tail", outcome(lambda: backend.bpf(A.BpfCmd.MAP_LOOKUP_ELEM, tail, 4096)))
        say("unknown command", outcome(lambda: backend.bpf(999, bytearray(64), 64)))
        say("stdin", outcome(lambda: run(A.BpfCmd.MAP_LOOKUP_ELEM, elem(0, key, out))))
        say("not open", outcome(lambda: run(A.BpfCmd.MAP_LOOKUP_ELEM, elem(1000, key, out))))
        get_next = A.GetIdAttr(start_id=0x7FFFFFF0)
        say("next id", outcome(lambda: run(A.BpfCmd.MAP_GET_NEXT_ID, get_next)))
        first = ctypes.c_uint32()
        nk = A.MapElemAttr(map_fd=fd, key=0, value=ctypes.addressof(first))
        say("first key", outcome(lambda: run(A.BpfCmd.MAP_GET_NEXT_KEY, nk)), first.value)
        say("delete", outcome(lambda: run(A.BpfCmd.MAP_DELETE_ELEM, elem(fd, key))))
        say("delete again", outcome(lambda: run(A.BpfCmd.MAP_DELETE_ELEM, elem(fd, key))))
        info = A.BpfMapInfo()
        info_attr = A.InfoByFdAttr(bpf_fd=fd, info_len=ctypes.sizeof(info),
                                   info=ctypes.addressof(info))
        run(A.BpfCmd.OBJ_GET_INFO_BY_FD, info_attr)
        again = run(A.BpfCmd.MAP_GET_FD_BY_ID, A.GetIdAttr(start_id=info.id))
        say("by id while open", info.key_size, info.value_size, info_attr.info_len > 0)
        os.close(again)
        os.close(fd)
        say("closed", outcome(lambda: run(A.BpfCmd.MAP_LOOKUP_ELEM, elem(fd, key, out))))
        say("by id after the last close",
            outcome(lambda: run(A.BpfCmd.MAP_GET_FD_BY_ID, A.GetIdAttr(start_id=info.id))))
        attr = A.PerfEventAttr(type=1, size=1, config=9)
        say("perf size", outcome(lambda: backend.perf_event_open(attr, 0, -1, -1, 8)),
            attr.size)
        """
    )
    assert "update ok 0" in out and "lookup ok 0 0x1122" in out
    assert "next id ENOENT" in out and "bad key pointer EFAULT" in out


def test_fds_work_natively_dup_fork_and_scm_rights() -> None:
    differential(
        """
        fd = new_map(A.MapType.ARRAY, 4, 4, 2)
        key, out = ctypes.c_uint32(1), ctypes.c_uint32()

        def put(fd, v):
            run(A.BpfCmd.MAP_UPDATE_ELEM, elem(fd, key, ctypes.c_uint32(v)))

        def get(fd):
            run(A.BpfCmd.MAP_LOOKUP_ELEM, elem(fd, key, out))
            return out.value

        put(fd, 100)
        copy = os.dup(fd)
        os.close(fd)
        say("through the dup", get(copy))
        say("named bpf-map", "bpf-map" in os.readlink(f"/proc/self/fd/{copy}"))
        pid = os.fork()
        if pid == 0:
            put(copy, 200)
            os._exit(0)
        os.waitpid(pid, 0)
        say("after the forked child", get(copy))
        here, there = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            _, fds, _, _ = socket.recv_fds(there, 1, 1)
            put(fds[0], 300 + get(fds[0]))
            os._exit(0)
        socket.send_fds(here, [b"x"], [copy])
        os.waitpid(pid, 0)
        say("after SCM_RIGHTS", get(copy))
        with open(f"/proc/self/fdinfo/{copy}") as info:
            keep = ("map_type", "key_size", "value_size", "max_entries", "memlock", "frozen")
            for line in info:
                if line.split(":")[0] in keep:
                    say(line.strip())
        """
    )


def test_mmapable_array_through_the_programs_own_mapping() -> None:
    out = differential(
        """
        fd = new_map(A.MapType.ARRAY, 4, 8, 512, flags=A.MapFlag.MMAPABLE)
        m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        struct.pack_into("<Q", m, 8 * 5, 0xABCD)
        key, out = ctypes.c_uint32(5), ctypes.c_uint64()
        run(A.BpfCmd.MAP_LOOKUP_ELEM, elem(fd, key, out))
        say("written through the mapping, looked up", hex(out.value))
        run(A.BpfCmd.MAP_UPDATE_ELEM, elem(fd, ctypes.c_uint32(6), ctypes.c_uint64(0x77)))
        say("updated, read through the mapping", hex(struct.unpack_from("<Q", m, 48)[0]))
        freeze = A.MapElemAttr(map_fd=fd)
        say("freeze while mapped writable", outcome(lambda: run(A.BpfCmd.MAP_FREEZE, freeze)))
        hash_fd = new_map(A.MapType.HASH, 4, 8, 4)
        say("map a hash", outcome(lambda: backend.mmap(hash_fd, 4096, 3, 1, 0) and 0))
        say("beyond the array", outcome(lambda: backend.mmap(fd, 8192, 1, 1, 0) and 0))
        say("private", outcome(lambda: backend.mmap(fd, 4096, 1, 2, 0) and 0))
        """
    )
    assert "looked up 0xabcd" in out and "read through the mapping 0x77" in out


def test_a_full_fd_table_refuses_new_objects_with_emfile() -> None:
    differential(
        """
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        opened = []
        try:
            while True:
                opened.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            say("filling", errno.errorcode[exc.errno])
        say("map create", outcome(lambda: new_map(A.MapType.ARRAY, 4, 4, 1)))
        os.close(opened.pop())
        say("map create with one free", outcome(lambda: new_map(A.MapType.ARRAY, 4, 4, 1) > 0))
        """
    )


def test_ioctl_on_a_real_fd_never_reaches_the_simulator() -> None:
    differential(
        """
        r, w = os.pipe()
        os.write(w, b"abc")
        say("FIONREAD", struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"xxxx"))[0])
        say("perf ioctl on a pipe", outcome(lambda: fcntl.ioctl(r, 0x2400, 0)))
        """
    )


def test_objects_live_as_long_as_a_file_or_mapping_of_them() -> None:
    snippet = PRELUDE + textwrap.dedent(
        """
        import sys
        fd = new_map(A.MapType.ARRAY, 4, 8, 512, flags=A.MapFlag.MMAPABLE)
        copy = os.dup(fd)
        m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
        say("created")
        sys.stdin.readline()
        os.close(fd)
        os.close(copy)
        say("closed")
        sys.stdin.readline()
        m.close()
        say("unmapped")
        sys.stdin.readline()
        """
    )
    path = snippet_file(shared_dir(), snippet)
    running = Running([sys.executable, str(BPF_CHILD), "--drop", str(path)])
    assert running.line() == "created"
    assert running.kernel.live_objects() == {"ArrayMap": 1}
    running.send("")
    assert running.line() == "closed"
    time.sleep(0.2)
    assert running.kernel.live_objects() == {"ArrayMap": 1}, "the mapping keeps it"
    running.send("")
    assert running.line() == "unmapped"
    assert _eventually(lambda: running.kernel.live_objects() == {})
    running.send("")
    assert running.finish()[0] == 0


def _eventually(check: object, timeout: float = 10.0) -> bool:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_perf_ring_is_read_through_the_programs_mapping_after_an_epoll_wakeup() -> None:
    snippet = textwrap.dedent(
        """
        import sys
        attr = abi.PerfEventAttr(type=1, size=ctypes.sizeof(abi.PerfEventAttr), config=10,
                                 sample_type=1 << 10, sample_period=1, wakeup_events=1)
        fd = backend.perf_event_open(attr, -1, 0, -1, 8)
        ring = mmap.mmap(fd, 2 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        ep = select.epoll()
        ep.register(fd, select.EPOLLIN)
        say("ready", os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:perf_event_ring"))
        events = ep.poll(30)
        head = struct.unpack_from("<Q", ring, 1024)[0]
        size = struct.unpack_from("<H", ring, 4096 + 6)[0]
        raw_size = struct.unpack_from("<I", ring, 4096 + 8)[0]
        raw = bytes(ring[4096 + 12: 4096 + 12 + raw_size])
        say("woken", len(events), "head", head, "record", size, raw)
        say("second wait", len(ep.poll(0.2)))
        """
    )
    path = snippet_file(shared_dir(), snippet)
    running = Running([sys.executable, str(BPF_CHILD), "--drop", str(path)])
    assert running.line() == "ready True"
    with running.session.lock:
        (event,) = [o for o in running.session.fds.objects() if isinstance(o, PerfEvent)]
        assert perf_output(running.kernel, event, b"hello!!!") == 0
    assert running.line() == "woken 1 head 24 record 24 b'hello!!!\\x00\\x00\\x00\\x00'"
    assert running.line() == "second wait 0"
    assert running.finish()[0] == 0
    assert running.kernel.live_objects() == {}


def test_the_simulated_files_are_the_programs() -> None:
    snippet = textwrap.dedent(
        """
        for path in ("/sys/devices/system/cpu/possible", "/sys/devices/system/cpu/online",
                     "/proc/sys/kernel/osrelease",
                     "/sys/kernel/tracing/events/syscalls/sys_enter_getpid/id"):
            with open(path) as f:
                say(path, f.read().strip())
        statfs = ctypes.create_string_buffer(120)
        ctypes.CDLL(None).statfs(b"/sys/fs/bpf", statfs)
        say(struct.unpack_from("<q", statfs)[0] == 0xCAFE4A11)
        try:
            open("/sys/devices/system/cpu/online", "w")
        except OSError as exc:
            say("write", errno.errorcode[exc.errno])
        """
    )
    path = snippet_file(shared_dir(), snippet)
    running = Running(
        [sys.executable, str(BPF_CHILD), "--drop", str(path)],
        KernelConfig(version="6.1", cpus=4, online_cpus=3),
    )
    code, out = running.finish()
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:3] == [
        "/sys/devices/system/cpu/possible 0-3",
        "/sys/devices/system/cpu/online 0-2",
        "/proc/sys/kernel/osrelease 6.1.0-kernelsim",
    ]
    assert lines[3].startswith("/sys/kernel/tracing/events/syscalls/sys_enter_getpid/id ")
    assert lines[4:] == ["True", "write EACCES"]


def test_exit_codes_are_the_programs() -> None:
    assert ExecSession(["sh", "-c", "exit 3"], user=NOBODY).serve() == 3
    assert ExecSession(["sh", "-c", "kill -9 $$"], user=NOBODY).serve() == 128 + 9
    assert ExecSession(["/nonexistent/program"]).serve() == 127


OUTER_FILTER = textwrap.dedent(
    """
    import ctypes, sys
    from kernelsim.exec.seccomp import SOCK_FILTER, native_arch
    from kernelsim.exec.session import ExecSession
    from kernelsim.exec.launch import ExecRefused
    arch = native_arch()
    program = b"".join([
        SOCK_FILTER.pack(0x20, 0, 0, 0),                      # ld nr
        SOCK_FILTER.pack(0x15, 0, 1, arch.bpf),               # jeq bpf
        SOCK_FILTER.pack(0x06, 0, 0, 0x00050000 | 1),         # ret ERRNO(EPERM)
        SOCK_FILTER.pack(0x06, 0, 0, 0x7FFF0000),             # ret ALLOW
    ])
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(program, len(program))
    assert libc.prctl(38, 1, 0, 0, 0) == 0
    assert libc.prctl(22, 2, ctypes.byref(Prog(4, ctypes.addressof(buf)))) == 0
    try:
        ExecSession(["true"])
    except ExecRefused as exc:
        print("refused:", exc)
    """
)


def test_refuses_to_start_under_a_profile_that_denies_bpf() -> None:
    done = subprocess.run(
        [sys.executable, "-c", OUTER_FILTER], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: bpf() did not reach the supervisor")
    assert "outer seccomp profile" in done.stdout
