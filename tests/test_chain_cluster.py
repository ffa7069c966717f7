"""The Dask cluster a run works on: workers, their settings, SLURM job scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dask
import psutil

from ben_builder import runtime
from ben_builder.chain import cluster

REPO = Path(__file__).resolve().parent.parent


def test_slurm_job_script_from_config():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ben_builder.cli",
            "cluster-script",
            str(REPO / "pipelines" / "cluster-slurm.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    script = r.stdout
    assert script.startswith("#!/usr/bin/env bash")
    for line in (
        "#SBATCH -p compute",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH -t 02:00:00",
        "#SBATCH --constraint=cpu",
        "module load gdal",
    ):
        assert line in script, line
    assert "--nworkers 16" in script and "--nthreads 1" in script


def test_workers_run_with_dask_periodic_work_slowed_local_and_on_slurm():
    import distributed  # noqa: F401  (its config defaults)

    from ben_builder.config import ClusterSettings, SlurmSettings

    keys = sorted(runtime.QUIET_DASK)
    with dask.config.set(runtime.QUIET_DASK):
        want = [dask.config.get(k) for k in keys]
    assert want != [dask.config.get(k) for k in keys]  # not Dask's defaults
    with cluster.dask_client(ClusterSettings(n_workers=1)) as client:
        seen = client.run(lambda: [dask.config.get(k) for k in keys])
    assert list(seen.values()) == [want]
    # a SLURM job's workers read them from the job script's exports, as Dask parses them
    script = cluster.make_slurm_cluster(
        ClusterSettings(kind="slurm", slurm=SlurmSettings(cores=2, processes=1))
    ).job_script()
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in script.splitlines()
        if line.startswith("export DASK_")
    )
    from_env = dask.config.collect_env(env)
    assert [dask.config.get(k, config=from_env) for k in keys] == want


def test_workers_start_with_the_decoding_environment_local_and_on_slurm(monkeypatch):
    """OpenJPEG in the calling thread and malloc keeping its buffers, from a worker's start.

    Checked in the environment a worker process started with (``/proc/PID/environ``): glibc
    reads its settings then. A value the user set is kept, locally and in a SLURM job script.
    """
    from ben_builder.config import ClusterSettings, SlurmSettings

    for key in runtime.WORKER_ENV_DEFAULTS:  # the nanny sets them here too: undone at the end
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "8388608")  # the user's own
    want = {**runtime.WORKER_ENV_DEFAULTS, "MALLOC_MMAP_THRESHOLD_": "8388608"}
    assert want["OPJ_NUM_THREADS"] == "0"
    with cluster.dask_client(ClusterSettings(n_workers=1)) as client:
        (pid,) = client.run(os.getpid).values()
        started_with = psutil.Process(pid).environ()
    assert {k: started_with.get(k) for k in want} == want
    script = cluster.make_slurm_cluster(
        ClusterSettings(kind="slurm", slurm=SlurmSettings(cores=2, processes=1))
    ).job_script()
    for key, value in want.items():
        assert f"export {key}={value}" in script.splitlines()
    # 24 cores for a task's 12 bands: two per band, on OpenJPEG's threads (GDAL gives them)
    assert "OPJ_NUM_THREADS" not in runtime.worker_environ(24)
    assert runtime.worker_environ(23)["OPJ_NUM_THREADS"] == "0"
    script = cluster.make_slurm_cluster(
        ClusterSettings(kind="slurm", slurm=SlurmSettings(cores=48, processes=2))
    ).job_script()
    assert "OPJ_NUM_THREADS" not in script and "export MALLOC_TRIM_THRESHOLD_=33554432" in script
    monkeypatch.setenv("OPJ_NUM_THREADS", "3")  # the user's, kept
    assert runtime.worker_environ(24)["OPJ_NUM_THREADS"] == "3"


def test_worker_plan_gives_spare_cores_to_the_tiles_there_are(monkeypatch):
    from ben_builder.config import ClusterSettings, SlurmSettings

    monkeypatch.setattr(cluster, "usable_cores", lambda: list(range(16)))
    local = ClusterSettings()
    assert cluster.plan_workers(local, 40) == (16, 1)  # many tiles: a core each
    assert cluster.plan_workers(local, 2) == (2, 8)  # two tiles on 16 cores: 8 threads each
    assert cluster.plan_workers(local, 1) == (1, 16)
    assert cluster.plan_workers(local, 3) == (3, 5)
    assert cluster.plan_workers(ClusterSettings(n_workers=4), 40) == (4, 4)
    assert cluster.plan_workers(ClusterSettings(threads_per_task=2), 1) == (1, 2)
    slurm = ClusterSettings(kind="slurm", slurm=SlurmSettings(cores=16, processes=4))
    assert cluster.plan_workers(slurm, 100)[1] == 4
    script = cluster.make_slurm_cluster(slurm).job_script()
    assert script.split("--nthreads")[-1].split()[0] == "1"  # one tile at a time per worker
