"""Compare a built archive with a published release: how users prove a reproduction.

Both sides are BigEarthNet-v2-layout folders. Compared: the Arrow schema of each metadata parquet,
which patches each side has (and in which of the two parquets), every metadata column on the
patches both have, and, where both sides have the GeoTIFF folders, every band file and reference
map of those patches and, where either side has a ``BigEarthNet-S1/``, the VV and VH of each
patch's ``s1_name``: pixels, size, data type, CRS and geotransform (identical bytes are taken as
equal without decoding).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import rasterio

from ben_builder import archive, specs
from ben_builder.archive.reader import product_of, read_metadata
from ben_builder.errors import ProductNotFoundError

log = logging.getLogger(__name__)

EXAMPLES = 10
PARQUET = "parquet"


@dataclass
class Agreement:
    """How many compared items agree, and a few of those that do not."""

    compared: int = 0
    differ: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, equal: bool, example: str) -> None:
        """Count one comparison."""
        self.compared += 1
        if not equal:
            self.differ += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(example)


@dataclass
class Comparison:
    """The differences between a built archive and a reference release."""

    built: Path
    reference: Path
    patches_built: int = 0
    patches_reference: int = 0
    only_built: list[str] = field(default_factory=list)
    only_reference: list[str] = field(default_factory=list)
    schema: dict[str, str] = field(default_factory=dict)
    columns: dict[str, Agreement] = field(default_factory=dict)
    files: dict[str, Agreement] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        """Whether no difference of any kind was found."""
        return not (
            self.only_built
            or self.only_reference
            or self.schema
            or any(a.differ for a in self.columns.values())
            or any(a.differ for a in self.files.values())
        )


def _schema(path: Path) -> dict[str, str]:
    return {f.name: str(f.type) for f in pq.read_schema(path)}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and bool(np.isnan(v)))


def _same(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        return [str(v) for v in a] == [str(v) for v in b]
    return bool(a == b)


def _with_parquet(root: Path) -> pd.DataFrame:
    meta = read_metadata(root)
    flagged = (
        set(pd.read_parquet(root / archive.FLAGGED, columns=["patch_id"])["patch_id"])
        if (root / archive.FLAGGED).exists()
        else set()
    )
    meta[PARQUET] = [
        archive.FLAGGED if p in flagged else archive.METADATA for p in meta["patch_id"]
    ]
    return meta.set_index("patch_id")


def _compare_tif(a: Path, b: Path) -> str | None:
    """None when equal, else what differs."""
    if not a.exists() or not b.exists():
        return f"missing in {'built' if not a.exists() else 'reference'}"
    if a.read_bytes() == b.read_bytes():
        return None
    with rasterio.open(a) as da, rasterio.open(b) as db:
        if (da.width, da.height, da.dtypes) != (db.width, db.height, db.dtypes):
            return (
                f"size/type {da.width}x{da.height} {da.dtypes[0]} vs "
                f"{db.width}x{db.height} {db.dtypes[0]}"
            )
        if da.crs != db.crs:
            return f"CRS {da.crs} vs {db.crs}"
        if da.transform != db.transform:
            return f"geotransform {tuple(da.transform)[:6]} vs {tuple(db.transform)[:6]}"
        pa, pb = da.read(), db.read()
    if not np.array_equal(pa, pb):
        return f"{int((pa != pb).sum())} pixels differ"
    return None  # same georeferenced pixels, other encoding (tags, compression)


def _has_s1(root: Path) -> bool:
    """Whether ``root``'s ``BigEarthNet-S1/`` holds any patch."""
    s1 = root / archive.S1_DIR
    return s1.is_dir() and any(s1.iterdir())


def _patch_files(
    root: Path, patch_id: str, s1_name: str | None = None
) -> Iterable[tuple[str, Path]]:
    """The files of a patch to compare: bands, reference map, and its S1 pair's VV and VH.

    The S1 files are listed whenever ``s1_name`` is given, present or not, so a pair missing on
    one side is a difference.
    """
    if s1_name:
        folder = archive.s1_patch_dir(root, s1_name)
        for pol in ("VV", "VH"):
            yield "S1", folder / f"{s1_name}_{pol}.tif"
    product = product_of(patch_id)
    if (root / archive.S2_DIR).is_dir():
        folder = archive.patch_dir(root, product, patch_id)
        for b in specs.bands().bands:
            yield "bands", folder / f"{patch_id}_{b.name}.tif"
    if (root / archive.REFMAP_DIR).is_dir():
        yield "reference maps", archive.refmap_path(root, product, patch_id)


