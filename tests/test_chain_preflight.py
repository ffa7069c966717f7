"""Checks before work, the output lock, empty runs, batch logging and clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ben_builder import archive
from ben_builder.chain.run import run
from ben_builder.config import load_config
from ben_builder.errors import OutputLockedError, PreflightError, SpecError
from ben_builder.files import LOCK_FILE, output_lock

CLI = [sys.executable, "-m", "ben_builder.cli"]


@pytest.fixture(scope="module")
def one_product(synthetic, tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    src = synthetic.path_of(synthetic.find(tile_id="T34VER", level="L2A"))
    shutil.copy(src, d / src.name)
    return d


def _config(tmp_path: Path, products: Path, clc: Path | None, **extra: object) -> Path:
    inputs: dict[str, object] = {"source": "local", "products_dir": str(products)}
    if clc is not None:
        inputs["clc_path"] = str(clc)
    cfg = {
        "name": "t",
        "output": str(tmp_path / "arch"),
        "inputs": inputs,
        "cluster": {"kind": "local", "n_workers": 1},
        "report_samples": 0,
        **extra,
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_check_prints_the_plan_and_writes_nothing(tmp_path, one_product, synthetic):
    cfg = _config(tmp_path, one_product, synthetic.clc)
    r = _cli("build", "--check", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "products: 1 (1 tile: T34VER)" in r.stdout
    assert "patches (candidates before screening): 100" in r.stdout
    assert "check passed" in r.stdout
    out = tmp_path / "arch"
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE]


def test_inputs_are_checked_before_any_work(tmp_path, one_product, synthetic):
    # a missing CLC file: the error names it, nothing is decoded or written
    cfg = _config(tmp_path, one_product, tmp_path / "nowhere.gpkg")
    with pytest.raises(Exception, match="nowhere.gpkg: CLC file not found"):
        run(load_config(cfg), progress=False)
    assert not (tmp_path / "arch" / archive.S2_DIR).exists()
    # a CLC of another region (only T35VNJ's scene): covers none of the tiles
    from ben_builder.sources.synthetic.writer import scene_for, write_clc

    (tmp_path / "far").mkdir()
    far = write_clc([scene_for("T35VNJ", 1260, 0)], tmp_path / "far")
    with pytest.raises(PreflightError, match="covers none of the tiles"):
        run(load_config(_config(tmp_path, one_product, far)), progress=False)
    assert not (tmp_path / "arch" / archive.S2_DIR).exists()
    # an output that cannot be written (its parent is a file; chmod would not stop root)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    cfg = _config(tmp_path, one_product, synthetic.clc, output=str(blocker / "arch"))
    with pytest.raises(PreflightError, match="not writable"):
        run(load_config(cfg), progress=False)


def test_a_config_without_clc_is_refused(tmp_path, one_product):
    with pytest.raises(SpecError, match="needs 'clc_path'"):
        load_config(_config(tmp_path, one_product, None))


def test_empty_runs_fail_unless_allowed(tmp_path, synthetic):
    """A run that keeps no patch fails unless allowed; a folder without products is refused."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = _config(tmp_path, empty, synthetic.clc)
    for extra in ([], ["--allow-empty"]):  # a wrong folder is not an empty archive
        r = _cli("build", *extra, str(cfg))
        assert r.returncode == 2 and f"no products in {empty}" in r.stderr
    # a reproduction of T33UUP's upper-left cells, none of which v1 (so v2) has: nothing kept
    products = tmp_path / "products"
    products.mkdir()
    src = synthetic.path_of(synthetic.find(tile_id="T33UUP", level="L2A", baseline="04.00"))
    (shutil.copytree if src.is_dir() else shutil.copy)(src, products / src.name)
    listed = tmp_path / "list.csv"
    listed.write_text(f"product\n{src.name}\n")
    cfg = _config(tmp_path, products, synthetic.clc, reproduce="bigearthnet-v2")
    doc = yaml.safe_load(cfg.read_text())
    doc["inputs"]["product_list"] = {
        "csv": str(listed),
        "column": "product",
        "match": "acquisition",
    }
    cfg.write_text(yaml.safe_dump(doc))
    r = _cli("build", str(cfg))
    assert r.returncode == 1 and "produced no patch" in r.stderr
    r = _cli("build", "--allow-empty", str(cfg))
    assert r.returncode == 0, r.stderr


