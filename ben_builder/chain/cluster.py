"""The Dask cluster a run works on: local processes, SLURM (dask-jobqueue), or an address.

Workers start with the settings of :mod:`ben_builder.runtime`; how many there are and how many
cores each product decodes with is planned here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ben_builder.config import (
    ClusterSettings,
)
from ben_builder.errors import (
    ClusterError,
)
from ben_builder.runtime import QUIET_DASK, WORKER_ENV_DEFAULTS, dask_env_exports, worker_environ

log = logging.getLogger(__name__)


def usable_cores() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def plan_workers(settings: ClusterSettings, n_products: int) -> tuple[int, int]:
    """Local workers to start and decoding threads per product task.

    Many products: one single-threaded worker per core, as before. Fewer products than cores:
    one worker per product, and the spare cores go to those products as OpenJPEG decoding
    threads (``GDAL_NUM_THREADS``), so a one-tile
    run uses the whole machine. On SLURM each worker gets its job's cores divided among the
    job's processes. ``threads_per_task`` overrides the threads.
    """
    cores = len(usable_cores())
    workers = settings.n_workers or cores
    if settings.kind == "local":
        workers = max(1, min(workers, n_products))
        threads = max(1, cores // workers)
    elif settings.kind == "slurm":
        threads = max(1, settings.slurm.cores // settings.slurm.processes)
    else:
        threads = 1
    return workers, settings.threads_per_task or threads


def pin_to_worker_cores(threads: int) -> None:
    """Pin the calling process to its own cores (worker ``i`` -> cores ``i*threads`` onwards).

    On a workstation, floating workers share cores badly (README, "How a run works"). Only for
    local clusters with no more workers x threads than cores; a failure to pin is harmless.
    """
    try:
        from distributed import get_worker

        name = get_worker().name
        cores = usable_cores()
        if isinstance(name, int) and cores:
            first = (name * threads) % len(cores)
            os.sched_setaffinity(0, set(cores[first : first + threads]))
    except (ValueError, OSError, AttributeError):
        pass


#: Times a task may be on a worker that dies before it is a failure of its product (one retry:
#: a worker lost to a signal or a lost job is retried once; one that kills its worker twice, as a
#: product over the memory limit does, is recorded as failed and the run goes on).
#: How long a wait for tasks lasts before the caller looks again (a stop signal, lost jobs).
STOP_POLL_S = 0.5


def wait_some(pending: set[Any]) -> tuple[set[Any], set[Any]]:
    """The futures of ``pending`` that finish within :data:`STOP_POLL_S`, and the others.

    Returns early at the first one finished; the short wait lets the caller act on a stop
    signal in time (:func:`ben_builder.runtime.stop_on_signals`).
    """
    from dask.distributed import wait

    try:
        done, still = wait(pending, timeout=STOP_POLL_S, return_when="FIRST_COMPLETED")
    except TimeoutError:
        return set(), pending
    return set(done), set(still)


ALLOWED_FAILURES = 1


@contextmanager
def dask_client(
    settings: ClusterSettings,
    log_directory: Path | None = None,
    local_workers: int | None = None,
    threads: int = 1,
) -> Iterator[Any]:
    """A Dask client for the configured cluster (local processes, SLURM, or an address).

    Args:
        settings: The cluster settings.
        log_directory: Where SLURM jobs write their output (unless the settings name a folder).
        local_workers: Local workers to start (default: ``n_workers``, else one per core).
        threads: Decoding cores per task on local workers (their environment follows).
    """
    import dask
    import distributed  # noqa: F401  (its config defaults, read and overridden here)

    # one task at a time per single-threaded worker (a tile's memory at a time, and a worker lost
    # to one product takes no queued product down with it)
    dask_config = {
        "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
        "distributed.scheduler.worker-saturation": 1.0,
        "distributed.nanny.pre-spawn-environ": {
            **dask.config.get("distributed.nanny.pre-spawn-environ"),
            **worker_environ(threads),
        },
        **QUIET_DASK,
    }
    before = {k: os.environ.get(k) for k in WORKER_ENV_DEFAULTS}
    try:
        with dask.config.set(dask_config):
            with _client(settings, log_directory, local_workers) as client:
                yield client
    finally:  # a nanny sets its workers' variables in this process too: undone, not inherited
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _client(
    settings: ClusterSettings, log_directory: Path | None, local_workers: int | None
) -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    if settings.kind == "address":
        try:
            client = Client(settings.scheduler_address)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {settings.scheduler_address} ({exc}); start "
                "it (`dask scheduler`) or fix cluster.scheduler_address"
            ) from exc
        with client:
            yield client
        return
    if settings.kind == "slurm":
        cluster = make_slurm_cluster(settings, log_directory)
        if log_directory is not None:
            log_directory.mkdir(parents=True, exist_ok=True)
        # adapt with a floor, not scale: lost jobs are replaced (scale never resubmits)
        jobs = settings.slurm.jobs
        cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
    else:
        n = local_workers or settings.n_workers or os.cpu_count() or 1
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            memory_limit=settings.memory_limit,
            # no dashboard unless asked for; ":0" also keeps the scheduler's HTTP server off 8787
            dashboard_address=":8787" if settings.dashboard else ":0",
            scheduler_kwargs={"dashboard": settings.dashboard},
        )
    with cluster, Client(cluster) as client:
        yield client


def make_slurm_cluster(settings: ClusterSettings, log_directory: Path | None = None) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` from the config (no dashboard unless asked for)."""
    from dask_jobqueue import SLURMCluster

    s = settings.slurm
    lifetime = max(s.walltime_s() - s.lifetime_margin_s, 1)
    stagger = min(300, max(lifetime // 10, 1))
    logs = s.log_directory or (str(log_directory) if log_directory is not None else None)
    return SLURMCluster(
        cores=s.cores,
        memory=s.memory,
        processes=s.processes,
        walltime=s.walltime,
        queue=s.queue,
        account=s.account,
        job_name=s.job_name,
        interface=s.interface,
        python=s.python,
        log_directory=logs,
        job_extra_directives=list(s.job_extra_directives),
        job_script_prologue=[
            f"export DASK_LOGGING__DISTRIBUTED={s.worker_log_level}",
            *dask_env_exports(QUIET_DASK),
            *(f"export {k}={v}" for k, v in worker_environ(plan_workers(settings, 1)[1]).items()),
            *s.job_script_prologue,
        ],
        local_directory=s.local_directory,
        # one product at a time per worker; its share of the job's cores decodes (GDAL threads)
        worker_extra_args=["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]
        + (["--nthreads", "1"] if s.cores > s.processes else []),
        scheduler_options={"dashboard_address": ":8787" if settings.dashboard else ":0"},
    )
