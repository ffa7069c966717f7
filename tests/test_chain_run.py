"""The whole chain on Dask: determinism, failures as data, resumability, configs, SLURM script."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import pandas as pd
import psutil
import pytest
import rasterio
import yaml

from ben_builder import archive
from ben_builder import files as safe_files
from ben_builder.archive.finalize import finalize, read_parts
from ben_builder.chain.run import run
from ben_builder.config import load_config
from ben_builder.errors import ArchiveWriteError, PreflightError, ProductNotFoundError
from tests.helpers import digest_tree

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def products_dir(synthetic, tmp_path_factory):
    d = tmp_path_factory.mktemp("products")
    picks = [
        synthetic.find(tile_id="T33UUP", level="L2A", baseline="04.00"),
        synthetic.find(tile_id="T33UUP", level="L1C", baseline="04.00"),
        synthetic.find(tile_id="T34VER", level="L2A"),
    ]
    for r in picks:
        src = synthetic.path_of(r)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, d / src.name)
    return d


def _config(tmp_path, products_dir, clc, name="t", **extra):
    cfg = {
        "name": name,
        "output": str(tmp_path / name),
        "inputs": {"source": "local", "products_dir": str(products_dir), "clc_path": str(clc)},
        "report_samples": 6,
        "cluster": {"kind": "local", "n_workers": extra.pop("n_workers", 2)},
    }
    cfg.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_build_is_deterministic_across_worker_counts(tmp_path, products_dir, synthetic):
    one = run(
        load_config(_config(tmp_path, products_dir, synthetic.clc, "one", n_workers=1)),
        progress=False,
    )
    two = run(
        load_config(_config(tmp_path, products_dir, synthetic.clc, "two", n_workers=2)),
        progress=False,
    )
    assert not one.failures and not two.failures
    assert digest_tree(tmp_path / "one") == digest_tree(tmp_path / "two")
    meta = pd.read_parquet(tmp_path / "two" / archive.METADATA)
    assert list(meta.columns) == list(archive.METADATA_COLUMNS)
    assert set(meta.split) == {"train", "validation", "test"}
    # countries by default from the shipped Natural Earth: T33UUP's upper-left 12 km lie in
    # Bavaria (12.4 E, 48.7 N), T34VER's in the Gulf of Bothnia off Sweden's coast (21.1 E, 64.0 N)
    assert set(meta.country) == {"Germany", "Sweden"}
    # a new archive without a v1 layout: no v1 names (a formula would repeat across the tiles
    # of one datatake)
    assert meta.s2v1_name.isna().all()
    report = (tmp_path / "two" / "report" / "report.md").read_text()
    for section in (
        "## Counts",
        "## Per tile",
        "## Label distribution",
        "## Sample patches",
        "## Timings per stage",
        "## Inputs (SHA-256)",
        "## Software",
    ):
        assert section in report
    assert (tmp_path / "two" / "report" / "quicklook.png").stat().st_size > 10_000
    assert (tmp_path / "two" / "report" / "label_distribution.png").stat().st_size > 5_000
    again = run(load_config(tmp_path / "two.yaml"), progress=False)
    assert all(r.summary and r.summary["skipped"] for r in again.results)
    assert [r.sha256 for r in again.results] == [r.sha256 for r in two.results]
    assert all(r.sha256 and len(r.sha256) == 64 for r in two.results)
    assert digest_tree(tmp_path / "one") == digest_tree(tmp_path / "two")


def test_failing_product_is_recorded_and_others_go_on(tmp_path, products_dir, synthetic):
    d = tmp_path / "mixed"
    shutil.copytree(products_dir, d)
    bad = next(p for p in d.iterdir() if p.suffix == ".zip")
    bad.write_bytes(bad.read_bytes()[:10000])
    cfg = _config(tmp_path, d, synthetic.clc, "mixed")
    r = subprocess.run(
        [sys.executable, "-m", "ben_builder.cli", "build", str(cfg)], capture_output=True, text=True
    )
    assert r.returncode == 1, r.stderr
    assert f"FAILED {bad.name} [open]" in r.stderr
    out = tmp_path / "mixed"
    import json

    run_json = json.loads((out / "report" / "run.json").read_text())
    failed = [x for x in run_json["results"] if not x["ok"]]
    assert [x["product"] for x in failed] == [bad.name]
    assert "CorruptProductError" in failed[0]["error"] and "Traceback" in failed[0]["traceback"]
    assert "## Failures" in (out / "report" / "report.md").read_text()
    assert len(list((out / archive.PARTS_DIR).glob("*.parquet"))) == 2
    r = subprocess.run(
        [sys.executable, "-m", "ben_builder.cli", "build", str(cfg), "--fail-fast", "--force"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "FAILED" in r.stderr
    # the report accounts for every product: done, failed, or not run (cancelled)
    run_json = json.loads((out / "report" / "run.json").read_text())
    products = sorted(p.name for p in d.iterdir() if p.suffix in (".zip", ".SAFE"))
    assert sorted(x["product"] for x in run_json["results"]) == products
    assert {x["stage"] for x in run_json["results"] if not x["ok"]} <= {"open", "cancelled"}


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_killed_worker_and_killed_run_resume_identically(tmp_path, products_dir, synthetic):
    ref = run(load_config(_config(tmp_path, products_dir, synthetic.clc, "ref")), progress=False)
    assert not ref.failures
    cfg = _config(tmp_path, products_dir, synthetic.clc, "kill")
    out = tmp_path / "kill"
    cmd = [sys.executable, "-m", "ben_builder.cli", "build", str(cfg)]

    # 1. SIGKILL a worker while it writes patches: Dask reruns the task elsewhere
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _wait_for(lambda: len(list((out / archive.S2_DIR).rglob("*.tif"))) > 50)
    workers = [
        c
        for c in psutil.Process(proc.pid).children(recursive=True)
        if "spawn_main" in " ".join(c.cmdline()) or "forkserver" in " ".join(c.cmdline())
    ]
    assert workers
    workers[-1].send_signal(signal.SIGKILL)
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    assert digest_tree(out) == digest_tree(tmp_path / "ref")

    # 2. SIGKILL the whole run mid-way, then run again
    shutil.rmtree(out)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert _wait_for(lambda: len(list((out / archive.S2_DIR).rglob("*.tif"))) > 100)

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (
        not (out / archive.METADATA).exists()
        or len(list((out / archive.PARTS_DIR).glob("*.parquet"))) < 3
    )
    subprocess.run(cmd, check=True, capture_output=True)
    assert digest_tree(out) == digest_tree(tmp_path / "ref")


def _stopped_run(tmp_path, products_dir, clc, name, send):
    """A build (one worker: products one after another) stopped by ``send(proc)`` once a
    product is done; returns the process and its output folder."""
    cfg = _config(tmp_path, products_dir, clc, name, n_workers=1)
    out = tmp_path / name
    proc = subprocess.Popen(
        [sys.executable, "-m", "ben_builder.cli", "build", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    log = out / "report" / "run.log"
    assert _wait_for(lambda: log.exists() and " done S2" in log.read_text())
    send(proc)
    proc.wait(timeout=120)
    return proc, out, cfg


def test_sigterm_and_ctrl_c_stop_the_run_in_order(tmp_path, products_dir, synthetic):
    """SIGTERM (as `kill` sends it) and Ctrl-C (SIGINT to the terminal's whole process group):
    finished products kept, the others cancelled and their files removed, the report written,
    the lock released, exit 143 / 130; a re-run then equals a clean build."""
    import json

    ref = run(load_config(_config(tmp_path, products_dir, synthetic.clc, "ref")), progress=False)
    assert not ref.failures
    names = sorted(p.name for p in products_dir.iterdir())
    sends = {
        "term": (lambda p: p.send_signal(signal.SIGTERM), 143, "SIGTERM"),
        "int": (lambda p: os.killpg(p.pid, signal.SIGINT), 130, "SIGINT"),
    }
    for name, (send, status, signame) in sends.items():
        proc, out, cfg = _stopped_run(tmp_path, products_dir, synthetic.clc, name, send)
        err = proc.stderr.read().decode()
        assert proc.returncode == status, err[-3000:]
        assert f"stopped by {signame}" in err
        run_json = json.loads((out / "report" / "run.json").read_text())
        assert run_json["stopped_by"] == signame
        results = {r["product"]: r for r in run_json["results"]}
        assert sorted(results) == names
        done = sorted(n for n, r in results.items() if r["ok"])
        assert done and len(done) < len(names)
        assert {r["stage"] for r in results.values() if not r["ok"]} == {"cancelled"}
        # the archive holds the finished products, and nothing of the others (a product running
        # when the signal came may finish before its worker stops: then the report says done)
        stems = sorted("_".join(n.split("_")[:6]) for n in done)
        assert sorted(p.stem for p in (out / archive.PARTS_DIR).glob("*.parquet")) == stems
        assert sorted(p.name for p in (out / archive.S2_DIR).iterdir()) == stems
        meta = pd.concat(
            [pd.read_parquet(out / archive.METADATA), pd.read_parquet(out / archive.FLAGGED)]
        )
        assert sorted(set(meta.patch_id.map(lambda p: p.rsplit("_", 2)[0]))) == stems
        assert (out / safe_files.LOCK_FILE).read_text() == ""
        subprocess.run(
            [sys.executable, "-m", "ben_builder.cli", "build", str(cfg)],
            check=True,
            capture_output=True,
        )
        assert digest_tree(out) == digest_tree(tmp_path / "ref")


def test_second_signal_stops_at_once_and_a_rerun_completes(tmp_path, products_dir, synthetic):
    ref = run(load_config(_config(tmp_path, products_dir, synthetic.clc, "ref")), progress=False)

    def twice(proc):
        # the second once the first is taken (two signals before Python's handler runs are one)
        proc.send_signal(signal.SIGTERM)
        log = tmp_path / "twice" / "report" / "run.log"
        assert _wait_for(lambda: "SIGTERM received" in log.read_text(), timeout=60)
        proc.send_signal(signal.SIGTERM)

    proc, out, cfg = _stopped_run(tmp_path, products_dir, synthetic.clc, "twice", twice)
    assert proc.returncode == 143
    os.killpg(proc.pid, signal.SIGKILL)  # its workers, orphaned by the immediate exit
    assert not (out / "report" / "run.json").exists()
    subprocess.run(
        [sys.executable, "-m", "ben_builder.cli", "build", str(cfg)],
        check=True,
        capture_output=True,
    )
    assert digest_tree(out) == digest_tree(tmp_path / "ref") and not ref.failures


def test_flags_from_published_lists(tmp_path, products_dir, synthetic):
    # a new archive has v1 names only with a v1 layout (its folders): flag lists match those
    base = run(
        load_config(_config(tmp_path, products_dir, synthetic.clc, "base", layout="both")),
        progress=False,
    )
    parts = read_parts(tmp_path / "base")
    names = sorted(parts.s2v1_name)
    cloudy, snowy = set(names[::5]), set(names[1::7])
    (tmp_path / "cloud.csv").write_text("\n".join(sorted(cloudy)) + "\n")
    (tmp_path / "snow.csv").write_text("\n".join(sorted(snowy)) + "\n")
    shutil.copytree(tmp_path / "base", tmp_path / "lists")
    cfg = _config(
        tmp_path,
        products_dir,
        synthetic.clc,
        "lists",
        layout="both",
        flags_from_lists={
            "cloud_or_shadow": str(tmp_path / "cloud.csv"),
            "snow": str(tmp_path / "snow.csv"),
        },
    )
    res = run(load_config(cfg), progress=False)
    assert not res.failures and not base.failures
    meta = pd.read_parquet(tmp_path / "lists" / archive.METADATA)
    flagged = pd.read_parquet(tmp_path / "lists" / archive.FLAGGED)
    both = pd.concat([meta, flagged])
    assert len(both) == len(parts)
    assert set(both.loc[both.contains_cloud_or_shadow, "s2v1_name"]) == cloudy
    assert set(both.loc[both.contains_seasonal_snow, "s2v1_name"]) == snowy
    assert set(flagged.s2v1_name) == cloudy | snowy


def test_product_list_filter_records_missing(tmp_path, products_dir, synthetic):
    present = sorted(p.name for p in products_dir.iterdir())[0]
    stem = present.removesuffix(".zip").removesuffix(".SAFE").rsplit("_", 1)[0]
    csv = tmp_path / "list.csv"
    csv.write_text(f"product\n{stem}\nS2A_MSIL2A_20170101T101031_N9999_R022_T33UUP\n")
    cfg = _config(
        tmp_path,
        products_dir,
        synthetic.clc,
        "listed",
        inputs={
            "source": "local",
            "products_dir": str(products_dir),
            "clc_path": str(synthetic.clc),
            "product_list": {"csv": str(csv), "column": "product"},
        },
    )
    res = run(load_config(cfg), progress=False)
    assert [r.product for r in res.results if r.ok] == [present]
    assert [(r.product, r.stage) for r in res.failures] == [
        ("S2A_MSIL2A_20170101T101031_N9999_R022_T33UUP", "discover")
    ]


def test_countries_from_a_boundaries_file(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from ben_builder.patches.countries import closest_country, read_boundaries

    borders = gpd.GeoDataFrame(
        {"country": ["West", "East"]},
        geometry=[box(10, 45, 12.5, 50), box(12.5, 45, 15, 50)],
        crs="EPSG:4326",
    )
    path = tmp_path / "borders.gpkg"
    borders.to_file(path)
    # T33UUP's upper-left patch lies west of 12.5 E, a patch 100 km east lies east of it;
    # a patch in the Arctic lies in neither
    frame = pd.DataFrame(
        {
            "epsg": [32633, 32633, 32633],
            "ulx_m": [300000.0, 400000.0, 500000.0],
            "uly_m": [5400000.0, 5400000.0, 8000000.0],
        }
    )
    borders = read_boundaries(path, field="country", candidates=None)
    assert list(closest_country(frame, borders, rule="within")) == ["West", "East", None]
    assert list(closest_country(frame, borders)) == ["West", "East", "East"]


def _fresh(tmp_path, products, clc, name):
    """A clean build of the current inputs, for comparison."""
    res = run(load_config(_config(tmp_path, products, clc, name)), progress=False)
    assert not res.failures
    return digest_tree(tmp_path / name)


def test_rerun_redoes_exactly_what_changed(tmp_path, products_dir, synthetic, monkeypatch):
    """A re-run equals a clean build of the current inputs after each kind of change."""
    from dataclasses import replace as dc_replace

    import geopandas as gpd

    from ben_builder.sources.synthetic.writer import scene_for, write_product

    products = tmp_path / "products"
    shutil.copytree(products_dir, products)
    clc = tmp_path / "clc.gpkg"
    shutil.copy(synthetic.clc, clc)
    cfg = _config(tmp_path, products, clc, "arch")
    out = tmp_path / "arch"
    first = run(load_config(cfg), progress=False)
    assert not first.failures

    def redone(res):
        return sorted(r.product for r in res.results if r.ok and not r.summary["skipped"])

    # 1. a product replaced by different content under the same name
    recipe = synthetic.find(tile_id="T34VER", level="L2A")
    target = products / synthetic.path_of(recipe).name
    target.unlink()
    other = tmp_path / "other"
    other.mkdir()
    made = write_product(dc_replace(recipe), scene_for(recipe.tile_id, 1260, seed=7), other)
    shutil.move(made, target)
    res = run(load_config(cfg), progress=False)
    assert redone(res) == [target.name]
    assert next(r.sha256 for r in res.results if r.product == target.name) != next(
        r.sha256 for r in first.results if r.product == target.name
    )
    assert digest_tree(out) == _fresh(tmp_path, products, clc, "fresh1")

    # 2. the CLC edited: 10 polygons 211 -> 311 (every product is redone)
    frame = gpd.read_file(clc, layer="U2018_CLC2018_V2020_20u1")
    idx = frame.index[frame["Code_18"] == "211"][:10]
    frame.loc[idx, "Code_18"] = "311"
    frame.to_file(clc, layer="U2018_CLC2018_V2020_20u1", driver="GPKG")
    res = run(load_config(cfg), progress=False)
    assert len(redone(res)) == 3
    assert digest_tree(out) == _fresh(tmp_path, products, clc, "fresh2")

    # 3. a part deleted to force one product's redo; 4. --force redoes all, same bytes
    part = next((out / archive.PARTS_DIR).glob("*.parquet"))
    part.unlink()
    res = run(load_config(cfg), progress=False)
    assert len(redone(res)) == 1
    assert digest_tree(out) == digest_tree(tmp_path / "fresh2")
    res = run(load_config(cfg), progress=False, force=True)
    assert len(redone(res)) == 3
    assert digest_tree(out) == digest_tree(tmp_path / "fresh2")

    # 5. a spec changed: flag cloud/shadow only above half a patch
    from ben_builder import specs

    changed = tmp_path / "specs"
    shutil.copytree(REPO / "data_specs", changed)
    screening = changed / "screening.yaml"
    screening.write_text(
        screening.read_text().replace(
            "cloud_or_shadow_min_fraction: 0.0", "cloud_or_shadow_min_fraction: 0.5"
        )
    )
    monkeypatch.setenv("BEN_BUILDER_SPECS", str(changed))
    specs.screening.cache_clear()
    try:
        flagged_before = len(pd.read_parquet(out / archive.FLAGGED))
        res = run(load_config(cfg), progress=False)
        assert len(redone(res)) == 3
        assert len(pd.read_parquet(out / archive.FLAGGED)) < flagged_before
        assert digest_tree(out) == _fresh(tmp_path, products, clc, "fresh3")
    finally:
        monkeypatch.delenv("BEN_BUILDER_SPECS")
        specs.screening.cache_clear()


def test_full_disk_leaves_no_short_file_and_keeps_old_metadata(tmp_path, synthetic, monkeypatch):
    """ENOSPC in a product, then in finalisation: clear errors, nothing half-written."""
    import builtins
    import errno

    from ben_builder.chain.product import Options, process_product
    from ben_builder.errors import ArchiveWriteError

    product = synthetic.path_of(synthetic.find(tile_id="T33UUP", level="L2A", baseline="04.00"))
    out = tmp_path / "arch"
    real_open = builtins.open
    budget = {"files": 40}

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])  # half the bytes reach the disk
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        if "w" in mode and str(path).endswith(".partial"):
            budget["files"] -= 1
            if budget["files"] < 0:
                return Full(fh)
        return fh

    real_write = os.write

    def full_write(fd, data):  # the patch files, written straight to their names
        budget["files"] -= 1
        if budget["files"] < 0:
            real_write(fd, bytes(data)[: len(data) // 2])  # half the bytes reach the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    real_writev = os.writev

    def full_writev(fd, parts):  # header and pixels side by side
        return full_write(fd, b"".join(parts))

    monkeypatch.setattr(safe_files, "open", full_open, raising=False)
    monkeypatch.setattr(os, "write", full_write)
    monkeypatch.setattr(os, "writev", full_writev)
    with pytest.raises(ArchiveWriteError, match=r"\.tif: cannot write \(No space left on device\)"):
        process_product(product, out, Options(clc_path=synthetic.clc))
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(os, "writev", real_writev)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".partial")]
    assert not list((out / archive.PARTS_DIR).glob("*.parquet"))  # not marked finished
    left = {p.relative_to(out): p.read_bytes() for p in files if p.suffix == ".tif"}
    assert 0 < len(left) < 40
    monkeypatch.setattr(safe_files, "open", real_open, raising=False)
    s = process_product(product, out, Options(clc_path=synthetic.clc))
    assert not s.skipped
    finalize(out)
    clean = tmp_path / "clean"
    process_product(product, clean, Options(clc_path=synthetic.clc))
    finalize(clean)
    assert digest_tree(out) == digest_tree(clean)
    # what the full disk left under final names was whole: the same bytes as a clean build's
    assert all((clean / rel).read_bytes() == data for rel, data in left.items())

    # finalisation on a full disk: a clear error, the previous metadata intact
    before = (out / archive.METADATA).read_bytes()
    budget["files"] = 0
    monkeypatch.setattr(safe_files, "open", full_open, raising=False)
    with pytest.raises(ArchiveWriteError, match="metadata"):
        finalize(out)
    assert (out / archive.METADATA).read_bytes() == before
    assert not list(out.glob("*.partial"))


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user namespaces to mount a small tmpfs")
def test_build_on_a_really_full_disk(tmp_path, products_dir, synthetic):
    """The output on a 22 MB file system (tmpfs in a user namespace): one product fits, the
    others fail with ENOSPC; their partial files are removed, which frees the space for the
    metadata and the report; `build` exits 1 naming the error once per product."""
    cfg = _config(tmp_path, products_dir, synthetic.clc, "full", n_workers=1)
    out, saved = tmp_path / "full", tmp_path / "saved"
    out.mkdir()
    script = (
        f'mount -t tmpfs -o size=22m tmpfs "{out}" || exit 99; '
        f'"{sys.executable}" -m ben_builder.cli build "{cfg}" > "{tmp_path}/stdout" '
        f'2> "{tmp_path}/stderr"; echo $? > "{tmp_path}/rc"; cp -a "{out}" "{saved}"'
    )
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, cwd=REPO)
    err = (tmp_path / "stderr").read_text()
    assert (tmp_path / "rc").read_text().strip() == "1", err[-3000:]
    failed_lines = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert failed_lines and all("No space left on device" in line for line in failed_lines)
    # each product's error once; no error of the report hides them (Dask may log its own
    # tracebacks of a worker's comms under load: those are not ours)
    named = [line.split()[1] for line in failed_lines]
    assert len(named) == len(set(named)) and "FileNotFoundError" not in err
    run_json = (saved / "report" / "run.json").read_text()
    assert "No space left on device" in run_json and (saved / "report" / "report.md").exists()
    parts = sorted(p.stem for p in (saved / archive.PARTS_DIR).glob("*.parquet"))
    assert 1 <= len(parts) < 3
    # nothing of the failed products is left: every folder belongs to a finished product
    assert sorted(p.name for p in (saved / archive.S2_DIR).iterdir()) == parts
    assert sorted(p.name for p in (saved / archive.REFMAP_DIR).iterdir()) == parts
    meta = pd.read_parquet(saved / archive.METADATA)
    assert set(meta.patch_id.str.rsplit("_", n=2).str[0]) <= set(parts) and len(meta) > 0


def test_failed_finalisation_is_the_error_and_the_report_is_written(
    tmp_path, products_dir, synthetic, monkeypatch
):
    import ben_builder.chain.run as chain_run

    def full(*args, **kwargs):
        raise ArchiveWriteError("metadata.parquet: cannot write (No space left on device)")

    monkeypatch.setattr(chain_run, "finalize", full)
    with pytest.raises(ArchiveWriteError, match="No space left"):
        run(load_config(_config(tmp_path, products_dir, synthetic.clc, "fin")), progress=False)
    report = (tmp_path / "fin" / "report" / "report.md").read_text()
    assert "finalisation failed: metadata.parquet: cannot write" in report
    assert not (tmp_path / "fin" / archive.METADATA).exists()  # from the parts: what exists


def test_worker_killed_for_memory_fails_one_product_only(tmp_path, products_dir, synthetic):
    """A product over the memory limit kills its worker twice: recorded, the others go on."""
    from datetime import datetime

    from ben_builder.sources.synthetic.products import ProductRecipe
    from ben_builder.sources.synthetic.writer import scene_for, write_product

    products = tmp_path / "products"
    products.mkdir()
    small = next(p for p in products_dir.iterdir() if "T34VER" in p.name)
    shutil.copy(small, products / small.name)
    # a large product (GeoTIFF bands: quick to write). The LMDB layout keeps a product's bands
    # until its shard is written, so the two worker peaks lie far apart: measured with
    # /usr/bin/time-like sampling, the small product 320 MB, this 5,490 px tile 718 MB. A limit
    # of 400 MB was too near the small one (CI's workers start at ~290 MB and it was killed too)
    big = ProductRecipe(
        "T33UUP", "L2A", "04.00", datetime(2017, 6, 13, 10, 10, 31), image_format="GeoTIFF"
    )
    with rasterio.Env():
        big_path = write_product(big, scene_for("T33UUP", 5490, 0), products)
    cfg = _config(tmp_path, products, synthetic.clc, "mem", layout="lmdb")
    data = yaml.safe_load(cfg.read_text())
    data["cluster"]["memory_limit"] = "560MB"  # a worker is stopped above 95%: 532 MB
    cfg.write_text(yaml.safe_dump(data))
    # Dask's defaults first: a setting made before they exist takes them all away when undone
    import distributed  # noqa: F401

    with dask.config.set({"distributed.worker.memory.pause": False}):  # only the limit acts
        res = run(load_config(cfg), progress=False)
    assert [(r.product, r.stage) for r in res.failures] == [(big_path.name, "worker")]
    assert "KilledWorker" in res.failures[0].error and "memory" in res.failures[0].error
    assert [r.product for r in res.results if r.ok] == [small.name]
    assert res.counts["metadata"] + res.counts["flagged"] > 0
    run_json = (tmp_path / "mem" / "report" / "run.json").read_text()
    assert "KilledWorker" in run_json


def _lmdb_items(path):
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    env.close()
    return items


def test_lmdb_layout_is_what_encode_makes_of_a_v2_build(tmp_path, products_dir, synthetic):
    """layout: lmdb writes no GeoTIFFs; its LMDB equals `encode` of a v2 build, byte for byte."""
    from ben_builder.encode import encode_archive

    v2 = run(load_config(_config(tmp_path, products_dir, synthetic.clc, "v2")), progress=False)
    lm = run(
        load_config(_config(tmp_path, products_dir, synthetic.clc, "lm", layout="lmdb")),
        progress=False,
    )
    assert not v2.failures and not lm.failures
    encode_archive(tmp_path / "v2", tmp_path / "enc")
    built = _lmdb_items(tmp_path / "lm" / archive.DB)
    assert built == _lmdb_items(tmp_path / "enc" / archive.DB) and len(built) > 100
    assert not (tmp_path / "lm" / archive.S2_DIR).exists()
    assert not any(p.suffix == ".tif" for p in (tmp_path / "lm").rglob("*"))
    for name in (archive.METADATA, archive.FLAGGED):
        assert (tmp_path / "lm" / name).read_bytes() == (tmp_path / "v2" / name).read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "lm" / archive.LABELS43),
        pd.read_parquet(tmp_path / "enc" / archive.LABELS43),
    )
    # deterministic: one worker gives the same files; a re-run skips and changes nothing
    one = run(
        load_config(
            _config(tmp_path, products_dir, synthetic.clc, "lm1", layout="lmdb", n_workers=1)
        ),
        progress=False,
    )
    assert not one.failures
    assert digest_tree(tmp_path / "lm1") == digest_tree(tmp_path / "lm")
    again = run(load_config(tmp_path / "lm.yaml"), progress=False)
    assert all(r.summary and r.summary["skipped"] for r in again.results)
    assert digest_tree(tmp_path / "lm1") == digest_tree(tmp_path / "lm")
    with pytest.raises(ProductNotFoundError, match="already encoded"):
        encode_archive(tmp_path / "lm", tmp_path / "enc2")
    data = pytest.importorskip("ben_builder.train.data")  # training reads the archive as it is
    ds = data.EncodedPatches(tmp_path / "lm", "train", 43, ("B02", "B8A", "B09"))
    assert len(ds) > 0 and ds[0]["x20"].shape == (1, 60, 60)


def test_a_product_gone_from_the_folder_is_removed_and_a_mistyped_folder_is_refused(
    tmp_path, products_dir, synthetic
):
    """The archive equals a clean build of today's inputs: a removed product's files and rows go.

    More than ``prune_max_share`` of the archive going (a mistyped folder) stops the run,
    unless ``--prune``.
    """
    folder = tmp_path / "folder"
    shutil.copytree(products_dir, folder)
    first = run(load_config(_config(tmp_path, folder, synthetic.clc, "a")), progress=False)
    assert not first.failures and len(first.results) == 3
    gone = sorted(folder.iterdir())[0]
    (shutil.rmtree if gone.is_dir() else os.remove)(gone)
    again = run(load_config(_config(tmp_path, folder, synthetic.clc, "a")), progress=False)
    stem = gone.name.rsplit("_", 1)[0]
    assert again.removed == [stem] and any(f"removed {stem}" in w for w in again.warnings)
    clean = run(load_config(_config(tmp_path, folder, synthetic.clc, "clean")), progress=False)
    assert not clean.failures
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "clean")
    # a folder with one of the two: half the archive would go, over a share of 0.25: refused,
    # nothing removed; --prune removes it
    only = tmp_path / "only"
    only.mkdir()
    (tmp_path / "b").mkdir()
    cfg = _config(tmp_path / "b", only, synthetic.clc, "a", prune_max_share=0.25)
    cfg = cfg.rename(tmp_path / "b.yaml")
    text = cfg.read_text().replace(str(tmp_path / "b" / "a"), str(tmp_path / "a"))
    cfg.write_text(text)
    keep = next(p for p in folder.iterdir() if "T34VER" in p.name)
    (shutil.copytree if keep.is_dir() else shutil.copy)(keep, only / keep.name)
    before = digest_tree(tmp_path / "a")
    with pytest.raises(PreflightError, match=r"1 of the 2 products .* Run with --prune"):
        run(load_config(cfg), progress=False)
    assert digest_tree(tmp_path / "a") == before
    pruned = run(load_config(cfg), progress=False, prune=True)
    assert len(pruned.removed) == 1 and not pruned.failures


def _tree(root: Path) -> tuple[dict[str, str], list[str]]:
    """Every file's digest (the report aside) and every folder, empty ones included."""
    folders = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_dir() and "report" not in p.relative_to(root).parts
    )
    return digest_tree(root), folders


