"""bpffs mounts and OBJ_PIN / OBJ_GET.

Theory of operation
-------------------
`Bpffs` is the kernel's set of bpf filesystems: each mount (one at /sys/fs/bpf from boot;
`mount(path)` adds one, as `mount -t bpf bpf DIR` does; a bpffs the host has mounted, as a test
does with `mount -t bpf`, becomes an empty simulated mount at the same place when a path below
it is first used) is a tree of directories and pinned objects. A pin holds one reference of
its object (map, program or link); removing the file (`unlink`, or `unmount` of the whole
tree) drops it. Paths outside every simulated mount are the host's: the simulator only looks at
them (exists, is a directory) to give the kernel's errno.

OBJ_PIN (bpf_obj_pin, bpf_obj_do_pin), in order:

1. file_flags other than BPF_F_PATH_FD (6.5; none before), or path_fd without that flag: EINVAL;
2. bpf_fd must be a map, program or link fd: EINVAL otherwise, even when not open;
3. the path (getname: EFAULT, ENAMETOOLONG past PATH_MAX, ENOENT when empty; relative paths
   start at path_fd with BPF_F_PATH_FD, else at the cwd) is created as user_path_create does:
   a missing parent folder: ENOENT; a file where a folder should be: ENOTDIR; an existing name,
   ".", ".." or "/": EEXIST; a name component over 255 bytes: ENAMETOOLONG;
4. a parent folder outside any bpffs: EPERM.

OBJ_GET (bpf_obj_get_user): bpf_fd non-zero, or file_flags beyond RDONLY|WRONLY|PATH_FD:
EINVAL; RDONLY with WRONLY: EINVAL; the path is looked up (ENOENT, ENOTDIR); anything but a
pinned object (a folder, a host file): EACCES; a link asked for RDONLY or WRONLY: EINVAL. Maps
get an fd of the asked access mode, programs and links as always.

As files (read_file / write_file): a pinned object reads and writes EIO (the kernel's bpffs
files open but have no read or write), a folder EISDIR.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from typing import TYPE_CHECKING, Final

from bpfsys.abi import BPF_F_PATH_FD, BpfCmd, MapFlag, ObjPinAttr
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import fail
from kernelsim.ids import default_mode, file_flag
from kernelsim.link import BpfLink
from kernelsim.maps.base import BpfMap
from kernelsim.objects import KernelObject
from kernelsim.prog.program import BpfProgram
from kernelsim.vfs import VirtualFile, normalize

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

DEFAULT_MOUNT: Final = "/sys/fs/bpf"
PATH_MAX: Final = 4096
NAME_MAX: Final = 255
PINNABLE: Final = (BpfMap, BpfProgram, BpfLink)


class Folder:
    """A bpffs directory: names to sub-folders and pinned objects."""

    def __init__(self) -> None:
        self.entries: dict[str, Folder | KernelObject] = {}

    def release_all(self) -> None:
        """Drop every pin below (the superblock goes away)."""
        for entry in self.entries.values():
            if isinstance(entry, Folder):
                entry.release_all()
            else:
                entry.put()
        self.entries.clear()


class Bpffs:
    """The kernel's bpf filesystems (see the module docstring)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.mounts: dict[str, Folder] = {}

    # -- mounts -------------------------------------------------------------------------------
    def mount(self, path: str) -> None:
        """`mount -t bpf bpf PATH`: a new, empty bpffs at PATH (over any earlier one there)."""
        path = normalize(path)
        old = self.mounts.get(path)
        if old is not None:
            old.release_all()
        self.mounts[path] = Folder()
        self.kernel.vfs.add_resolver(path, functools.partial(self._vfs_file, path))

    def unmount(self, path: str) -> None:
        """`umount PATH`: the bpffs and every pin in it go away."""
        root = self.mounts.pop(normalize(path), None)
        if root is None:
            fail(errno.EINVAL, f"{path} is not a bpffs mount")
        root.release_all()

    # -- path walking -------------------------------------------------------------------------
    def _mount_of(self, path: str) -> tuple[str, Folder] | None:
        """The deepest mount containing absolute `path` (a bpffs the host has mounted there
        becomes a simulated mount on first use)."""
        host = _host_bpffs_containing(path)
        if host is not None and not any(m == host for m in self.mounts):
            self.mount(host)
        best: tuple[str, Folder] | None = None
        for mount, root in self.mounts.items():
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) > len(best[0])):
                best = (mount, root)
        return best

    def _walk(self, path: str) -> Folder | KernelObject | None:
        """The entry at absolute `path` inside a mount: ENOTDIR through a pin; None when
        missing. Raises LookupError when `path` is outside every mount."""
        found = self._mount_of(path)
        if found is None:
            raise LookupError(path)
        mount, node = found
        rest = [p for p in path[len(mount) :].split("/") if p]
        entry: Folder | KernelObject = node
        for part in rest:
            if not isinstance(entry, Folder):
                fail(errno.ENOTDIR, f"{part!r} is below a pinned object")
            child = entry.entries.get(part)
            if child is None:
                return None
            entry = child
        return entry

    def _folder(self, path: str) -> Folder | None:
        """The folder at `path`: None outside every mount; ENOENT / ENOTDIR as a lookup."""
        try:
            entry = self._walk(path)
        except LookupError:
            _host_dir(path)
            return None
        if entry is None:
            fail(errno.ENOENT, f"no folder {path}")
        if not isinstance(entry, Folder):
            fail(errno.ENOTDIR, f"{path} is a pinned object")
        return entry

    def _create(self, path: str) -> tuple[Folder, str]:
        """user_path_create: the folder to create the last component of `path` in."""
        if path == "/" or path.endswith(("/.", "/..")):
            fail(errno.EEXIST, f"{path} names an existing folder")
        trailing = path.endswith("/")
        full = normalize(path)
        if full in self.mounts:
            fail(errno.EEXIST, f"{full} is a mount point")
        parent_path, name = full.rsplit("/", 1)
        parent = self._folder(parent_path or "/")
        if parent is None:
            exists = os.path.lexists(full)
            fail(
                errno.EEXIST if exists else (errno.ENOENT if trailing else errno.EPERM),
                f"{full} is {'taken' if exists else 'outside every bpffs'}",
            )
        if name in parent.entries:
            fail(errno.EEXIST, f"{full} exists")
        if trailing:
            fail(errno.ENOENT, f"{path}: a trailing slash names a folder that does not exist")
        return parent, name

    def lookup(self, path: str) -> Folder | KernelObject:
        """user_path_at: the entry at `path` (ENOENT / ENOTDIR; EACCES for a host file)."""
        full = normalize(path)
        try:
            entry = self._walk(full)
        except LookupError:
            _host_stat(full)
            fail(errno.EACCES, f"{full} is not on a bpffs")
        if entry is None:
            fail(errno.ENOENT, f"no {full}")
        if path.endswith("/") and not isinstance(entry, Folder):
            fail(errno.ENOTDIR, f"{full} is not a folder")
        return entry

    # -- pins ---------------------------------------------------------------------------------
    def pin(self, obj: KernelObject, path: str) -> None:
        """Pin `obj` at absolute `path`, taking a reference of it."""
        parent, name = self._create(path)
        obj.hold()
        parent.entries[name] = obj

    def get(self, path: str) -> KernelObject:
        """The object pinned at absolute `path` (EACCES for a folder or a host file)."""
        entry = self.lookup(path)
        if isinstance(entry, Folder):
            fail(errno.EACCES, f"{path} is a folder")
        return entry

    def pins(self) -> dict[str, KernelObject]:
        """Every pinned object by path."""
        found: dict[str, KernelObject] = {}

        def visit(prefix: str, folder: Folder) -> None:
            for name, entry in folder.entries.items():
                where = f"{prefix.rstrip('/')}/{name}"
                if isinstance(entry, Folder):
                    visit(where, entry)
                else:
                    found[where] = entry

        for mount, root in self.mounts.items():
            visit(mount, root)
        return found

    # -- file operations for tests (mkdir, unlink, rmdir, ls) ----------------------------------
    def mkdir(self, path: str) -> None:
        """mkdir(2) inside a bpffs (EEXIST, ENOENT, ENOTDIR; EPERM outside every bpffs)."""
        parent, name = self._create(path.rstrip("/") or "/")
        parent.entries[name] = Folder()

    def unlink(self, path: str) -> None:
        """unlink(2): remove a pin, dropping its reference (EISDIR for a folder)."""
        parent, name = self._existing(path)
        entry = parent.entries[name]
        if isinstance(entry, Folder):
            fail(errno.EISDIR, f"{path} is a folder")
        del parent.entries[name]
        entry.put()

    def rmdir(self, path: str) -> None:
        """rmdir(2): remove an empty folder (ENOTEMPTY, ENOTDIR, EBUSY for a mount)."""
        full = normalize(path)
        if full in self.mounts:
            fail(errno.EBUSY, f"{full} is a mount point")
        parent, name = self._existing(path)
        entry = parent.entries[name]
        if not isinstance(entry, Folder):
            fail(errno.ENOTDIR, f"{path} is not a folder")
        if entry.entries:
            fail(errno.ENOTEMPTY, f"{path} is not empty")
        del parent.entries[name]

    def listdir(self, path: str) -> list[str]:
        """The names in a bpffs folder, sorted."""
        entry = self.lookup(path)
        if not isinstance(entry, Folder):
            fail(errno.ENOTDIR, f"{path} is not a folder")
        return sorted(entry.entries)

    def _existing(self, path: str) -> tuple[Folder, str]:
        full = normalize(path)
        parent_path, name = full.rsplit("/", 1)
        parent = self._folder(parent_path or "/")
        if parent is None:
            fail(errno.EPERM, f"{full} is outside every simulated bpffs")
        if name not in parent.entries:
            fail(errno.ENOENT, f"no {full}")
        return parent, name

    # -- as files -----------------------------------------------------------------------------
    def _vfs_file(self, mount: str, rest: str) -> VirtualFile | None:
        full = normalize(f"{mount}/{rest}")
        try:
            entry = self._walk(full)
        except (LookupError, OSError):
            return None
        if entry is None:
            return None
        err = errno.EISDIR if isinstance(entry, Folder) else errno.EIO
        return VirtualFile(
            functools.partial(fail, err, f"{full} has no contents"),
            functools.partial(_refuse_write, err, full),
        )


