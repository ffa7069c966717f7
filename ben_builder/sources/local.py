"""Products in a local folder: product lists, name lists, and one product per acquisition."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ben_builder.config import ProductListFilter
from ben_builder.errors import (
    SpecError,
    UnsupportedProductError,
)
from ben_builder.product.names import ProductName, acquisition, bare_name
from ben_builder.sources import Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Duplicate:
    """A product left out because another product of the same acquisition was chosen."""

    path: Path
    kept: Path
    reason: str


def select_products(
    paths: Iterable[Path], rule: str = "latest"
) -> tuple[list[Path], list[Duplicate]]:
    """One product per acquisition: reprocessed copies are duplicates, not extra data.

    An acquisition is (mission, level, sensing time, relative orbit, tile). The same acquisition
    exists several times when it was reprocessed (a later generation time, often a newer
    baseline) or when a folder holds both ``.SAFE`` and ``.zip``. Patch names do not carry the
    generation time, so two such products would write over each other's patches.

    Args:
        paths: Product folders or zips. Names that do not parse are passed through (opening them
            reports the problem).
        rule: ``"latest"`` keeps the latest generation time (then the newest baseline, then the
            name, so the choice is deterministic); ``"fail"`` refuses any duplicate.

    Returns:
        The chosen products (sorted) and the duplicates left out.

    Raises:
        UnsupportedProductError: ``rule`` is ``"fail"`` and an acquisition occurs twice.
    """
    if rule not in ("latest", "fail"):
        raise ValueError(f"duplicate rule must be 'latest' or 'fail', got {rule!r}")
    groups: dict[tuple[object, ...], list[tuple[ProductName, Path]]] = {}
    passed: list[Path] = []
    for p in paths:
        try:
            n = ProductName.parse(Path(p).name)
        except UnsupportedProductError:
            passed.append(Path(p))
            continue
        key = (n.mission, n.level, n.sensing_time, n.relative_orbit, n.tile_id)
        groups.setdefault(key, []).append((n, Path(p)))
    kept, dropped = list(passed), []
    for members in groups.values():
        members.sort(key=lambda m: (m[0].generation_time, m[0].baseline, m[1].name))
        best = members[-1][1]
        kept.append(best)
        if len(members) > 1 and rule == "fail":
            raise UnsupportedProductError(
                "the same acquisition is given more than once: "
                + ", ".join(m[1].name for m in members)
                + "; remove all but one, or set duplicates: latest"
            )
        for n, p in members[:-1]:
            why = f"same acquisition as {best.name}, generated {n.generation_time:%Y%m%dT%H%M%S}"
            dropped.append(Duplicate(p, best, why))
    return sorted(kept), sorted(dropped, key=lambda d: d.path)


def _list_key(name: str, match: str) -> str | None:
    if match == "acquisition":
        try:
            return acquisition(name)
        except SpecError:
            return None
    bare = bare_name(name)
    if match == "stem" and bare.count("_") > 5:
        return bare.rsplit("_", 1)[0]
    return bare


def filter_by_list(
    found: list[Path], product_list: ProductListFilter, folder: Path
) -> tuple[list[Path], list[Unavailable]]:
    """The products of ``found`` named in the list, and each listed one absent (as a failure).

    With ``match: acquisition`` every product of a listed acquisition is kept (its L1C and L2A).
    """
    wanted = read_product_list(product_list.csv, product_list.column)
    keys = [_list_key(w, product_list.match) for w in wanted]
    bad = [w for w, k in zip(wanted, keys, strict=True) if k is None]
    if bad:
        raise SpecError(f"{product_list.csv}: {bad[:3]} are not Sentinel-2 product names")
    by_key: dict[str, list[Path]] = {}
    for p in found:
        k = _list_key(p.name, product_list.match)
        if k is not None:
            by_key.setdefault(k, []).append(p)
    kept = sorted({p for k in keys if k is not None and k in by_key for p in by_key[k]})
    missing = [
        Unavailable(
            product=w.removesuffix(".SAFE"),
            stage="discover",
            error=f"listed in {product_list.csv.name} but not in {folder}",
        )
        for w, k in zip(wanted, keys, strict=True)
        if k not in by_key
    ]
    return kept, missing


def read_product_list(path: Path, column: str) -> list[str]:
    """Values of ``column`` in a CSV file (e.g. ``../shared/bigearthnet/v2_l2a_products.csv``)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise SpecError(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
            return [row[column].strip() for row in reader if row[column].strip()]
    except OSError as exc:
        raise SpecError(f"{path}: cannot read product list ({exc.strerror})") from exc


def read_name_list(path: Path) -> set[str]:
    """Patch names from a one-name-per-line list (the published BigEarthNet flag lists)."""
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except OSError as exc:
        raise SpecError(f"{path}: cannot read patch list ({exc.strerror})") from exc