def test_a_second_build_into_the_same_folder_is_refused(tmp_path, one_product, synthetic):
    cfg = _config(tmp_path, one_product, synthetic.clc)
    out = tmp_path / "arch"
    with output_lock(out, "a test"):
        with pytest.raises(OutputLockedError, match=f"a test pid {os.getpid()} on host"):
            run(load_config(cfg), progress=False)
    # the same from another process: the CLI names the holder and exits 2
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from ben_builder.files import output_lock\n"
            f"with output_lock(Path({str(out)!r}), 'ben-builder build other'):\n"
            "    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = _cli("build", str(cfg))
        assert r.returncode == 2
        assert f"in use by ben-builder build other pid {holder.pid}" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    # a lock left by a killed process is not stale: the next run takes it
    res = run(load_config(cfg), progress=False)
    assert not res.failures


def test_batch_jobs_see_one_line_per_product_and_a_run_log(tmp_path, one_product, synthetic):
    cfg = _config(tmp_path, one_product, synthetic.clc)
    name = next(one_product.iterdir()).name
    r = _cli("build", str(cfg))  # stderr is a pipe, as in a batch job
    assert r.returncode == 0, r.stderr
    assert f"done {name}: kept" in r.stderr
    assert "distributed" not in r.stderr and "DEBUG" not in r.stderr
    assert "Port 8787" not in r.stderr  # no dashboard unless asked for
    log = (tmp_path / "arch" / "report" / "run.log").read_text()
    assert f"done {name}" in log
    r = _cli("-q", "build", str(cfg))
    assert r.returncode == 0 and "already done" not in r.stderr
    assert f"already done {name}" in (tmp_path / "arch" / "report" / "run.log").read_text()