def test_a_layout_switch_leaves_nothing_of_the_old_layout(tmp_path, synthetic):
    """v2 -> v1 -> lmdb -> both: after each switch the archive equals a clean build of it."""
    one = tmp_path / "one"
    one.mkdir()
    src = synthetic.path_of(synthetic.find(tile_id="T34VER", level="L2A"))
    shutil.copy(src, one / src.name)
    for i, layout in enumerate(("v2", "v1", "lmdb", "both")):
        switched = run(
            load_config(_config(tmp_path, one, synthetic.clc, "arch", layout=layout, n_workers=1)),
            progress=False,
        )
        assert not switched.failures, layout
        clean = run(
            load_config(
                _config(tmp_path, one, synthetic.clc, f"clean{i}", layout=layout, n_workers=1)
            ),
            progress=False,
        )
        assert not clean.failures
        assert _tree(tmp_path / "arch") == _tree(tmp_path / f"clean{i}"), layout


def test_a_renamed_safe_folder_is_recorded_under_its_new_name(tmp_path, products_dir, synthetic):
    """A .SAFE folder renamed (another generation time: the same acquisition) is redone, and the
    archive's records name it as it is called now; a rename to another acquisition is refused."""
    import json

    d = tmp_path / "products"
    shutil.copytree(products_dir, d)
    safe = next(p for p in d.iterdir() if p.suffix == ".SAFE")
    cfg = load_config(_config(tmp_path, d, synthetic.clc, "ren"))
    assert not run(cfg, progress=False).failures
    renamed = safe.with_name(safe.name[:-20] + "20991231T000000.SAFE")
    safe.rename(renamed)
    again = run(cfg, progress=False)
    assert not again.failures
    (done,) = [r for r in again.results if r.product == renamed.name]
    assert not done.summary["skipped"]
    stem = "_".join(renamed.name.split("_")[:6])
    record = json.loads((tmp_path / "ren" / archive.PARTS_DIR / f"{stem}.json").read_text())
    assert record["product"] == renamed.name.removesuffix(".SAFE")
    other = renamed.with_name(renamed.name.replace("_R022_", "_R023_"))
    renamed.rename(other)
    refused = run(cfg, progress=False)
    assert [(r.product, r.stage) for r in refused.failures] == [(other.name, "open")]
    assert "relative orbit" in refused.failures[0].error
