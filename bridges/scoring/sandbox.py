"""Running generated code against one test, in a throw-away process that cannot harm the machine.

Each test is its own child process (so one test's infinite loop or crash fails that test only):

- a fresh temporary directory as cwd, removed afterwards; `python -I` (no user site, no PYTHONPATH,
  no cwd on the path) with an empty environment; stdout/stderr go to unnamed files of the parent's;
- kernel limits (`resource`): CPU seconds, address space (a 10 GB allocation is a MemoryError),
  file size (output beyond the cap kills the child), process count (RLIMIT_NPROC), core dumps off;
- an unprivileged user. When benchbridge runs as root (a container, CI), the kernel ignores
  RLIMIT_NPROC and file permissions for root, so the child drops to a uid/gid of its own (no
  supplementary groups) after the limits and the network namespace are set: the sandbox directory is
  given to that uid, files root alone may read or write (a 0700 home, the response cache under it) are
  refused by the kernel, and a fork bomb stops at RLIMIT_NPROC. Each child gets a different uid from a
  range no account uses, so one test's processes count against its own limit only, and every process of
  that uid is killed afterwards, even one that left the process group, and what it left at the top of /tmp,
  /var/tmp and /dev/shm is removed. When the interpreter sits under
  a folder that uid may not enter (pyenv in a 0700 /root), the child gets a mount namespace in which
  that folder is an empty tmpfs with only the interpreter's folders bound back in: the rest of that home
  is not even visible. Where root may not make namespaces (a container without CAP_SYS_ADMIN) the child
  only drops the uid, and if the interpreter is then out of its reach it runs as root as before (the
  audit hook alone; `pass_at_k`'s identity says which). As a non-root user the child keeps the user's
  uid (the kernel already enforces the limits);
- a wall-clock timeout, after which the child's whole process group is killed;
- no network: a new, empty network namespace (only a loopback that is down). As root it is made in the
  child itself (no user namespace); otherwise, where the kernel allows unprivileged user namespaces,
  `unshare -cn` (the uid mapped to itself; `-rn` on util-linux older than 2.38); in every case an audit
  hook installed before the generated code runs refuses sockets, process creation (fork, exec,
  subprocess, os.system) and writes/removals outside the sandbox directory.

The audit hook stops accidents (code that opens a socket, forks, deletes a file), not a determined
attacker: generated code can switch it off (its checks read the prelude's globals) and then reach libc
through ctypes. The kernel limits, the unprivileged uid and the namespace are what holds then. What the
uid may still do is what any local user may: read world-readable files (the project itself when its
folders are 0755) and write world-writable ones (/tmp, /dev/shm). Run untrusted code from unknown
sources in a container or VM as well.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bridges._errors import BenchbridgeError

# The child's prelude: installed before any generated code runs. Kept tiny and stdlib-only.
_PRELUDE = r"""
import os, sys
_ROOT = os.path.realpath(os.getcwd())
_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PROC = {"os.fork", "os.forkpty", "os.system", "subprocess.Popen", "os.posix_spawn", "os.exec", "os.spawn",
         "os.kill", "os.killpg", "pty.spawn"}
_PATHS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
          "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

def _inside(p):
    if isinstance(p, int):
        return True
    try:
        p = os.fsdecode(p)
    except TypeError:
        return False
    real = os.path.realpath(p)
    return real == _ROOT or real.startswith(_ROOT + os.sep)

def _hook(event, args):
    if event.startswith("socket."):
        raise PermissionError("sandbox: network access is disabled")
    if event in _PROC:
        raise PermissionError("sandbox: starting processes is disabled (" + event + ")")
    if event == "open" and len(args) >= 3:
        path, mode, flags = args[0], args[1], args[2]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _W)
        if writing and not _inside(path):
            raise PermissionError("sandbox: writing outside the sandbox directory is disabled: %r" % (path,))
    elif event in _PATHS:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a):
                raise PermissionError("sandbox: changing files outside the sandbox directory is disabled")
    elif event == "import" and args and args[0] in ("ctypes", "_ctypes", "_posixsubprocess", "multiprocessing"):
        raise ImportError("sandbox: module " + args[0] + " is disabled")

with open("program.py", encoding="utf-8") as _fh:
    _SOURCE = _fh.read()
sys.addaudithook(_hook)
del _hook
_code = compile(_SOURCE, "program.py", "exec")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0  # wall clock per test
    cpu_s: int = 5
    memory_mb: int = 1024  # address space
    output_kb: int = 256  # stdout + stderr, each
    processes: int = 64  # RLIMIT_NPROC: processes of the child's uid (its own uid when benchbridge is root)


@dataclass(frozen=True)
class TestResult:
    passed: bool
    reason: str = ""  # why it failed: the exception's last line, "timeout", "killed by SIGXFSZ"...


