"""Benchmark: download throughput of the CDSE client vs plain curl, and the cost of resuming.

A local fake CDSE (token endpoint, redirect to a download host, Range support) runs in its own
process and serves a 1 GB file. In the same run: curl fetches the final URL with the bearer token;
the client fetches through the whole protocol (token, redirect, streaming hashes MD5 + BLAKE3,
verification, rename); then the client again with the connection cut half-way. Target (issue 5):
client throughput >= 0.9 x curl; after a cut only the lost bytes are fetched again.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.stand_ins: the local hub
from common import CACHE, write_results  # noqa: E402

from ben_builder.config import CdseEndpoints
from ben_builder.sources.hub.cdse import CdseBackend  # noqa: E402
from ben_builder.sources.hub.credentials import Credentials  # noqa: E402
from ben_builder.sources.hub.query import Query  # noqa: E402
from ben_builder.sources.hub.transfer import TransferPolicy, download_product  # noqa: E402

NAME = "S2A_MSIL2A_20170613T101031_N0400_R022_T33UUP_20170613T101608"


def serve(path: str, cut_after: list[int], port_q: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    from tests.stand_ins.fakehub import HubProduct, HubServer, HubState

    state = HubState()
    p = HubProduct(id="bench", name=NAME, path=Path(path), sensing=datetime(2017, 6, 13))
    p.cut_after = list(cut_after)
    _ = (p.md5, p.blake3)  # computed before timing starts
    state.add(p)
    with HubServer(state) as server:
        port_q.put(server.server_port)
        stop.wait()


def with_server(path: Path, cut_after: list[int], fn):  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=serve, args=(str(path), cut_after, q, stop))
    proc.start()
    try:
        return fn(q.get(timeout=300))
    finally:
        stop.set()
        proc.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/download.json"))
    ap.add_argument("--size-mb", type=int, default=1024)
    args = ap.parse_args()
    size = args.size_mb * 2**20
    blob = CACHE / f"blob_{args.size_mb}mb.zip"
    if not blob.exists():
        blob.parent.mkdir(parents=True, exist_ok=True)
        with open(blob, "wb") as fh:
            for _ in range(args.size_mb):
                fh.write(os.urandom(2**20))
    work = Path(tempfile.mkdtemp(prefix="ben_bench_dl_"))
    creds = Credentials("alice", "s3cret")

    def backend(port: int) -> CdseBackend:
        base = f"http://127.0.0.1:{port}"
        return CdseBackend(
            creds, CdseEndpoints(f"{base}/odata/v1", f"{base}/odata/v1", f"{base}/auth/token")
        )

    def client_run(port: int, tag: str, verify: str = "all") -> dict[str, float]:
        b = backend(port)
        item = b.search(Query(names=(NAME,)))[0]
        out = work / tag
        t = time.perf_counter()
        r = download_product(item, out, b, TransferPolicy(backoff_s=0.1, verify=verify))  # type: ignore[arg-type]
        wall = time.perf_counter() - t
        assert r.ok, r.error
        shutil.rmtree(out)
        return {
            "wall_s": round(wall, 2),
            "mb_per_s": round(size / 2**20 / wall, 1),
            "attempts": r.attempts,
            "bytes_received": r.bytes_received,
        }

    def curl_run(port: int) -> dict[str, float]:
        base = f"http://127.0.0.1:{port}"
        tok = requests.post(
            f"{base}/auth/token",
            data={
                "client_id": "cdse-public",
                "grant_type": "password",
                "username": "alice",
                "password": "s3cret",
            },
        ).json()["access_token"]
        t = time.perf_counter()
        subprocess.run(
            [
                "curl",
                "-sS",
                "-f",
                "-L",
                "--location-trusted",
                "-o",
                str(work / "c.zip"),
                "-H",
                f"Authorization: Bearer {tok}",
                f"{base}/odata/v1/Products(bench)/$value",
            ],
            check=True,
        )
        wall = time.perf_counter() - t
        assert (work / "c.zip").stat().st_size == size
        (work / "c.zip").unlink()
        return {"wall_s": round(wall, 2), "mb_per_s": round(size / 2**20 / wall, 1)}

    def both(port: int) -> dict[str, object]:
        runs: dict[str, list[dict[str, float]]] = {
            "curl": [],
            "client": [],
            "client_blake3_only": [],
        }
        for i in range(2):  # alternate, keep the best of each
            runs["curl"].append(curl_run(port))
            runs["client"].append(client_run(port, f"c{i}"))
            runs["client_blake3_only"].append(client_run(port, f"b{i}", "strongest"))
        return runs

    try:
        runs = with_server(blob, [], both)
        cut = size // 2

        def cut_run(port: int) -> dict[str, object]:
            r: dict[str, object] = dict(client_run(port, "cut"))
            stats = requests.get(f"http://127.0.0.1:{port}/_stats").json()
            r["server_bytes_sent"] = stats["bytes_sent"]
            r["ranges"] = stats["ranges"]
            r["bytes_sent_again"] = stats["bytes_sent"] - size
            return r

        resumed = with_server(blob, [cut], cut_run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best_curl = min(r["wall_s"] for r in runs["curl"])  # type: ignore[union-attr]
    best_client = min(r["wall_s"] for r in runs["client"])  # type: ignore[union-attr]
    best_b3 = min(r["wall_s"] for r in runs["client_blake3_only"])  # type: ignore[union-attr]
    write_results(
        args.out,
        "download",
        {
            "size_mb": args.size_mb,
            "runs": runs,
            "throughput_ratio_client_over_curl": round(best_curl / best_client, 3),
            "throughput_ratio_client_blake3_only_over_curl": round(best_curl / best_b3, 3),
            "with_cut_at_half": {**resumed, "cut_at_byte": cut},
            "target_ratio": 0.9,
        },
    )


if __name__ == "__main__":
    main()
