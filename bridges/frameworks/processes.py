"""Every child process a bridge starts (public: third-party bridges use it too): one environment rule,
log files, excerpts, timeouts, stopping.

- Environment (`child_env`): this process's environment, the offline variables unless already set
  (no hub on an offline machine: a missing file fails at once instead of retrying), this venv's
  executables first on PATH, and PYTHONPATH = `import_paths()` (the project, the working directory,
  PYTHONPATH as it is now, and this process's own import entries outside the venv), so a `python`
  model's module imports in every framework's process as it does here.
- Output goes to a log file in the run folder; a failure quotes its last `EXCERPT_CHARS` characters,
  secrets masked (`excerpt`).
- Each child leads its own process group (`start_new_session=True`): a timeout, Ctrl-C or SIGTERM ends
  the child and everything it started (OpenCompass's task processes, say), not just the child.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bridges.records import ERROR_CHARS
from bridges.secrets import mask

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # bridges/frameworks/processes.py -> the project
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "USE_TF": "0"}
EXCERPT_CHARS = ERROR_CHARS  # one rule: a failure quotes this much of the end of a log
KILL_GRACE_S = 5.0  # SIGTERM first (a framework may clean up), then SIGKILL

_live: dict[int, subprocess.Popen[str]] = {}  # pid -> child, for the signal handlers
_lock = threading.RLock()  # reentrant: the signal handler may run while this thread holds it
_stopping = threading.Event()  # set by Ctrl-C/SIGTERM: no new child starts


class Interrupted(KeyboardInterrupt):
    """Raised in a thread that tries to start a child after Ctrl-C or SIGTERM."""


def import_paths() -> list[str]:
    """What this process can import that a fresh interpreter of the same venv could not: the project,
    the working directory, PYTHONPATH (as it is now: a caller may set it after start) and sys.path
    entries outside the venv and the base Python."""
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    paths = [str(PROJECT_ROOT), os.getcwd()]
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for entry in sys.path:
        p = Path(entry or os.getcwd()).resolve()
        if p.is_dir() and not any(p.is_relative_to(prefix) for prefix in prefixes):
            paths.append(str(p))
    return list(dict.fromkeys(paths))


def child_env(extra: Mapping[str, str] | None = None, *, drop: Iterable[str] = ()) -> dict[str, str]:
    """The environment of every framework process: see the module docstring. `drop`: variables the child
    must not see (least privilege); `extra`: set last, over everything."""
    dropped = set(drop)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    for name, value in OFFLINE.items():
        env.setdefault(name, value)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    env["PYTHONPATH"] = os.pathsep.join(import_paths())
    env["PYTHONUNBUFFERED"] = "1"  # log lines arrive as they are written, not when a buffer fills
    env.update(extra or {})
    return env


def excerpt(text: str, secret_names: Iterable[str] = (), chars: int = EXCERPT_CHARS) -> str:
    """The end of a log, where the error is, with every known secret (and `secret_names`' values) masked."""
    return mask(text[-chars:], secret_names)


def log_excerpt(path: Path, secret_names: Iterable[str] = (), chars: int = EXCERPT_CHARS) -> str:
    """`excerpt` of a log file ("" when there is none)."""
    try:
        return excerpt(path.read_text(encoding="utf-8", errors="replace"), secret_names, chars)
    except FileNotFoundError:
        return ""


@dataclass
class ChildResult:
    returncode: int | None  # None: killed after `timeout`
    log: Path
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def excerpt(self, secret_names: Iterable[str] = ()) -> str:
        return log_excerpt(self.log, secret_names)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the child's whole process group, SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is gone already
        try:
            proc.wait(timeout=wait)
            # The child is gone; its group may not be (a grandchild ignoring SIGTERM): next signal.
            os.killpg(proc.pid, 0)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass  # the group is gone already


def stop_all() -> None:
    """Ends every live child's process group, and no new child starts (Ctrl-C, SIGTERM).

    Sends signals only, never waits: it runs in a signal handler, which may have interrupted this very
    thread inside `Popen.wait` (holding the child's wait lock). SIGKILL follows from another thread.
    """
    _stopping.set()
    with _lock:
        pids = list(_live)
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)

    def finish() -> None:
        time.sleep(KILL_GRACE_S)
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)  # a group still there ignored SIGTERM (or is a zombie's)

    if pids:
        threading.Thread(target=finish, name="stop-children", daemon=True).start()


def live_pids() -> list[int]:
    with _lock:
        return sorted(_live)


def run_child(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    header: bool = True,
    append: bool = False,
    stdout: bool = True,
) -> ChildResult:
    """Runs `argv` in its own process group, output into `log`; `on_line` sees each output line.

    `stdout=False` sends the child's stdout to /dev/null (a framework that prints its whole result
    there) and only stderr to the log. On timeout the group is killed and `returncode` is None; on any
    exception here (Ctrl-C included) the group is killed before the exception goes on.
    """
    if _stopping.is_set():
        raise Interrupted("stopping: no new framework process starts")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("a" if append else "w", encoding="utf-8") as fh:
        if header:
            fh.write("$ " + shlex.join(str(a) for a in argv) + "\n")
            fh.flush()
        out: int | object = subprocess.PIPE if on_line else (fh if stdout else subprocess.DEVNULL)
        proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd,
            env=dict(env),
            stdout=out,  # type: ignore[arg-type]  # a file, PIPE or DEVNULL
            stderr=subprocess.STDOUT if stdout or on_line else fh,
            text=True,
            bufsize=1 if on_line else -1,
            start_new_session=True,  # its own group: killpg reaches whatever it starts
        )
        with _lock:
            _live[proc.pid] = proc
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout, expire) if timeout else None
        try:
            if timer:
                timer.daemon = True
                timer.start()
            if on_line:
                assert proc.stdout is not None
                for line in proc.stdout:
                    fh.write(line)
                    on_line(line)
            proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if timer:
                timer.cancel()
            with _lock:
                _live.pop(proc.pid, None)
    if _stopping.is_set() and proc.returncode != 0:
        raise Interrupted("stopped by Ctrl-C or SIGTERM")
    seconds = time.monotonic() - started
    if timed_out.is_set():
        return ChildResult(None, log, seconds, timed_out=True)
    return ChildResult(proc.returncode, log, seconds)


@contextlib.contextmanager
def stopping_children_on_signals() -> Iterator[None]:
    """While open (a run), Ctrl-C and SIGTERM first end every child's process group, then raise
    KeyboardInterrupt here: threads waiting on a child return at once, none starts a new one, and
    what the run stored stays. Outside the main thread (signals cannot be set there) it only cleans up."""
    _stopping.clear()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all()
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        yield
    except BaseException:
        stop_all()
        raise
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)
        _stopping.clear()