# Uids (and gids) for children when benchbridge is root: above any account's or a container runtime's
# subordinate ranges, below 2**31. A child's uid is this + the parent's pid * 256 + a counter mod 256 (pids are
# below 2**22, Linux's largest pid_max): distinct between processes, and for the children of one process running
# at once, reused only after its processes were killed.
SANDBOX_UID_BASE = 1_000_000_000
_UIDS = itertools.count()
_TRUE = shutil.which("true") or "/bin/true"
# <sched.h>, <sys/mount.h>, <linux/prctl.h>
_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 8192, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS = 38


def _sandbox_uid() -> int:
    return SANDBOX_UID_BASE + (os.getpid() << 8) + (next(_UIDS) & 0xFF)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    # Looked up now, in the parent: dlsym in a child forked beside other threads could deadlock on the loader lock.
    _ = libc.unshare, libc.mount, libc.prctl
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(_libc().mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")


Cover = tuple[tuple[str, tuple[str, ...]], ...]  # (a folder only root may enter, the interpreter's folders in it)


def _cover_plan() -> Cover:
    """The folders on the way to the interpreter that the child's uid may not enter (a 0700 /root holding
    pyenv): each is covered by an empty tmpfs in the child's mount namespace, with only the interpreter's
    own folders bound back in, so the child runs Python and still sees nothing else of that home."""
    needed = {
        os.path.realpath(p)
        for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.realpath(sys.executable))
    }
    needed = {os.path.dirname(p) if os.path.isfile(p) else p for p in needed}
    tops = sorted(p for p in needed if not any(p.startswith(q + os.sep) for q in needed))
    plan: dict[str, list[str]] = {}
    for p in tops:
        parts = Path(p).parts
        for n in range(2, len(parts)):  # the ancestors of p below "/"
            folder = os.path.join(*parts[:n])
            try:
                searchable = os.stat(folder).st_mode & 0o001
            except OSError:
                break
            if not searchable:
                plan.setdefault(folder, []).append(p)
                break
    return tuple((folder, tuple(keep)) for folder, keep in sorted(plan.items()))


def _cover(plan: Cover, stage: str) -> None:  # in the child, as root
    _check(_libc().unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # first: none of the mounts below reaches the host
    os.umask(0o022)
    n = 0
    for folder, keep in plan:
        staged = []
        for path in keep:  # bound aside first: the tmpfs hides them
            at = os.path.join(stage, str(n))
            n += 1
            os.mkdir(at)
            _mount(path, at, None, _MS_BIND | _MS_REC)
            staged.append((path, at))
        _mount("tmpfs", folder, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
        for path, at in staged:
            os.makedirs(path, exist_ok=True)
            _mount(at, path, None, _MS_MOVE)


def _become(uid: int) -> None:  # in the child, as root: the unprivileged uid, for good (real, effective, saved)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


@dataclass(frozen=True)
class _Isolation:
    own_uid: bool  # benchbridge is root: each child runs as a uid of its own
    netns_in_child: bool  # root: the child makes its network namespace itself before dropping root
    prefix: tuple[str, ...] = ()  # else `unshare -cn --` (or -rn): a user namespace with an empty network
    cover: Cover = ()  # root: see _cover_plan

    @property
    def network(self) -> bool:
        return self.netns_in_child or bool(self.prefix)


def _enter(iso: _Isolation, uid: int | None, stage: str) -> None:
    """In the child: what needs root (the mount and network namespaces), then the child's own uid."""
    if iso.cover:
        _cover(iso.cover, stage)
    if iso.netns_in_child:
        _check(_libc().unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    if uid is not None:
        _become(uid)
        # No set-user-ID program (su, mount...) gives the child back the privileges it just dropped. (Only here:
        # as a user, no_new_privs could keep `unshare` from the profile that lets it make a user namespace.)
        _check(_libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _probe(cmd: list[str], preexec: Callable[[], object] | None) -> bool:
    try:
        done = subprocess.run(  # noqa: S603 - our own fixed command
            cmd,
            capture_output=True,
            timeout=10,
            check=False,
            preexec_fn=preexec,  # noqa: PLW1509 - syscalls only
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _works(iso: _Isolation, uid: int | None) -> bool:
    """Whether Python starts in a child isolated so (and, as root, not as root)."""
    check = [*iso.prefix, sys.executable, "-I", "-S", "-c", "import os, sys; sys.exit(os.geteuid() == 0)"]
    if uid is None:
        check = [*iso.prefix, _TRUE]
    with tempfile.TemporaryDirectory(prefix="bb-sandbox-probe-") as stage:
        return _probe(check, lambda: _enter(iso, uid, stage))


@functools.cache
def _isolation() -> _Isolation:
    """How children are isolated on this machine, found once by trying (kernels and containers differ)."""
    _libc()
    root = os.geteuid() == 0
    uid = _sandbox_uid() if root else None
    exe = shutil.which("unshare")
    # -c (the uid mapped to itself) needs util-linux 2.38; as root it runs after the drop to the child's uid,
    # so the user namespace is an unprivileged one.
    prefixes = [(exe, flags, "--") for flags in ("-cn", "-rn") if exe]
    candidates = [_Isolation(True, True, cover=_cover_plan())] if root else []
    candidates += [_Isolation(root, False, prefix) for prefix in prefixes] + [_Isolation(root, False)]
    if root:  # no namespaces, no drop possible (the interpreter out of the uid's reach): as before, root
        candidates += [_Isolation(False, False, prefix) for prefix in prefixes] + [_Isolation(False, False)]
    for iso in candidates:
        if _works(iso, uid if iso.own_uid else None):
            return iso
    return candidates[-1]


def network_isolated() -> bool:
    return _isolation().network


def runs_as_own_uid() -> bool:
    """Whether children drop to a uid of their own (benchbridge runs as root and could)."""
    return _isolation().own_uid


def _limit(limits: Limits, iso: _Isolation, uid: int | None, stage: str) -> None:  # in the child, fork to exec
    os.setsid()
    mem = limits.memory_mb * 1024 * 1024
    out = limits.output_kb * 1024
    for res, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_FSIZE, out),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, limits.processes),
    ):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):  # e.g. a hard limit already lower: keep it
            pass
    # Root last, after the limits and the namespaces (both need it): from here on the kernel applies
    # RLIMIT_NPROC and file permissions to the child.
    _enter(iso, uid, stage)


def _tail(fh: IO[bytes], chars: int = 300) -> str:
    fh.seek(0)
    text = fh.read().decode("utf-8", errors="replace")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-chars:] if lines else ""


