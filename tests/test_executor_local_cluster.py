"""The tests' local Ray cluster starts again, on new ports in a new folder, when a `ray start` fails: on a
loaded machine a node can miss Ray's fixed 30 s to register ("The current node timed out during startup"),
which made the two-node tests fail at setup in a full-suite run. No Ray is started here: `ray start` is
replaced by a recorder that fails as Ray did."""

from __future__ import annotations

import pytest

from bridges.executors import local_cluster
from bridges.executors.local_cluster import LocalRayCluster

TIMED_OUT = "ray start --head failed (1): Exception: The current node timed out during startup."


def recording_cluster(failures: int) -> tuple[LocalRayCluster, list[list[str]]]:
    cluster = LocalRayCluster([2, 2])
    started: list[list[str]] = []

    def fake_ray(args: list[str]) -> None:
        started.append(args)
        if len(started) <= failures:
            raise RuntimeError(TIMED_OUT)

    cluster._ray = fake_ray  # type: ignore[method-assign]
    return cluster, started


def test_a_failed_start_is_tried_again_on_new_ports_in_a_new_folder() -> None:
    cluster, started = recording_cluster(failures=1)
    first_dir, first_address = cluster.temp_dir, cluster.address
    try:
        cluster.start()
        assert len(started) == 1 + 2  # the failed head, then the head and the second node
        retried_head, joined = started[1], started[2]
        assert f"--temp-dir={cluster.temp_dir}" in retried_head and f"--port={cluster.port}" in retried_head
        assert f"--address={cluster.address}" in joined
        assert cluster.address != first_address and cluster.temp_dir != first_dir
        assert not first_dir.exists()  # the failed attempt's folder was removed
        assert len(cluster.node_ports) == 2  # only this attempt's nodes: kill_node(1) finds the right raylet
    finally:
        cluster.stop()
    assert not cluster.temp_dir.exists()


def test_a_start_failing_every_time_gives_rays_error() -> None:
    cluster, started = recording_cluster(failures=local_cluster.START_ATTEMPTS)
    with pytest.raises(RuntimeError, match="timed out during startup"):
        cluster.start()
    assert len(started) == local_cluster.START_ATTEMPTS
    assert not cluster.temp_dir.exists()
