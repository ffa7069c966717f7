"""The download stage against a local hub on 127.0.0.1 speaking CDSE OData and DHuS."""

import json
import logging
import os
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
import yaml

from ben_builder import archive
from ben_builder.chain.run import run
from ben_builder.config import CdseEndpoints, load_config
from ben_builder.errors import CredentialsError, SpecError
from ben_builder.sources.hub.cdse import CdseBackend
from ben_builder.sources.hub.credentials import Credentials, credentials_for
from ben_builder.sources.hub.dhus import DhusBackend
from ben_builder.sources.hub.manifest import read_manifest, write_manifest
from ben_builder.sources.hub.query import Query, area_from_bbox
from ben_builder.sources.hub.transfer import TransferPolicy, download_all, download_product
from tests.stand_ins.fakehub import HubProduct, HubServer, HubState

FAST = TransferPolicy(backoff_s=0.05, max_wait_s=5, timeout_s=10)
ALICE = Credentials("alice", "s3cret")


@pytest.fixture
def hub(synthetic):
    state = HubState()
    zips = [p for p in synthetic.products if p.suffix == ".zip"]
    for i, z in enumerate(sorted(zips)):
        r = next(r for r in synthetic.recipes if r.name == z.stem)
        state.add(
            HubProduct(id=f"0000-{i}", name=z.stem, path=z, sensing=r.sensing, cloud=5.0 + 20 * i)
        )
    with HubServer(state) as server:
        yield server


def _cdse(server, creds=ALICE):
    ep = CdseEndpoints(
        catalogue=f"{server.base}/odata/v1",
        download=f"{server.base}/odata/v1",
        token=f"{server.base}/auth/token",
    )
    return CdseBackend(creds, ep)


def _product(server, **faults):
    p = next(iter(server.state.products.values()))
    for k, v in faults.items():
        setattr(p, k, v)
    return p


def _item(backend, p):
    return next(i for i in backend.search(Query(names=(p.name,))) if i.name == p.name)


def test_cdse_search_filters_and_pages(hub):
    cdse = _cdse(hub)
    hub.state.page_size_cap = 1  # forces @odata.nextLink paging
    all_l2a = cdse.search(Query(level="L2A", tiles=("T33UUP", "T34VER")))
    assert sorted(i.name.split("_")[5] for i in all_l2a) == ["T33UUP", "T34VER"]
    assert sum("$skip" in unquote(r[1]) for r in hub.state.requests) >= 1
    assert [i.name for i in cdse.search(Query(level="L1C", tiles=("T33UUP",)))] == [
        n for n in (p.name for p in hub.state.products.values()) if "MSIL1C" in n
    ]
    winter = cdse.search(
        Query(
            level="L2A",
            start=date(2018, 1, 1),
            end=date(2018, 3, 1),
            area_wkt=area_from_bbox((12, 47, 14, 49)),
        )
    )
    assert [i.name.split("_")[2][:8] for i in winter] == ["20180215"]
    assert cdse.search(Query(level="L2A", tiles=("T33UUP",), max_cloud=1)) == []
    item = all_l2a[0]
    p = hub.state.products[item.id]
    assert (item.size, item.md5, item.blake3, item.online) == (len(p.data), p.md5, p.blake3, True)
    assert item.footprint_wkt.startswith("POLYGON")


def test_manifest_round_trip_holds_no_secrets(hub, tmp_path):
    items = _cdse(hub).search(Query(tiles=("T33UUP", "T34VER")))
    path = tmp_path / "m.jsonl"
    write_manifest(path, items)
    assert read_manifest(path) == items
    assert "s3cret" not in path.read_text() and "alice" not in path.read_text()
    path.write_text(path.read_text() + '{"id": 1}\n')
    with pytest.raises(ValueError, match="m.jsonl:3"):
        read_manifest(path)


