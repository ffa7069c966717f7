"""`encode` is a function of its archive: fingerprint, locks, unfinished archives, full disk."""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lmdb
import pandas as pd
import pytest

from ben_builder import archive
from ben_builder.archive.finalize import finalize, remove_product
from ben_builder.chain.product import Options, process_product
from ben_builder.encode import DB, ENCODED_FROM, encode_archive
from ben_builder.errors import ArchiveWriteError, OutputLockedError, PreflightError
from ben_builder.files import output_lock, reader_lock


@pytest.fixture(scope="module")
def built(synthetic, tmp_path_factory):
    """An archive of the demo's L2A products, as a build leaves it (lock file included)."""
    root = tmp_path_factory.mktemp("arch")
    with output_lock(root):
        for r in synthetic.recipes:
            if r.level == "L2A":
                process_product(synthetic.path_of(r), root, Options(clc_path=synthetic.clc))
        finalize(root)
    return root


def _items(db: Path) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(db), readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    env.close()
    return items


def _copy(root: Path, dst: Path) -> Path:
    shutil.copytree(root, dst)
    return dst


def test_two_encodes_of_one_archive_are_byte_identical(built, tmp_path):
    encode_archive(built, tmp_path / "a")
    encode_archive(built, tmp_path / "b")
    a = (tmp_path / "a" / DB / "data.mdb").read_bytes()
    assert a == (tmp_path / "b" / DB / "data.mdb").read_bytes() and len(a) > 10_000_000
    assert (tmp_path / "a" / ENCODED_FROM).read_bytes() == (
        tmp_path / "b" / ENCODED_FROM
    ).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")) == [
        ".ben_builder.lock"  # no temporary left
    ]


def test_a_changed_archive_is_encoded_again(built, tmp_path):
    root = _copy(built, tmp_path / "arch")
    out = tmp_path / "enc"
    first = encode_archive(root, out)
    assert not first.skipped and encode_archive(root, out).skipped
    # a product goes (as a build removes what no input asks for): 450 -> fewer patches
    gone = sorted(p.stem for p in (root / archive.PARTS_DIR).glob("*.parquet"))[0]
    remove_product(root, gone)
    finalize(root)
    again = encode_archive(root, out)
    assert not again.skipped and again.patches < first.patches
    encode_archive(root, tmp_path / "fresh")
    assert _items(out / DB) == _items(tmp_path / "fresh" / DB)
    assert not any(k.decode().startswith(gone) for k, _ in _items(out / DB))
    meta = pd.read_parquet(out / archive.METADATA)
    assert len(meta) + len(pd.read_parquet(out / archive.FLAGGED)) == again.patches


def test_unfinished_archives_are_refused(built, tmp_path):
    root = _copy(built, tmp_path / "arch")
    (root / archive.FLAGGED).unlink()  # a build killed between the two parquets
    with pytest.raises(PreflightError, match="did not finish. Run build again"):
        encode_archive(root, tmp_path / "enc")
    root = _copy(built, tmp_path / "arch2")
    stem = sorted(p.stem for p in (root / archive.PARTS_DIR).glob("*.parquet"))[0]
    remove_product(root, stem)  # a build killed after removing a product, before finalising
    with pytest.raises(PreflightError, match=f"patch {stem}_.* is in the metadata but no"):
        encode_archive(root, tmp_path / "enc")
    assert not (tmp_path / "enc" / DB).exists()


def test_encode_and_build_exclude_each_other(built, tmp_path):
    out = tmp_path / "enc"
    with output_lock(built, "ben-builder build demo"):  # a build is writing the archive
        with pytest.raises(OutputLockedError, match="being written by ben-builder build demo"):
            encode_archive(built, out)
    with reader_lock(built):  # an encode is reading it: a build refuses to start
        with pytest.raises(OutputLockedError, match="a reader: ben-builder encode"):
            with output_lock(built):
                pass
        with reader_lock(built):  # readers share it
            pass
    with output_lock(out, "ben-builder encode"):  # another encode writes the output
        with pytest.raises(OutputLockedError, match="in use by ben-builder encode"):
            encode_archive(built, out)
    with pytest.raises(PreflightError, match="another folder than the archive"):
        encode_archive(built, built)


def test_a_killed_encode_leaves_nothing_that_counts(built, tmp_path):
    out = tmp_path / "enc"
    encode_archive(built, out)
    stale = out / f".{DB}.x1y2.partial"  # a killed encode's temporary
    stale.mkdir()
    (stale / "data.mdb").write_bytes(b"\0" * 4096)
    (out / ENCODED_FROM).unlink()  # killed before the fingerprint: not complete
    assert not encode_archive(built, out).skipped
    assert not stale.exists() and (out / ENCODED_FROM).exists()


def test_not_enough_space_is_refused_before_writing(built, tmp_path, monkeypatch):
    import ben_builder.encode as enc

    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(enc.shutil, "disk_usage", lambda p: real._replace(free=5_000_000))
    with pytest.raises(ArchiveWriteError, match=r"needs about [\d,]+ MB and 5 MB are free"):
        encode_archive(built, tmp_path / "enc")
    assert [p.name for p in (tmp_path / "enc").iterdir()] == [".ben_builder.lock"]


def _limit_file_size() -> None:
    # writes past 8 MB fail with EFBIG, as on a full disk (the signal would kill instead)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))


def test_a_write_that_fails_midway_leaves_no_partial(built, tmp_path):
    """The LMDB's writes fail in the kernel (a file-size limit): one line, nothing left."""
    out = tmp_path / "enc"
    r = subprocess.run(
        [sys.executable, "-m", "ben_builder.cli", "encode", str(built), "--out", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"cannot write {DB}" in last and "needs about" in last
    assert "Traceback" not in r.stderr
    assert [p.name for p in out.iterdir()] == [".ben_builder.lock"]
