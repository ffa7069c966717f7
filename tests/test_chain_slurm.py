"""The chain through a real SLURM scheduler (started by `.ci/slurm up`; skipped without one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ben_builder import archive
from ben_builder import files as safe_files
from ben_builder.chain.run import run
from ben_builder.config import load_config
from tests.helpers import digest_tree

REPO = Path(__file__).resolve().parent.parent


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    return r.returncode == 0 and any(s in r.stdout for s in ("idle", "mixed", "allocated"))


pytestmark = pytest.mark.skipif(
    not _slurm_up(), reason="no SLURM node here: `sudo .ci/slurm up` starts a single-node SLURM"
)


@pytest.fixture(scope="module")
def products(synthetic, tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm-products")
    for r in synthetic.recipes:
        if r.level == "L2A":
            src = synthetic.path_of(r)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, d / src.name)
    return d


def _config(tmp_path, products, clc, name, cluster):
    cfg = {
        "name": name,
        "output": str(tmp_path / name),
        "report_samples": 0,
        "inputs": {"source": "local", "products_dir": str(products), "clc_path": str(clc)},
        "cluster": cluster,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def _slurm(job_name, **extra):
    return {
        "kind": "slurm",
        "slurm": {
            "cores": 1,
            "processes": 1,
            "memory": "2GB",
            "walltime": "00:20:00",
            "lifetime_margin_s": 60,
            "job_name": job_name,
            **extra,
        },
    }


@pytest.fixture(scope="module")
def local(products, synthetic, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    res = run(
        _config(tmp, products, synthetic.clc, "local", {"kind": "local", "n_workers": 1}),
        progress=False,
    )
    assert not res.failures
    return digest_tree(tmp / "local")


def test_chain_on_slurm_equals_local(tmp_path, products, synthetic, local):
    res = run(
        _config(tmp_path, products, synthetic.clc, "s", _slurm("ben-test-eq", jobs=2)),
        progress=False,
    )
    assert not res.failures
    assert digest_tree(tmp_path / "s") == local
    logs = list((tmp_path / "s" / "report" / "workers").glob("*.err"))  # workers log to stderr
    assert logs and any("distributed.worker" in p.read_text() for p in logs)  # at info level


_RUNNING_SINCE: dict[str, float] = {}


def _running_for(job_name: str, seconds: float) -> bool:
    """Whether a job named ``job_name`` has been RUNNING for ``seconds`` (polled)."""
    out = subprocess.run(
        ["squeue", "-h", "-n", job_name, "-t", "RUNNING", "-o", "%i"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not out:
        _RUNNING_SINCE.pop(job_name, None)
        return False
    since = _RUNNING_SINCE.setdefault(job_name, time.time())
    return time.time() - since >= seconds


def _cancel_when(predicate, job_name, timeout=300):
    """Cancel every job named ``job_name`` once ``predicate()`` holds; return whether it did."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            subprocess.run(["scancel", "--name", job_name], check=False)
            return True
        time.sleep(0.2)
    return False


def test_cancelled_jobs_are_replaced_and_the_run_finishes(
    tmp_path, products, synthetic, local, caplog
):
    out = tmp_path / "c"
    cfg = _config(tmp_path, products, synthetic.clc, "c", _slurm("ben-test-cancel", jobs=1))
    # cancelled while its products run (not once one is done: on a loaded machine the others
    # could finish before the cancel lands, and nothing would be lost)
    cancel = threading.Thread(
        target=_cancel_when, args=(lambda: _running_for("ben-test-cancel", 3.0), "ben-test-cancel")
    )
    cancel.start()
    with caplog.at_level("INFO", logger="ben_builder"):
        res = run(cfg, progress=False)
    cancel.join()
    assert not res.failures, [(r.product, r.stage, r.error) for r in res.failures]
    assert "lost (CANCELLED)" in caplog.text and "RUNNING" in caplog.text
    assert digest_tree(out) == local


