"""How `benchbridge run` schedules its units (one framework each) and shares the cores between them.

Units run on threads, up to `max_parallel` at once, in config order; each stores its own records as it
ends (the results store opens a connection per write, WAL with a busy timeout: safe from threads). The
torch threads of each unit are `cores // max_parallel` (`OMP_NUM_THREADS`, inherited by every process a
framework starts, and `torch.set_num_threads` where benchbridge loads a model), so two torch processes
on two cores do not each start two threads and slow both down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

UnitT = TypeVar("UnitT")
OutcomeT = TypeVar("OutcomeT")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cores() -> int:
    """The cores this process may use (its affinity mask, e.g. a container's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_max_parallel(units: int) -> int:
    """As many units as cores, but not more than there are units."""
    return max(1, min(units, cores()))


@contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Sets `values` in this process's environment (so in every child's) for the block, then restores it."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unit_threads(max_parallel: int) -> dict[str, str]:
    """Each unit's torch threads (`cores // max_parallel`, at least 1) as environment variables; none when
    the user set `OMP_NUM_THREADS`."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    threads = str(max(1, cores() // max(1, max_parallel)))
    return dict.fromkeys(THREAD_VARS, threads)


def run_units(
    units: Sequence[UnitT],
    run_one: Callable[[UnitT], OutcomeT],
    max_parallel: int,
) -> list[OutcomeT]:
    """`run_one(unit)` for every unit, up to `max_parallel` at once, started in order; the outcomes in the
    units' order. `run_one` must not raise for a unit's own failure (it stores it); anything it raises
    (Ctrl-C) cancels the units not yet started and is raised here once the running ones have returned."""
    if max_parallel <= 1 or len(units) <= 1:
        return [run_one(u) for u in units]
    outcomes: dict[int, OutcomeT] = {}
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="unit") as pool:
        futures: dict[Future[OutcomeT], int] = {pool.submit(run_one, u): i for i, u in enumerate(units)}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    outcomes[futures[future]] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [outcomes[i] for i in range(len(units))]
