"""Benchmark: training throughput fed by the real LMDB loader vs a batch already on the device.

In one run, on whatever device is present (CUDA if any, else CPU): loader patches/s with 1 and 2
workers (no model), ResNet-50 training steps on one batch kept on the device (the ceiling), and
the same steps fed by the loader. Target (issue 6, on a GPU): loader-fed >= 0.9 x ceiling.
Needs an encoded archive (``make train`` writes ``demo/encoded``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results  # noqa: E402

from ben_builder.train.config import TrainConfig  # noqa: E402
from ben_builder.train.data import DeviceTransform, EncodedPatches, band_stats  # noqa: E402
from ben_builder.train.engine import _autocast, _loader, build_model, pick_device  # noqa: E402


def loader_rate(ds: EncodedPatches, cfg: TrainConfig, batches: int) -> float:
    loader = iter(_loader(ds, cfg, True, 0))
    next(loader)  # workers up
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(loader)["y"])
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--encoded", type=Path, default=Path("demo/encoded"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train.json"))
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    device = pick_device("auto")
    cfg = TrainConfig(
        name="bench",
        encoded=args.encoded,
        output=Path("/tmp"),
        model=args.model,
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    ds = EncodedPatches(args.encoded, "train", 19, cfg.bands)
    figures: dict[str, object] = {
        "device": str(device),
        "model": args.model,
        "batch_size": args.batch_size,
    }
    for w in (1, 2):
        c = cfg.model_copy(update={"num_workers": w})
        figures[f"loader_patches_per_s_{w}_workers"] = round(loader_rate(ds, c, 15), 1)
    tf = DeviceTransform(band_stats(ds, 200, 0), "bilinear", device, cfg.bands)
    model = build_model(cfg, {r: len(b) for r, b in ds.groups.items()}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(batch: dict[str, torch.Tensor]) -> None:
        with _autocast(device):
            x = tf.stacked(batch) if args.model == "resnet50" else tf.native(batch)
            loss = loss_fn(model(x).float(), batch["y"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    loader = iter(_loader(ds, cfg, True, 1))
    fixed = {k: v.to(device) for k, v in next(loader).items()}
    step(fixed)  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(args.steps):
        step(fixed)
    sync()
    ceiling = args.steps * args.batch_size / (time.perf_counter() - t)
    t, n = time.perf_counter(), 0
    for _ in range(args.steps):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(loader).items()}
        step(batch)
        n += len(batch["y"])
    sync()
    fed = n / (time.perf_counter() - t)
    figures.update(
        {
            "ceiling_patches_per_s": round(ceiling, 1),
            "loader_fed_patches_per_s": round(fed, 1),
            "fed_over_ceiling": round(fed / ceiling, 3),
            "target": 0.9,
            "note": "no GPU was lent to this session: CPU figures"
            if device.type == "cpu"
            else "GPU figures",
        }
    )
    write_results(args.out, "train", figures)


if __name__ == "__main__":
    main()
