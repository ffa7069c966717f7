"""The run report next to the archive: counts, label distribution, quicklooks, failures, versions.

Written as ``report/report.md`` with PNG figures and a machine-readable ``report/run.json``.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio

from ben_builder import __version__, archive, specs
from ben_builder.archive.finalize import read_parts
from ben_builder.chain.results import RunResult, TaskResult
from ben_builder.config import RunConfig
from ben_builder.files import write_bytes
from ben_builder.patches.screen import COUNT_KEYS

REPORT_DIR = "report"
PACKAGES = (
    "numpy",
    "rasterio",
    "pyproj",
    "shapely",
    "geopandas",
    "pyogrio",
    "pyarrow",
    "pandas",
    "dask",
    "distributed",
    "pydantic",
)


def versions() -> dict[str, str]:
    """Versions of ben_builder, Python, GDAL and the main libraries."""
    out = {
        "ben_builder": __version__,
        "python": platform.python_version(),
        "gdal": rasterio.__gdal_version__,
    }
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _label_plot(meta: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = specs.nomenclature().names
    counts = Counter(label for labels in meta["labels"] for label in labels)
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.barh(range(len(names)), [counts.get(n, 0) for n in names], color="#4c72b0")
    ax.set_yticks(
        range(len(names)), [n if len(n) < 48 else n[:45] + "..." for n in names], fontsize=8
    )
    ax.invert_yaxis()
    ax.set_xlabel("patches")
    ax.set_title("Label distribution (19 classes, recommended patches)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rgb(root: Path, row: Any) -> np.ndarray:
    folder = archive.patch_dir(root, row.product.rsplit("_", 1)[0], row.patch_id)
    planes = []
    for band in ("B04", "B03", "B02"):
        with rasterio.open(folder / f"{row.patch_id}_{band}.tif") as ds:
            planes.append(ds.read(1).astype(np.float32))
    return np.clip(np.stack(planes, axis=-1) / 2500.0, 0, 1)


def _quicklook(root: Path, parts: pd.DataFrame, n: int, path: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not len(parts) or n == 0 or not (root / archive.S2_DIR).exists():
        return 0
    # a deterministic, spread-out sample: every k-th patch in patch_id order
    step = max(1, len(parts) // n)
    sample = parts.iloc[::step].head(n)
    cols = min(6, len(sample))
    rows = -(-len(sample) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), sample.itertuples(), strict=False):
        ax.imshow(_rgb(root, row))
        flags = ("C" if row.contains_cloud_or_shadow else "") + (
            "S" if row.contains_seasonal_snow else ""
        )
        labels: list[str] = list(getattr(row, "labels"))  # noqa: B009 (itertuples row)
        text = "\n".join(lbl[:22] for lbl in labels[:3])
        ax.set_title(f"{row.x},{row.y} {flags}\n{text}", fontsize=6)
    fig.suptitle("Sample patches (RGB B04/B03/B02; C = cloud/shadow, S = snow)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return len(sample)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _offsets(offsets: dict[str, int]) -> str:
    values = set(offsets.values())
    if not values:
        return "none"
    return f"{values.pop():+d} (all bands)" if len(values) == 1 else str(offsets)


def _verified(v: dict[str, Any] | None) -> str:
    if v is None:
        return "off"
    if not v.get("manifest"):
        return f"no manifest; {v.get('crc_checked', 0)} zip CRCs"
    algos = "/".join(v.get("algorithms", []))
    done = f"{v.get('files_checked', 0)} files {algos} ok"
    return done


def _metadata(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The archive's metadata and flagged rows; the products' parts where finalisation failed."""
    try:
        return pd.read_parquet(root / archive.METADATA), pd.read_parquet(root / archive.FLAGGED)
    except FileNotFoundError:
        parts = read_parts(root)
        mask = parts["flagged"].astype(bool) if "flagged" in parts else parts["patch_id"].isna()
        return parts.loc[~mask], parts.loc[mask]


def write_report(config: RunConfig, result: RunResult, clc: Path | None) -> Path:
    """Write the report for a finished run under ``<output>/report/`` and return its path."""
    root = config.output
    folder = root / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    meta, flagged = _metadata(root)
    ok = [r for r in result.results if r.ok and r.summary]
    totals = {k: sum(int(r.summary.get(k, 0)) for r in ok if r.summary) for k in COUNT_KEYS}
    _label_plot(meta, folder / "label_distribution.png")
    shown = _quicklook(root, read_parts(root), config.report_samples, folder / "quicklook.png")
    md = [
        f"# Run report: {config.name}",
        "",
        f"Archive: `{root}`  ",
        f"Wall time: {result.seconds:.1f} s; products: {len(result.results)} "
        f"({len(result.failures)} failed)",
        "",
    ]
    md += _counts(result, ok, totals, meta, flagged)
    md += ["## Label distribution", "", "![labels](label_distribution.png)", ""]
    if shown:
        md += ["## Sample patches", "", "![quicklook](quicklook.png)", ""]
    md += _timings(ok)
    md += _products(result, ok)
    md += _s1(result)
    md += _inputs(ok, clc)
    md += [
        "## Software",
        "",
        _table([[k, v] for k, v in versions().items()], ["package", "version"]),
    ]
    report = folder / "report.md"
    write_bytes(report, ("\n".join(md) + "\n").encode())
    run_json = {
        "name": config.name,
        "seconds": round(result.seconds, 2),
        "counts": result.counts,
        "totals": totals,
        "results": [asdict(r) for r in result.results],
        "skipped": [
            {"product": d.path.name, "kept": d.kept.name, "reason": d.reason}
            for d in result.skipped
        ],
        "warnings": result.warnings,
        "versions": versions(),
        "clc": str(clc) if clc else None,
        "s1": asdict(result.s1) if result.s1 is not None else None,
        "stopped_by": result.stopped_by or None,
    }
    write_bytes(folder / "run.json", json.dumps(run_json, indent=2).encode())
    return report


