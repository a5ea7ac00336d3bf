"""Running generated code against one test, in a throw-away process that cannot harm the machine.

Each test is its own child process (so one test's infinite loop or crash fails that test only):

- a fresh temporary directory as cwd, removed afterwards; `python -I` (no user site, no PYTHONPATH,
  no cwd on the path) with an empty environment;
- kernel limits (`resource`): CPU seconds, address space (a 10 GB allocation is a MemoryError),
  file size (stdout/stderr go to files, so output beyond the cap kills the child), process count
  (RLIMIT_NPROC, enforced by the kernel for non-root users), core dumps off;
- a wall-clock timeout, after which the child's whole process group is killed;
- no network: a new, empty network namespace (`unshare -rn`) where the kernel allows it, and in every
  case an audit hook installed before the generated code runs that refuses sockets, process creation
  (fork, exec, subprocess, os.system) and writes/removals outside the sandbox directory.

The audit hook stops accidents (code that opens a socket, forks, deletes a file), not a determined
attacker (Python audit hooks are not a security boundary); the kernel limits and the namespace are the
hard part. Run untrusted code from unknown sources in a container or VM as well.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
    processes: int = 64  # RLIMIT_NPROC (the kernel ignores it for root)


@dataclass(frozen=True)
class TestResult:
    passed: bool
    reason: str = ""  # why it failed: the exception's last line, "timeout", "killed by SIGXFSZ"...


@functools.cache
def _netns_prefix() -> tuple[str, ...]:
    """`unshare -rn` when the kernel lets us make a network namespace, else nothing (the hook still refuses sockets)."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    try:
        probe = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (exe, "-rn", "--") if probe.returncode == 0 else ()


def network_isolated() -> bool:
    return bool(_netns_prefix())


def _limit(limits: Limits) -> None:  # runs in the child between fork and exec
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


def _tail(path: Path, chars: int = 300) -> str:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-chars:] if lines else ""


def run_test(program: str, limits: Limits = Limits()) -> TestResult:
    """Runs `program` (the generated code with one test appended) in a sandbox: passed when it exits 0."""
    with tempfile.TemporaryDirectory(prefix="bb-sandbox-") as tmp:
        root = Path(tmp)
        (root / "program.py").write_text(program, encoding="utf-8")
        (root / "prelude.py").write_text(_PRELUDE, encoding="utf-8")
        cmd = [*_netns_prefix(), sys.executable, "-I", "-B", "prelude.py"]
        with (root / "stdout.txt").open("wb") as out, (root / "stderr.txt").open("wb") as err:
            proc = subprocess.Popen(  # noqa: S603 - the command is ours; the program is data in a file
                cmd,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"},
                preexec_fn=lambda: _limit(limits),  # noqa: PLW1509 - only resource calls, no threads held
                close_fds=True,
            )
            try:
                code = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return TestResult(False, f"timeout after {limits.timeout_s:g} s")
            finally:
                _kill(proc)  # anything the test left behind in its group
        if code == 0:
            return TestResult(True)
        if code < 0:
            name = signal.Signals(-code).name
            why = {"SIGXCPU": "CPU time limit", "SIGXFSZ": "output size limit", "SIGKILL": "killed"}.get(name, name)
            return TestResult(False, f"{why} ({name})")
        return TestResult(False, _tail(root / "stderr.txt") or f"exit status {code}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