def test_clear_errors_for_bad_size_and_unreachable_scheduler(tmp_path, one_product, synthetic):
    r = _cli("synth", "--out", str(tmp_path / "s"), "--size-px", "1000")
    assert r.returncode == 2 and "not a positive multiple of 6" in r.stderr
    assert "Traceback" not in r.stderr
    unreachable = {"kind": "address", "scheduler_address": "tcp://127.0.0.1:9"}
    cfg = _config(tmp_path, one_product, synthetic.clc, cluster=unreachable)
    t0 = time.monotonic()
    r = _cli("build", str(cfg), env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert r.returncode == 2, r.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.stderr and time.monotonic() - t0 < 120


def test_v1_layout_refuses_colliding_v1_names(tmp_path, synthetic):
    """The L1C and the L2A of one acquisition would write the same v1 folders."""
    l2a = synthetic.path_of(synthetic.find(tile_id="T33UUP", level="L2A", baseline="04.00"))
    l1c = synthetic.path_of(synthetic.find(tile_id="T33UUP", level="L1C", baseline="02.05"))
    r = _cli("patch", str(l2a), str(l1c), "--out", str(tmp_path / "v1"), "--layout", "v1")
    assert r.returncode == 2 and "would get the same v1 names" in r.stderr
    assert not (tmp_path / "v1" / archive.V1_DIR).exists()
    r = _cli("patch", str(l2a), str(l1c), "--out", str(tmp_path / "v2"), "--layout", "v2")
    assert r.returncode == 0, r.stderr


def test_two_tiles_of_one_datatake_are_refused_in_the_v1_layout_before_any_work(tmp_path):
    """v1 names carry no tile: T30TVK and T30TUK of one overpass would share every folder."""
    import rasterio

    from ben_builder.sources.synthetic.products import datatake_recipes
    from ben_builder.sources.synthetic.writer import write_dataset

    with rasterio.Env():
        written = write_dataset(datatake_recipes(("T30TVK", "T30TUK")), tmp_path / "in", 1260)
    products = [str(p) for p in written.products]
    r = _cli("patch", *products, "--out", str(tmp_path / "v1"), "--layout", "both")
    assert r.returncode == 2
    assert "tiles of one datatake share the sensing time" in r.stderr
    assert all(Path(p).name in r.stderr for p in products)  # both named
    assert not (tmp_path / "v1" / archive.S2_DIR).exists()  # nothing decoded or written
    cfg = _config(tmp_path, tmp_path / "in" / "products", written.clc, layout="v1")
    check = _cli("build", str(cfg), "--check")
    assert check.returncode == 2 and "would get the same v1 names" in check.stderr
    r = _cli("patch", *products, "--out", str(tmp_path / "v2"), "--layout", "v2")
    assert r.returncode == 0, r.stderr


def test_products_in_subfolders_are_found_and_an_empty_folder_fails_the_check(
    tmp_path, one_product, synthetic
):
    """Downloads sorted into per-tile folders are found; a folder without any is refused early."""
    sorted_dir = tmp_path / "downloads"
    product = next(one_product.iterdir())
    (sorted_dir / "T34VER" / "2018").mkdir(parents=True)
    shutil.copy(product, sorted_dir / "T34VER" / "2018" / product.name)
    (sorted_dir / "T34VER" / ".partial.zip").write_bytes(b"")  # hidden: not a product
    r = _cli("build", str(_config(tmp_path, sorted_dir, synthetic.clc)), "--check")
    assert r.returncode == 0, r.stderr
    assert product.name in r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "e").mkdir()
    r = _cli("build", str(_config(tmp_path / "e", empty, synthetic.clc)), "--check")
    assert r.returncode == 2
    assert f"no products in {empty} (looked for <name>.SAFE folders, <name>.zip" in r.stderr
    assert "Traceback" not in r.stderr


def test_patch_and_process_with_a_missing_clc_are_one_line(tmp_path, one_product):
    product = str(next(one_product.iterdir()))
    for command in ("patch", "process"):
        r = _cli(command, product, "--out", str(tmp_path / command), "--clc", "/missing.gpkg")
        assert r.returncode == 2
        assert r.stderr.strip() == (
            "error: /missing.gpkg: CLC file not found; give the CLC 2018 GeoPackage "
            "(clc_path, or --clc)"
        )


def test_a_run_stopped_before_any_product_writes_its_report_and_prints_once(tmp_path):
    """A folder without products: one line on the terminal, the reason in the run's report."""
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    cfg = _config(
        tmp_path,
        empty,
        None,
        inputs={
            "source": "local",
            "products_dir": str(empty),
            "clc_path": str(tmp_path / "x.gpkg"),
        },
    )
    r = _cli("build", str(cfg))
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if "no products in" in line]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    report = (tmp_path / "arch" / "report" / "report.md").read_text()
    assert "Stopped before any product" in report and f"no products in {empty}" in report


def test_check_and_run_judge_a_second_download_alike(tmp_path, one_product, synthetic):
    """A browser's `...(1).zip` beside the product: --check reports what the run then records."""
    d = tmp_path / "products"
    shutil.copytree(one_product, d)
    original = next(d.iterdir())
    copy = d / original.name.replace(".zip", "(1).zip")
    shutil.copy(original, copy)
    cfg = _config(tmp_path, d, synthetic.clc)
    check = _cli("build", "--check", str(cfg))
    assert check.returncode == 1
    assert f"unreadable {copy.name}: " in check.stdout and "the file name says" in check.stdout
    r = _cli("build", str(cfg))
    assert r.returncode == 1 and f"FAILED {copy.name} [open]" in r.stderr
    assert "the file name says" in r.stderr