def _counts(
    result: RunResult,
    ok: list[TaskResult],
    totals: dict[str, int],
    meta: pd.DataFrame,
    flagged: pd.DataFrame,
) -> list[str]:
    """The report's counts: per stage, per tile, and flagged patches per reason."""
    split_counts = meta["split"].value_counts().to_dict() if len(meta) else {}
    md = ["## Counts", "", _table([[k, v] for k, v in totals.items()], ["stage", "patches"]), ""]
    md += [
        f"metadata.parquet: {result.counts.get('metadata', 0)} patches "
        f"(split: {split_counts}); flagged-patches parquet: {result.counts.get('flagged', 0)}",
        "",
    ]
    md += [
        "## Per tile",
        "",
        _table(
            [
                [
                    r.product,
                    *(r.summary.get(k, 0) for k in COUNT_KEYS),
                    "yes" if r.summary.get("skipped") else "",
                ]
                for r in ok
                if r.summary
            ],
            ["product", *COUNT_KEYS, "resumed"],
        ),
        "",
    ]
    md += [
        "## Flagged patches per reason",
        "",
        _table(
            [
                [
                    "cloud or shadow",
                    int(flagged["contains_cloud_or_shadow"].sum()) if len(flagged) else 0,
                ],
                [
                    "seasonal snow",
                    int(flagged["contains_seasonal_snow"].sum()) if len(flagged) else 0,
                ],
            ],
            ["reason", "patches"],
        ),
        "",
    ]
    return md


def _timings(ok: list[TaskResult]) -> list[str]:
    """Seconds per stage, summed over the products processed in this run (not the resumed)."""
    stage_s: Counter[str] = Counter()
    for r in ok:
        if r.summary and not r.summary.get("skipped"):
            stage_s.update(r.summary.get("seconds", {}))
    return [
        "## Timings per stage (seconds, summed over products processed in this run)",
        "",
        _table([[k, f"{v:.1f}"] for k, v in sorted(stage_s.items())], ["stage", "s"]),
        "",
    ]


def _products(result: RunResult, ok: list[TaskResult]) -> list[str]:
    """Failures, the products as read, skipped duplicates and warnings."""
    md: list[str] = []
    if result.failures:
        md += [
            "## Failures",
            "",
            _table(
                [[r.product, r.stage, (r.error or "").replace("|", "/")] for r in result.failures],
                ["product", "stage", "error"],
            ),
            "",
            "Tracebacks are in run.json.",
            "",
        ]
    md += [
        "## Products (as read; offsets applied to reach the pre-04.00 DN convention)",
        "",
        _table(
            [
                [
                    r.product,
                    (i := r.summary.get("product_info", {})).get("level"),
                    i.get("processing_baseline"),
                    i.get("quantification_value"),
                    _offsets(i.get("radiometric_offset", {})),
                    i.get("image_format"),
                    _verified(r.summary.get("verification")),
                ]
                for r in ok
                if r.summary
            ],
            [
                "product",
                "level",
                "baseline",
                "quantification",
                "offsets applied",
                "format",
                "manifest check",
            ],
        ),
        "",
    ]
    if result.skipped:
        rows = [[d.path.name, d.reason] for d in result.skipped]
        md += ["## Skipped duplicates", "", _table(rows, ["product", "reason"]), ""]
    if result.warnings:
        md += ["## Warnings", "", *[f"- {w}" for w in result.warnings], ""]
    return md


def _inputs(ok: list[TaskResult], clc: Path | None) -> list[str]:
    """The SHA-256 of every input: products, the CLC file and ``data_specs/``."""
    shared = (
        next((r.summary.get("inputs") for r in ok if r.summary and r.summary.get("inputs")), None)
        or {}
    )
    rows = [[r.product, r.sha256 or ""] for r in ok]
    if clc is not None:
        rows.append([f"CLC `{clc}`", shared.get("clc_sha256", "")])
    if shared:
        rows.append(["data_specs/", shared.get("specs_sha256", "")])
    return ["## Inputs (SHA-256)", "", _table(rows, ["input", "sha256"]), ""]


def _s1(result: RunResult) -> list[str]:
    """The Sentinel-1 stage: files placed and kept, folders removed, patches that failed."""
    s1 = result.s1
    if s1 is None:
        return []
    md = [
        "## Sentinel-1 (BigEarthNet-S1)",
        "",
        f"{s1.placed} files placed, {s1.kept} already in place, {s1.removed} folders no patch "
        f"asks for removed, {len(s1.failures)} patches failed.",
        "",
    ]
    if s1.failures:
        rows = [[f.patch_id, f.s1_name, f.error.replace("|", "/")] for f in s1.failures]
        md += [_table(rows, ["patch", "s1_name", "error"]), ""]
    return md


def write_stopped_report(config: RunConfig, error: BaseException) -> Path:
    """The report of a run stopped before its products (a hub unreachable, a folder empty).

    Written where the run began (``<output>/report/``), so a batch job's folder says what
    happened; the error itself is raised on by the caller.
    """
    folder = config.output / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    message = f"{type(error).__name__}: {error}"
    md = [f"# Run report: {config.name}", "", "## Stopped before any product", "", message, ""]
    report = folder / "report.md"
    write_bytes(report, ("\n".join(md) + "\n").encode())
    run_json = {"name": config.name, "stopped": message, "versions": versions()}
    write_bytes(folder / "run.json", json.dumps(run_json, indent=2).encode())
    return report
