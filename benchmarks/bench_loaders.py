"""Benchmark: patches per second per loader process, ours against torchgeo and configilm.

One process each (no DataLoader workers), train split of the demo archive:

- ours: ``EncodedPatches`` over the encoded LMDB (12 bands at native size; resampling happens
  on the device, a batch at a time, so it is not part of the loader's cost);
- torchgeo 0.8.1 ``BigEarthNetV2`` over the archive's GeoTIFFs (12 bands resampled to 120 px);
- configilm 0.7.1 ``BENv2DataSet`` over the same LMDB (10 bands at 120 px, nearest), in its own
  environment (``make configilm-env``).

Needs ``demo/archive`` and ``demo/encoded`` (``make train`` makes both).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results  # noqa: E402

from ben_builder.train.config import ALL_BANDS  # noqa: E402
from ben_builder.train.data import EncodedPatches  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def rate(get: object, n: int) -> float:
    get(0)  # type: ignore[operator]
    t = time.perf_counter()
    for i in range(n):
        get(i)  # type: ignore[operator]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--archive", type=Path, default=Path("demo/archive"))
    ap.add_argument("--encoded", type=Path, default=Path("demo/encoded"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/loaders.json"))
    ap.add_argument("--patches", type=int, default=600)
    args = ap.parse_args()
    ours = EncodedPatches(args.encoded, "train", 19, ALL_BANDS)
    n = min(args.patches, len(ours))
    figures: dict[str, object] = {"patches": n}
    figures["ours_patches_per_s"] = round(rate(ours.__getitem__, n), 1)
    from torchgeo.datasets import BigEarthNetV2

    tg = BigEarthNetV2(root=str(args.archive), split="train", bands="s2")
    tg_n = min(n, 150)  # GeoTIFF opens: slow, fewer patches
    figures["torchgeo_patches_per_s"] = round(rate(tg.__getitem__, tg_n), 1)
    python = REPO / ".venv-configilm" / "bin" / "python"
    if python.exists():
        script = REPO / "tests" / "compat" / "configilm_read.py"
        out = subprocess.run(
            [str(python), str(script), "--rate", str(n), str(args.encoded)],
            check=True,
            capture_output=True,
            text=True,
        )
        figures["configilm_patches_per_s"] = round(float(out.stdout.strip().splitlines()[-1]), 1)
    else:
        figures["configilm_patches_per_s"] = "not measured: run `make configilm-env`"
    write_results(args.out, "loaders", figures)


if __name__ == "__main__":
    main()
