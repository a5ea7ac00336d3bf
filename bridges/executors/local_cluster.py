"""A Ray cluster of several nodes on this machine, for tests and `benchmarks/executor_scale.py`.

Each node is a real `ray start` (the head, then nodes joined with `--address`), on loopback ports picked
free, with its own CPUs and a custom resource named after it, a small object store, and a temporary
folder of its own. `stop()` ends exactly the processes this cluster started (found by that folder in
their command lines, ended by process id): never `ray stop`, which would end every Ray on the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

START_ATTEMPTS = 3
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; units return small archives
# A dead node is noticed in ~2 s instead of Ray's default ~30 s (health checks every 0.5 s, 3 misses).
FAST_FAILURE_DETECTION = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRayCluster:
    """`with LocalRayCluster([4, 4]) as cluster:` a head and one more node of 4 CPUs each; `cluster.address`."""

    def __init__(self, cpus: list[int], *, env: dict[str, str] | None = None) -> None:
        self.cpus = cpus
        self.env = {**os.environ, **FAST_FAILURE_DETECTION, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self._fresh()

    def _fresh(self) -> None:
        """A new folder and new ports: each start attempt's own, so a failed one leaves nothing in the way."""
        # A short root: Ray's socket paths under it must stay within the 107 characters of a Unix socket.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="bbray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.node_ports: list[int] = []  # each node's node-manager port: how its raylet is told apart

    def _ray(self, args: list[str]) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        out = subprocess.run([ray, "start", *args], env=self.env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")

    def start(self) -> LocalRayCluster:
        """Starts the nodes; a failed `ray start` is tried again (all nodes, new ports and folder) up to
        START_ATTEMPTS times: on a loaded machine a node may miss Ray's fixed 30 s to register with the GCS
        ("The current node timed out during startup"), and a port found free may be taken before Ray binds it."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start_nodes()
            except (RuntimeError, subprocess.TimeoutExpired):
                if attempt == START_ATTEMPTS:
                    raise
                self._fresh()  # _start_nodes stopped this attempt's processes and removed its folder
        raise AssertionError("unreachable")

    def _start_nodes(self) -> LocalRayCluster:
        try:
            for i, cpus in enumerate(self.cpus):
                node_port = free_port()
                self.node_ports.append(node_port)
                args = [
                    f"--num-cpus={cpus}",
                    f'--resources={{"node{i}": {cpus}}}',
                    f"--object-store-memory={OBJECT_STORE_BYTES}",
                    "--node-ip-address=127.0.0.1",
                    f"--node-manager-port={node_port}",
                    f"--object-manager-port={free_port()}",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--dashboard-agent-grpc-port={free_port()}",
                    f"--metrics-export-port={free_port()}",
                    f"--runtime-env-agent-port={free_port()}",
                    "--disable-usage-stats",
                ]
                if i == 0:
                    args = [
                        "--head",
                        f"--port={self.port}",
                        f"--temp-dir={self.temp_dir}",
                        "--include-dashboard=false",
                        f"--dashboard-port={free_port()}",
                        f"--ray-client-server-port={free_port()}",
                        *args,
                    ]
                else:
                    args = [f"--address={self.address}", *args]
                self._ray(args)
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self, *needles: str) -> list[int]:
        """This cluster's processes (their command line names its folder or its ports), with `needles` too."""
        mine = []
        marks = [str(self.temp_dir), f"--gcs-address=127.0.0.1:{self.port}", f"--gcs_server_port={self.port}"]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(m in cmd for m in marks) and all(n in cmd for n in needles):
                mine.append(int(entry.name))
        return mine

    def kill_node(self, index: int) -> list[int]:
        """SIGKILL the raylet of node `index` and every process under it (its workers and what they started),
        all at once, as when a machine dies: the node is lost mid-run. (A worker outlives its raylet by up to
        a second on its own, long enough to finish a unit and hand in its result.)"""
        raylets = self.pids("raylet", f"--node_manager_port={self.node_ports[index]}")
        tree = [*raylets, *(pid for raylet in raylets for pid in _descendants(raylet))]
        killed = []
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        return killed

    def stop(self) -> None:
        """Ends every process of this cluster (and only those), then removes its folder."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline and self.pids():
                time.sleep(0.1)
        import shutil

        for _ in range(20):  # a process that was writing its log as it died may leave a file behind at first
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            if not self.temp_dir.exists():
                break
            time.sleep(0.1)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _descendants(pid: int) -> list[int]:
    """Every process under `pid` (children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Field 4 of stat is the parent's pid; the name in field 2 may hold spaces, so split after it.
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