def compare_archives(
    built: Path,
    reference: Path,
    every: int = 1,
    on_patch: Callable[[int], None] | None = None,
) -> Comparison:
    """Compare ``built`` with ``reference`` (both BigEarthNet-v2 layout).

    Args:
        built: The archive made here.
        reference: The published release (or another archive).
        every: Compare the files of every n-th common patch (1: all of them; metadata is always
            compared in full).
        on_patch: Called with 1 per patch whose files were compared (progress).
    """
    built, reference = Path(built), Path(reference)
    for root in (built, reference):
        if not (root / archive.METADATA).exists():
            raise ProductNotFoundError(f"{root / archive.METADATA}: not found")
    out = Comparison(built, reference)
    for name in (archive.METADATA, archive.FLAGGED):
        a, b = built / name, reference / name
        if a.exists() and b.exists():
            sa, sb = _schema(a), _schema(b)
            for col in sorted(set(sa) | set(sb)):
                if sa.get(col) != sb.get(col):
                    got, want = sa.get(col, "absent"), sb.get(col, "absent")
                    out.schema[f"{name}: {col}"] = f"{got} vs {want}"
        elif a.exists() != b.exists():
            out.schema[name] = "present only in " + ("built" if a.exists() else "reference")
    mb, mr = _with_parquet(built), _with_parquet(reference)
    out.patches_built, out.patches_reference = len(mb), len(mr)
    out.only_built = sorted(set(mb.index) - set(mr.index))
    out.only_reference = sorted(set(mr.index) - set(mb.index))
    common = sorted(set(mb.index) & set(mr.index))
    columns = [c for c in mr.columns if c in mb.columns]
    for col in columns:
        agreement = Agreement()
        for patch_id, a, b in zip(common, mb.loc[common, col], mr.loc[common, col], strict=True):
            agreement.add(_same(a, b), f"{patch_id}: {a!r} vs {b!r}")
        out.columns[col] = agreement
    for col in sorted(set(mb.columns) ^ set(mr.columns)):
        out.schema[f"column {col}"] = "only in " + ("built" if col in mb.columns else "reference")
    with_s1 = "s1_name" in mb.columns and (_has_s1(built) or _has_s1(reference))
    for patch_id in common[::every]:
        s1 = mb.at[patch_id, "s1_name"] if with_s1 else None
        s1_name = s1 if isinstance(s1, str) else None
        files_b = dict(((kind, p.name), p) for kind, p in _patch_files(built, patch_id, s1_name))
        files_r = dict(
            ((kind, p.name), p) for kind, p in _patch_files(reference, patch_id, s1_name)
        )
        for key in sorted(set(files_b) & set(files_r)):
            why = _compare_tif(files_b[key], files_r[key])
            out.files.setdefault(key[0], Agreement()).add(why is None, f"{key[1]}: {why}")
        if on_patch is not None:
            on_patch(1)
    return out


def report_markdown(c: Comparison) -> str:
    """The comparison as a markdown report."""
    lines = [
        f"# Comparison: {c.built} vs {c.reference}",
        "",
        f"**{'IDENTICAL' if c.identical else 'DIFFERENT'}**",
        "",
        f"- patches: {c.patches_built:,} built, {c.patches_reference:,} reference",
        f"- only in the built archive: {len(c.only_built):,}",
        f"- only in the reference: {len(c.only_reference):,}",
        "",
    ]
    for title, names in (
        ("Only in the built archive", c.only_built),
        ("Only in the reference", c.only_reference),
    ):
        if names:
            lines += [f"## {title} (first {min(len(names), EXAMPLES)})", ""]
            lines += [f"- {n}" for n in names[:EXAMPLES]] + [""]
    if c.schema:
        lines += ["## Schema differences (built vs reference)", ""]
        lines += [f"- {k}: {v}" for k, v in c.schema.items()] + [""]
    for title, table in (("Metadata columns", c.columns), ("Files", c.files)):
        lines += [f"## {title}", "", "| | compared | differ | agree |", "|---|---:|---:|---:|"]
        for name, a in table.items():
            share = 100.0 * (a.compared - a.differ) / a.compared if a.compared else 100.0
            lines.append(f"| {name} | {a.compared:,} | {a.differ:,} | {share:.3f} % |")
        lines.append("")
        for name, a in table.items():
            if a.examples:
                lines += [f"### {name}: first differences", ""]
                lines += [f"- {e}" for e in a.examples] + [""]
    return "\n".join(lines)