def run_test(program: str, limits: Limits = Limits()) -> TestResult:
    """Runs `program` (the generated code with one test appended) in a sandbox: passed when it exits 0."""
    iso = _isolation()
    uid = _sandbox_uid() if iso.own_uid else None
    # stdout/stderr: unnamed files the child gets as descriptors only (a file it could replace by a link
    # to a file root alone may read would otherwise be read back into the failure reason).
    with (
        tempfile.TemporaryDirectory(prefix="bb-sandbox-") as tmp,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        root = Path(tmp)
        (root / "program.py").write_text(program, encoding="utf-8")
        (root / "prelude.py").write_text(_PRELUDE, encoding="utf-8")
        stage = root / ".mounts"  # mount points the child's setup uses (empty afterwards)
        stage.mkdir()
        if uid is not None:
            for path in (root, root / "program.py", root / "prelude.py"):
                os.chown(path, uid, uid)
        cmd = [*iso.prefix, sys.executable, "-I", "-B", "prelude.py"]
        try:
            proc = subprocess.Popen(  # noqa: S603 - the command is ours; the program is data in a file
                cmd,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"},
                preexec_fn=lambda: _limit(limits, iso, uid, str(stage)),  # noqa: PLW1509 - syscalls, no locks
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            who = f"as uid {uid}" if uid is not None else "as this user"
            hint = ""
            if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.ENOENT, errno.EPERM):
                hint = f"; the interpreter {sys.executable} and its folders must be readable and executable by others"
            raise BenchbridgeError(f"sandbox: cannot start a test process {who}: {exc}{hint}") from None
        try:
            try:
                code = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                return TestResult(False, f"timeout after {limits.timeout_s:g} s")
        finally:
            _kill(proc, uid, tmp)  # anything the test left behind: its group, and every process of its uid
        if code == 0:
            return TestResult(True)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal (SIGRTMIN+n) has no name
                name = f"signal {-code}"
            why = {"SIGXCPU": "CPU time limit", "SIGXFSZ": "output size limit", "SIGKILL": "killed"}.get(name, name)
            return TestResult(False, f"{why} ({name})")
        return TestResult(False, _tail(err) or f"exit status {code}")


def _kill_uid(uid: int) -> None:
    """SIGKILL to every process of `uid` (one that called setsid is out of the group), sent by a helper that
    becomes `uid`: kill(-1) reaches exactly the processes the sender's uid owns, all in one pass of the
    kernel's process list, so a fork loop cannot outrun it."""

    def helper() -> None:
        _become(uid)
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:  # none left
            pass

    _probe([_TRUE], helper)


# World-writable folders a test's uid may have written to outside its own directory.
_SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")


def _remove_owned_by(uid: int, keep: str) -> None:
    """Removes what `uid` left at the top of the shared temporary folders (after its processes are killed),
    except `keep` (the test's own directory, removed by its owner): a later test reusing the uid, or root
    creating a well-known path there, finds nothing of it."""
    for folder in _SHARED_TMP:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.path == keep or entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)  # rmtree does not follow symlinks
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


def _kill(proc: subprocess.Popen[bytes], uid: int | None, own_dir: str) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        _kill_uid(uid)
        _remove_owned_by(uid, own_dir)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