def test_too_many_lost_jobs_stop_the_run_with_a_report(tmp_path, products, synthetic):
    out = tmp_path / "l"
    cfg = _config(
        tmp_path, products, synthetic.clc, "l", _slurm("ben-test-lost", jobs=1, max_lost_jobs=0)
    )
    first_part = lambda: any((out / archive.PARTS_DIR).glob("*.parquet"))  # noqa: E731
    cancel = threading.Thread(target=_cancel_when, args=(first_part, "ben-test-lost"))
    cancel.start()
    t0 = time.time()
    res = run(cfg, progress=False)
    cancel.join()
    assert time.time() - t0 < 300  # never hangs
    stages = {r.stage for r in res.failures}
    assert stages == {"cluster"}, [(r.product, r.stage, r.error) for r in res.failures]
    assert "max_lost_jobs = 0" in res.failures[0].error
    assert (out / "report" / "report.md").exists()
    # every product is accounted for: done, or recorded as stopped by the lost jobs
    assert len(res.results) == len(list(products.iterdir()))
    assert (out / archive.METADATA).exists()


def test_workers_retire_before_the_walltime_and_the_run_goes_on(
    tmp_path, products, synthetic, local
):
    """Jobs of one minute whose workers retire after four seconds: the run spans several jobs."""
    cfg = _config(
        tmp_path,
        products,
        synthetic.clc,
        "w",
        _slurm("ben-test-wall", jobs=1, walltime="00:01:00", lifetime_margin_s=56, max_lost_jobs=0),
    )
    res = run(cfg, progress=False)
    assert not res.failures, [(r.product, r.stage, r.error) for r in res.failures]
    assert digest_tree(tmp_path / "w") == local
    logs = sorted((tmp_path / "w" / "report" / "workers").glob("*.err"))
    assert len(logs) >= 2  # a replacement job took over from the retired one
    assert any(
        "lifetime" in p.read_text().lower() or "retir" in p.read_text().lower() for p in logs
    )


STAND_IN = Path(__file__).resolve().parent / "stand_ins" / "l2a_process.py"


def _squeue(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False
    ).stdout.strip()


def test_walltime_stops_the_build_in_order_and_a_rerun_completes(tmp_path, synthetic):
    """A build in a SLURM job of one minute, still in sen2cor (which takes minutes) when the
    walltime comes: SLURM's SIGTERM to the job's processes stops it in order, with its report,
    before SLURM's SIGKILL; run again, it equals a clean build."""
    products = tmp_path / "products"
    products.mkdir()
    l1c = synthetic.find(tile_id="T33UUP", level="L1C", baseline="04.00")  # its L2A not given
    l2a = synthetic.find(tile_id="T34VER", level="L2A")
    for r in (l1c, l2a):
        src = synthetic.path_of(r)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, products / src.name)
    exe = tmp_path / "bin" / "L2A_Process"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN}" "$@"\n')
    exe.chmod(0o755)

    def config(name: str) -> Path:
        cfg = {
            "name": name,
            "output": str(tmp_path / name),
            "report_samples": 0,
            "inputs": {
                "source": "local",
                "products_dir": str(products),
                "clc_path": str(synthetic.clc),
            },
            "sen2cor": {"executable": str(exe), "output_dir": str(tmp_path / "l2a")},
            "cluster": {"kind": "local", "n_workers": 1},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    cfg = config("wall")
    out = tmp_path / "wall"
    job = (
        subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--time=1",
                "--job-name=ben-test-walltime",
                f"--output={tmp_path / 'job.out'}",
                f"--chdir={REPO}",
                f"--export=ALL,STAND_IN_SECONDS=600,PYTHONPATH={REPO}",
                f"--wrap=exec {sys.executable} -m ben_builder.cli build {cfg}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split(";")[0]
    )
    deadline = time.time() + 300
    while _squeue(job) and time.time() < deadline:
        time.sleep(1)
    assert not _squeue(job), f"job {job} still there after 300 s"
    log = (tmp_path / "job.out").read_text()
    assert "SIGTERM received" in log, log[-3000:]
    run_json = json.loads((out / "report" / "run.json").read_text())
    assert run_json["stopped_by"] == "SIGTERM"
    assert {r["stage"] for r in run_json["results"]} == {"cancelled"}
    assert len(run_json["results"]) == 2
    assert (out / safe_files.LOCK_FILE).read_text() == ""
    ref = run(load_config(config("ref")), progress=False)
    assert not ref.failures
    again = run(load_config(cfg), progress=False)
    assert not again.failures
    assert digest_tree(out) == digest_tree(tmp_path / "ref")
