"""The pass@k sandbox holds with its audit hook switched off: the kernel is the boundary (issue 15).

benchbridge runs as root here and in CI, where the kernel ignores RLIMIT_NPROC and file permissions,
so the child must drop to a uid of its own. Each program below first switches the prelude's audit hook
off from inside (its checks read the prelude's globals) and imports ctypes, which the hook would refuse:
what happens next is the kernel's doing alone.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from bridges.scoring.sandbox import Limits, run_test

# Generated code that disables the audit hook: the prelude is sys.modules["__main__"] and its hook looks
# its sets and `_inside` up there on every event. `import ctypes` succeeding shows the hook is off.
HOOK_OFF = """\
import sys
_prelude = sys.modules["__main__"]
class _Everything:
    def __contains__(self, item):
        return True
_prelude._PROC = frozenset()
_prelude._PATHS = _Everything()
_prelude._inside = lambda path: True
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
"""


def live_processes_named(name: str) -> list[int]:
    """Pids of processes (zombies aside) whose comm is `name`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile
            continue
        if comm == name and state != "Z":
            found.append(int(pid))
    return found


def test_generated_code_runs_unprivileged() -> None:
    program = "import os\nassert os.getuid() != 0 and os.geteuid() != 0 and os.getgid() != 0, os.getuid()\n"
    program += "assert os.getgroups() in ([], [os.getgid()]), os.getgroups()\n"
    result = run_test(program, Limits(timeout_s=5))
    assert result.passed, result.reason


def test_fork_loop_past_the_audit_hook_stops_at_rlimit_nproc() -> None:
    name = "bb" + uuid.uuid4().hex[:12]  # each child renames itself, so a survivor can be found afterwards
    program = (
        HOOK_OFF
        + f"""
forks = 0
for _ in range(100):
    pid = libc.fork()
    if pid == 0:
        libc.prctl(15, {name.encode()!r}, 0, 0, 0)  # PR_SET_NAME
        libc.setsid()  # out of the process group the parent kills
        libc.sleep(20)
        os._exit(0)
    if pid < 0:
        break
    forks += 1
error = ctypes.get_errno()
assert (forks, error) == (7, errno.EAGAIN), (forks, errno.errorcode.get(error))
"""
    )
    result = run_test(program, Limits(timeout_s=10, processes=8))
    # 8 processes of the child's uid: itself and 7 children; the 8th fork is refused (EAGAIN)
    assert result.passed, result.reason
    deadline = time.monotonic() + 3  # SIGKILL is sent; dying takes the victims a moment on a loaded machine
    while live_processes_named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_processes_named(name) == []  # the children that left the group were killed too


def test_files_root_alone_may_touch_stay_out_of_reach(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    secret = private / "secret.txt"
    secret.write_text("token", "utf-8")
    target = private / "written.txt"
    program = (
        HOOK_OFF
        + f"""
for what, attempt in (("write", lambda: open({str(target)!r}, "w")), ("read", lambda: open({str(secret)!r}))):
    try:
        attempt()
    except PermissionError:
        continue
    raise SystemExit("could " + what)
fd = libc.open({str(target).encode()!r}, os.O_WRONLY | os.O_CREAT, 0o644)
assert fd == -1 and ctypes.get_errno() == errno.EACCES, (fd, ctypes.get_errno())
"""
    )
    result = run_test(program, Limits(timeout_s=5))
    assert result.passed, result.reason
    assert not target.exists() and secret.read_text("utf-8") == "token"


def test_a_real_time_signal_fails_that_test_only() -> None:
    # A signal without a name in the signal module (SIGRTMIN+n) used to raise ValueError out of run_test,
    # ending the whole scorer instead of failing this one test.
    result = run_test("import signal\nsignal.raise_signal(signal.SIGRTMIN + 6)\n", Limits(timeout_s=5))
    assert not result.passed
    number = int(signal.SIGRTMIN) + 6
    assert result.reason == f"signal {number} (signal {number})"


def test_what_the_test_leaves_in_shared_temp_folders_is_removed() -> None:
    # Files the test's uid writes to /tmp or /dev/shm would outlive it (RAM in /dev/shm; a well-known path root
    # uses later; a later test reusing the uid). Written past the audit hook: only the cleanup removes them.
    name = "bb-left-" + uuid.uuid4().hex[:12]
    program = HOOK_OFF + "".join(
        f"open({folder + '/' + name!r}, 'w').write('x')\nos.mkdir({folder + '/' + name + '.d'!r})\n"
        for folder in ("/tmp", "/dev/shm")
    )
    result = run_test(program, Limits(timeout_s=5))
    assert result.passed, result.reason
    left = [p for folder in ("/tmp", "/dev/shm") for p in Path(folder).glob(name + "*")]
    assert left == []