def test_clean_download_keeps_token_across_redirect(hub, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cdse = _cdse(hub)
    p = _product(hub)
    r = download_product(_item(cdse, p), tmp_path, cdse, FAST)
    assert r.ok and r.attempts == 1 and r.bytes_received == len(p.data)
    assert (tmp_path / f"{p.name}.zip").read_bytes() == p.data
    zipper = [h for _, path, h in hub.state.requests if path.startswith("/zipper/")]
    assert zipper and zipper[0]["Host"].startswith("localhost")  # another host...
    assert zipper[0]["Authorization"].startswith("Bearer ")  # ...and the token went along
    assert "s3cret" not in caplog.text
    again = download_product(_item(cdse, p), tmp_path, cdse, FAST)
    assert again.skipped and again.ok


def test_cut_connection_resumes_with_range(hub, tmp_path):
    cdse = _cdse(hub)
    p = _product(hub, cut_after=[1_000_000, 3_000_000])
    r = download_product(_item(cdse, p), tmp_path, cdse, FAST)
    assert r.ok and r.attempts == 3
    assert r.bytes_received == len(p.data)  # every byte kept once
    assert (tmp_path / f"{p.name}.zip").read_bytes() == p.data
    ranges = [h.get("Range") for _, path, h in hub.state.requests if path.startswith("/zipper/")]
    assert ranges[0] is None
    first = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    second = int(ranges[2].removeprefix("bytes=").rstrip("-"))
    # what is asked for again is at most one partial 64 KiB read per cut
    assert 1_000_000 - 65536 < first <= 1_000_000
    assert first + 3_000_000 - 65536 < second <= first + 3_000_000


def test_429_with_retry_after_and_500s(hub, tmp_path):
    cdse = _cdse(hub)
    p = _product(hub, status_first=[429, 500, 503], retry_after="1")
    t = time.monotonic()
    r = download_product(_item(cdse, p), tmp_path, cdse, FAST)
    assert r.ok and r.attempts == 4
    assert time.monotonic() - t >= 1.0  # Retry-After honoured


def test_checksum_mismatch_is_downloaded_again_and_never_handed_on(hub, tmp_path):
    cdse = _cdse(hub)
    p = _product(hub, corrupt_times=1)
    r = download_product(_item(cdse, p), tmp_path, cdse, FAST)
    assert r.ok and r.attempts == 2 and (tmp_path / f"{p.name}.zip").read_bytes() == p.data
    p.corrupt_times = 100
    other = tmp_path / "other"
    r = download_product(_item(cdse, p), other, cdse, TransferPolicy(attempts=3, backoff_s=0.01))
    assert not r.ok and "ChecksumError" in r.error and "MD5" in r.error
    assert not (other / f"{p.name}.zip").exists()


def test_expired_token_is_refreshed(hub, tmp_path):
    cdse = _cdse(hub)
    p = _product(hub)
    item = _item(cdse, p)
    hub.state.expire_next_token = True  # the server expires the first token at once
    r = download_product(item, tmp_path, cdse, FAST)
    assert r.ok
    assert hub.state.grants == ["password", "refresh_token"]


def test_bad_credentials_and_offline_product(hub, tmp_path):
    p = _product(hub)
    bad = _cdse(hub, Credentials("alice", "wrong"))
    r = download_product(_item(bad, p), tmp_path, bad, FAST)
    assert not r.ok and "refused the credentials" in r.error and "wrong" not in r.error
    cdse = _cdse(hub)
    p.online = False
    r = download_product(_item(cdse, p), tmp_path, cdse, FAST)
    assert not r.ok and r.offline and "run the download again later" in r.error
    assert not list(tmp_path.iterdir())


def test_concurrency_is_capped(hub, tmp_path, synthetic):
    state = hub.state
    src = next(iter(state.products.values()))
    for i in range(6):
        state.add(
            HubProduct(
                id=f"copy-{i}", name=f"{src.name[:-2]}{i:02d}", path=src.path, sensing=src.sensing
            )
        )
    cdse = _cdse(hub)
    items = [i for i in cdse.search(Query(names=tuple(p.name for p in state.products.values())))]
    results = download_all(items, tmp_path, cdse, TransferPolicy(max_concurrent=2, backoff_s=0.05))
    assert all(r.ok for r in results) and len(results) == len(state.products)
    assert state.max_in_flight == 2


def test_dhus_search_download_and_offline_retrieval(hub, tmp_path):
    dhus = DhusBackend(ALICE, f"{hub.base}/dhus/")
    items = dhus.search(
        Query(
            level="L2A",
            tiles=("T33UUP", "T34VER"),
            start=date(2017, 1, 1),
            end=date(2018, 12, 31),
            max_cloud=50,
        )
    )
    assert len(items) == 2 and all(i.md5 for i in items)
    p = hub.state.products[items[0].id]
    p.online = False
    items = dhus.search(Query(names=tuple(i.name for i in items)))
    assert [i.online for i in items] == [False, True]
    first = download_all(items, tmp_path, dhus, TransferPolicy(offline_rounds=0))
    assert first[0].offline and first[1].ok
    results = download_all(
        items, tmp_path, dhus, TransferPolicy(offline_rounds=3, offline_wait_s=0.6)
    )
    assert all(r.ok for r in results)
    assert (tmp_path / f"{p.name}.zip").read_bytes() == p.data


def test_credentials_from_env_and_netrc(tmp_path, monkeypatch):
    monkeypatch.delenv("BEN_CDSE_USER", raising=False)
    monkeypatch.delenv("BEN_CDSE_PASSWORD", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine identity.example login bob password pw1\n")
    os.chmod(netrc, 0o600)
    assert credentials_for("cdse", "identity.example", netrc) == Credentials("bob", "pw1")
    assert "pw1" not in repr(credentials_for("cdse", "identity.example", netrc))
    with pytest.raises(CredentialsError, match="BEN_CDSE_USER"):
        credentials_for("cdse", "other.example", netrc)
    monkeypatch.setenv("BEN_CDSE_USER", "eve")
    monkeypatch.setenv("BEN_CDSE_PASSWORD", "pw2")
    assert credentials_for("cdse", "identity.example", netrc) == Credentials("eve", "pw2")


def test_cli_search_then_download(hub, tmp_path):
    env = dict(os.environ, BEN_CDSE_USER="alice", BEN_CDSE_PASSWORD="s3cret")
    urls = [
        "--catalogue-url",
        f"{hub.base}/odata/v1",
        "--download-url",
        f"{hub.base}/odata/v1",
        "--token-url",
        f"{hub.base}/auth/token",
    ]
    cli = [sys.executable, "-m", "ben_builder.cli"]
    r = subprocess.run(
        [
            *cli,
            "search",
            *urls,
            "--tile",
            "T33UUP",
            "--level",
            "L2A",
            "--out",
            str(tmp_path / "m.jsonl"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "1 products" in r.stdout
    get = [*cli, "download", str(tmp_path / "m.jsonl"), *urls, "--out", str(tmp_path / "d")]
    r = subprocess.run(get, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "1 of 1 products verified" in r.stdout
    env["BEN_CDSE_PASSWORD"] = "nope"
    (tmp_path / "d").rename(tmp_path / "d_old")
    r = subprocess.run(get, capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "refused the credentials" in r.stderr and "nope" not in r.stderr


def test_build_from_hub(hub, tmp_path, synthetic, monkeypatch):
    monkeypatch.setenv("BEN_CDSE_USER", "alice")
    monkeypatch.setenv("BEN_CDSE_PASSWORD", "s3cret")
    broken = next(iter(hub.state.products.values()))
    hub.state.add(
        HubProduct(
            id="gone",
            name="S2A_MSIL2A_20170704T101031_N0400_R022_T33UUP_20170704T101608",
            path=broken.path,
            sensing=datetime(2017, 7, 4),
            corrupt_times=100,
        )
    )
    cfg = {
        "name": "hub",
        "output": str(tmp_path / "archive"),
        "inputs": {
            "source": "hub",
            "clc_path": str(synthetic.clc),
            "hub": {
                "backend": "cdse",
                "endpoints": {
                    "catalogue": f"{hub.base}/odata/v1",
                    "download": f"{hub.base}/odata/v1",
                    "token": f"{hub.base}/auth/token",
                },
                "download_dir": str(tmp_path / "products"),
                "query": {"level": "L2A", "tiles": ["T33UUP", "T34VER"]},
            },
        },
        "cluster": {"kind": "local", "n_workers": 1},
    }
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(cfg))
    result = run(load_config(tmp_path / "hub.yaml"), progress=False)
    assert [(r.product, r.stage) for r in result.failures] == [
        ("S2A_MSIL2A_20170704T101031_N0400_R022_T33UUP_20170704T101608", "download")
    ]
    assert len([r for r in result.results if r.ok]) == 2
    assert (tmp_path / "products" / "manifest.jsonl").exists()
    meta = pd.read_parquet(tmp_path / "archive" / archive.METADATA)
    assert len(meta) > 0
    assert not list((tmp_path / "products").glob("*.part"))
    assert len(list(Path(tmp_path / "products").glob("*.zip"))) == 2


def test_an_unreachable_hub_is_one_line_naming_its_host(tmp_path):
    """No network (a closed port here): one line, exit 2, no traceback; nothing written."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/odata/v1"
    out = tmp_path / "m.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "ben_builder.cli",
        "search",
        "--catalogue-url",
        url,
        "--tile",
        "T33UUP",
        "--start",
        "2021-07-01",
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert f"cannot reach 127.0.0.1:{port} (no connection)" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_tile_without_its_t_is_refused_before_any_request():
    """``30TVK`` would be sent as a filter that can never match: refused with the fix."""
    from ben_builder.errors import SpecError
    from ben_builder.sources.hub.query import Query

    with pytest.raises(SpecError, match="did you mean T30TVK"):
        Query(tiles=("30TVK",))
    assert Query(tiles=("T30TVK",)).tiles == ("T30TVK",)


def test_check_finds_missing_credentials_and_online_tries_them(
    hub, tmp_path, synthetic, monkeypatch
):
    """``build --check``: credentials must be set; ``--online`` has the hub accept them."""
    from ben_builder.chain.run import plan_run
    from ben_builder.errors import CredentialsError

    cfg = {
        "name": "hub",
        "output": str(tmp_path / "archive"),
        "inputs": {
            "source": "hub",
            "clc_path": str(synthetic.clc),
            "hub": {
                "endpoints": {
                    "catalogue": f"{hub.base}/odata/v1",
                    "download": f"{hub.base}/odata/v1",
                    "token": f"{hub.base}/auth/token",
                },
                "download_dir": str(tmp_path / "products"),
                "query": {"tiles": ["T33UUP"]},
            },
        },
    }
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(tmp_path / "hub.yaml")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for key in ("BEN_CDSE_USER", "BEN_CDSE_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(CredentialsError, match="set BEN_CDSE_USER and BEN_CDSE_PASSWORD"):
        plan_run(config)
    monkeypatch.setenv("BEN_CDSE_USER", "alice")
    monkeypatch.setenv("BEN_CDSE_PASSWORD", "wrong")
    plan, _, _ = plan_run(config)  # found, not tried
    assert any("credentials found" in c for c in plan.checked)
    with pytest.raises(CredentialsError):
        plan_run(config, online=True)
    monkeypatch.setenv("BEN_CDSE_PASSWORD", "s3cret")
    plan, _, _ = plan_run(config, online=True)
    assert any("credentials accepted" in c for c in plan.checked)
    assert not (tmp_path / "archive" / archive.METADATA).exists()  # nothing built


def test_a_season_downloads_only_the_clearest_acquisition_per_tile_and_month(
    synthetic, tmp_path, monkeypatch
):
    """Five acquisitions of T33UUP over two months, an L1C beside its L2A: two downloads."""
    from ben_builder.config import HubInputs, SelectSettings
    from ben_builder.sources.hub.fetch import fetch_from_hub

    monkeypatch.setenv("BEN_CDSE_USER", "alice")
    monkeypatch.setenv("BEN_CDSE_PASSWORD", "s3cret")
    zip_path = next(p for p in synthetic.products if p.suffix == ".zip")
    state = HubState()
    season = [  # (day, cloud %, level)
        (datetime(2021, 6, 3, 10, 56, 21), 30.0, "L2A"),
        (datetime(2021, 6, 13, 10, 56, 21), 5.0, "L2A"),
        (datetime(2021, 6, 13, 10, 56, 21), 5.0, "L1C"),  # the same acquisition's L1C
        (datetime(2021, 6, 23, 10, 56, 21), 12.0, "L2A"),
        (datetime(2021, 7, 3, 10, 56, 21), 8.0, "L2A"),
        (datetime(2021, 7, 13, 10, 56, 21), 3.0, "L2A"),
    ]
    for i, (when, cloud, level) in enumerate(season):
        name = f"S2A_MSI{level}_{when:%Y%m%dT%H%M%S}_N0509_R051_T33UUP_{when:%Y%m%dT%H%M%S}"
        state.add(HubProduct(id=f"id-{i}", name=name, path=zip_path, sensing=when, cloud=cloud))
    with HubServer(state) as server:
        hub = HubInputs(
            endpoints=CdseEndpoints(
                catalogue=f"{server.base}/odata/v1",
                download=f"{server.base}/odata/v1",
                token=f"{server.base}/auth/token",
            ),
            download_dir=tmp_path / "products",
            query={"level": "L2A", "tiles": ["T33UUP"], "start": "2021-06-01", "end": "2021-07-31"},
        )
        found, failed, notes = fetch_from_hub(hub, SelectSettings(n=1, per="month"))
    assert not failed
    assert sorted(p.name[11:26] for p in found) == ["20210613T105621", "20210713T105621"]
    assert sorted(p.name for p in (tmp_path / "products").glob("*.zip")) == sorted(
        p.name for p in found
    )  # only the picked ones were downloaded
    passed = [n for n in notes if n.startswith("passed over")]
    assert len(passed) == 3 and all("keeps its 1 clearest" in n for n in passed)
    assert any("cloud 30.0 %" in n for n in passed)
    # the L1C: searched for as L1C it is a candidate of its own level only
    assert not any("MSIL1C" in n for n in notes)


def test_hub_names_that_are_paths_are_skipped_and_never_written(hub, tmp_path, caplog):
    """A hub answer naming a product `../../X` or `/X` would be written outside --out."""
    real = _product(hub)
    for i, bad in enumerate((f"../../{real.name}", f"/tmp/{real.name}", f"{real.name}/x")):
        hub.state.add(
            HubProduct(id=f"evil-{i}", name=bad, path=real.path, sensing=real.sensing, cloud=1.0)
        )
    cdse = _cdse(hub)
    with caplog.at_level("WARNING"):
        found = cdse.search(Query(level="L2A", tiles=(real.name.split("_")[5],)))
    assert found and all("/" not in i.name for i in found)
    assert caplog.text.count("not a plain product name") == 3
    # a manifest line with such a name is refused with its file and line
    good = json.dumps({"id": "1", "name": real.name, "backend": "cdse", "url": "http://x"})
    bad = json.dumps({"id": "2", "name": "../../x", "backend": "cdse", "url": "http://x"})
    manifest = tmp_path / "products.jsonl"
    manifest.write_text(good + "\n" + bad + "\n")
    with pytest.raises(SpecError, match=r"products.jsonl:2: .*not a plain product name"):
        read_manifest(manifest)


def test_the_same_wrong_bytes_twice_stop_the_download_early(hub, tmp_path):
    """A hub whose published checksum is wrong: two downloads (with a pause), not eight."""
    cdse = _cdse(hub)
    p = _product(hub, corrupt_times=100)  # every copy the same wrong bytes
    policy = TransferPolicy(attempts=8, backoff_s=0.3, max_wait_s=5, timeout_s=10)
    t = time.monotonic()
    r = download_product(_item(cdse, p), tmp_path, cdse, policy)
    assert not r.ok and r.attempts == 2
    assert "the same bytes twice" in r.error and "MD5" in r.error
    assert time.monotonic() - t >= 0.3  # it waited before downloading again
    assert not list(tmp_path.iterdir())