def _host_bpffs_containing(path: str) -> str | None:
    """The deepest bpf filesystem the host has mounted that contains `path` (mountinfo)."""
    best: str | None = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mountinfo:
            lines = mountinfo.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest.startswith("bpf "):
            continue
        where = parts[4].replace("\\040", " ")
        inside = path == where or path.startswith(where.rstrip("/") + "/")
        if inside and (best is None or len(where) > len(best)):
            best = where
    return best


def _refuse_write(err: int, path: str, data: bytes) -> None:
    fail(err, f"{path} cannot be written")


def _host_stat(path: str) -> int:
    """The mode of host path `path`, or the lookup's ENOENT / ENOTDIR."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        fail(errno.ENOENT, f"no {path}")
    except NotADirectoryError:
        fail(errno.ENOTDIR, f"{path}: a file is in the way")


def _host_dir(path: str) -> None:
    """A host folder on the way to a pin outside every bpffs: ENOENT / ENOTDIR if it is not one."""
    if not stat.S_ISDIR(_host_stat(path)):
        fail(errno.ENOTDIR, f"{path} is not a folder")


# -- the bpf() commands ------------------------------------------------------------------------
def _pin_flags(kernel: Kernel) -> int:
    """The OBJ_PIN file_flags this kernel knows (BPF_F_PATH_FD since 6.5)."""
    return BPF_F_PATH_FD if ObjPinAttr.field_since("path_fd") <= kernel.profile.version else 0


def _check_path_fd(attr: ObjPinAttr) -> None:
    if not attr.file_flags & BPF_F_PATH_FD and attr.path_fd:
        fail(errno.EINVAL, "path_fd without BPF_F_PATH_FD")


def _user_path(kernel: Kernel, attr: ObjPinAttr) -> str:
    """getname() and the start folder: the absolute path OBJ_PIN / OBJ_GET name."""
    raw, terminated = kernel.memory.read_cstring(attr.pathname, PATH_MAX)
    if not terminated:
        fail(errno.ENAMETOOLONG, "pathname longer than PATH_MAX")
    if not raw:
        fail(errno.ENOENT, "empty pathname")
    path = os.fsdecode(raw)
    if any(len(part.encode()) > NAME_MAX for part in path.split("/")):
        fail(errno.ENAMETOOLONG, "a path component longer than NAME_MAX")
    if path.startswith("/"):
        return path
    base = _start_folder(kernel, attr.path_fd) if attr.file_flags & BPF_F_PATH_FD else os.getcwd()
    return f"{base.rstrip('/')}/{path}"


def _start_folder(kernel: Kernel, path_fd: int) -> str:
    if kernel.fds.lookup(path_fd) is not None:
        fail(errno.ENOTDIR, f"path_fd {path_fd} is not a folder")
    try:
        where = os.readlink(f"/proc/self/fd/{path_fd}")
        mode = os.fstat(path_fd).st_mode
    except OSError:
        fail(errno.EBADF, f"path_fd {path_fd} is not open")
    if not stat.S_ISDIR(mode):
        fail(errno.ENOTDIR, f"path_fd {path_fd} is not a folder")
    return where


@bpf_command(BpfCmd.OBJ_PIN)
def obj_pin(call: BpfCall) -> int:
    attr = call.attr_as(ObjPinAttr)
    kernel = call.kernel
    if attr.file_flags & ~_pin_flags(kernel):
        fail(errno.EINVAL, f"OBJ_PIN file_flags {attr.file_flags:#x}")
    _check_path_fd(attr)
    obj = kernel.fds.lookup(attr.bpf_fd)
    if not isinstance(obj, PINNABLE):
        fail(errno.EINVAL, f"fd {attr.bpf_fd} is not a map, program or link")
    kernel.subsystem(Bpffs).pin(obj, _user_path(kernel, attr))
    return 0


@bpf_command(BpfCmd.OBJ_GET)
def obj_get(call: BpfCall) -> int:
    attr = call.attr_as(ObjPinAttr)
    kernel = call.kernel
    allowed = MapFlag.RDONLY | MapFlag.WRONLY | _pin_flags(kernel)
    if attr.bpf_fd or attr.file_flags & ~allowed:
        fail(errno.EINVAL, f"OBJ_GET bpf_fd {attr.bpf_fd}, file_flags {attr.file_flags:#x}")
    _check_path_fd(attr)
    mode = file_flag(attr.file_flags)
    obj = kernel.subsystem(Bpffs).get(_user_path(kernel, attr))
    if isinstance(obj, BpfLink) and mode != os.O_RDWR:
        fail(errno.EINVAL, "links are opened read-write only")
    return kernel.fds.install_new_ref(obj, mode if isinstance(obj, BpfMap) else default_mode(obj))


def boot(kernel: Kernel) -> None:
    kernel.subsystem(Bpffs).mount(DEFAULT_MOUNT)
