"""Checks before any decoding: what a run would do, and whether it can.

Hours of decoding should not end in a missing CLC or a read-only output. Before the first task,
:func:`preflight` opens every product's metadata (XML only), checks the CLC file (layer, field,
CRS) and that it covers at least one product's tile, that the output is writable, and that the
disk has room for the archive's estimated size. ``ben-builder build --check`` runs only this and
prints the plan.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ben_builder import specs
from ben_builder.errors import BenBuilderError, PreflightError
from ben_builder.patches.clc import check_clc, clc_covers
from ben_builder.patches.grid import PatchGrid
from ben_builder.product.reader import open_product

log = logging.getLogger(__name__)

#: Bytes per patch in the v2 layout: 12 uncompressed band files and headers (~175 KB), and a
#: reference map (a few KB); an upper bound (every candidate kept).
BYTES_PER_PATCH = 180_000


@dataclass(frozen=True)
class PlannedProduct:
    """One product the run would process."""

    name: str
    tile_id: str
    level: str
    candidates: int
    clc_covers: bool | None


@dataclass
class Plan:
    """What a run would do, and what stands in its way."""

    products: list[PlannedProduct] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    disk_needed_bytes: int = 0
    disk_free_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def tiles(self) -> list[str]:
        """The tiles of the products, sorted."""
        return sorted({p.tile_id for p in self.products})

    @property
    def candidates(self) -> int:
        """Patches the products would be cut into, before screening."""
        return sum(p.candidates for p in self.products)

    def lines(self) -> list[str]:
        """The plan for a terminal."""
        gib = 1024**3
        if not self.products and not self.unreadable:
            return [f"checked {c}" for c in self.checked] + [f"WARNING {w}" for w in self.warnings]
        out = [
            f"products: {len(self.products)} ({plural(len(self.tiles), 'tile')}: "
            f"{', '.join(self.tiles)})",
            f"patches (candidates before screening): {self.candidates:,}",
            f"disk: up to {self.disk_needed_bytes / gib:.1f} GiB needed, "
            f"{self.disk_free_bytes / gib:.1f} GiB free",
        ]
        out += [f"  {p.name} [{p.level}, {p.candidates:,} candidates]" for p in self.products]
        out += [f"unreadable {name}: {why}" for name, why in self.unreadable.items()]
        out += [f"WARNING {w}" for w in self.warnings]
        return out


def plural(n: int, noun: str) -> str:
    """``"1 tile"``, ``"2 tiles"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def check_writable(folder: Path) -> None:
    """Raise PreflightError unless files can be created in ``folder`` (created if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise PreflightError(
            f"{folder}: output folder is not writable ({exc.strerror or exc}); choose another "
            "output or fix its permissions"
        ) from exc


def check_v1_names(products: list[Path], from_table: bool = False) -> None:
    """Refuse products whose v1-layout folders would collide, before anything is decoded.

    A v1 name (``<mission>_MSIL2A_<sensing>_<x>_<y>``) names neither the tile nor the level, and
    every tile of one datatake shares the sensing time: two products of one mission and sensing
    time would write into the same folders, one overwriting the other's bands under a JSON that
    names either. A reproduction takes v1's own names from its table (``from_table``); there
    only the L1C and L2A of one acquisition collide.

    Raises:
        PreflightError: naming both products, and what to do.
    """
    from ben_builder.product.names import ProductName

    seen: dict[tuple[str, ...], str] = {}
    for p in products:
        try:
            n = ProductName.parse(p.name)
        except BenBuilderError:
            continue
        key: tuple[str, ...] = (n.mission, f"{n.sensing_time:%Y%m%dT%H%M%S}")
        if from_table:
            key += (str(n.relative_orbit), n.tile_id)
        if key in seen:
            why = (
                "the v1 layout does not name the processing level"
                if seen[key].split("_")[5] == n.tile_id
                else "tiles of one datatake share the sensing time, and v1 names carry no tile"
            )
            raise PreflightError(
                f"{seen[key]} and {p.name} would get the same v1 names ({why}): build the v1 "
                "layout from one of them (one level, one tile per datatake), or use the v2 "
                "layout, whose patch names carry the tile and level"
            )
        seen[key] = p.name


def preflight(
    products: list[Path],
    clc: Path | None,
    out: Path,
    layout: str = "v2",
    v1_from_table: bool = False,
) -> Plan:
    """Check a run's inputs and output before any work.

    Args:
        products: The products the run would process.
        clc: The CLC file (None: unlabelled patches).
        out: The archive folder.
        layout: ``v2``, ``v1`` or ``both`` (v1 names must not collide).
        v1_from_table: v1 names come from v1's table (a reproduction), not the formula.

    Returns:
        The plan. Products whose metadata cannot be read are listed in ``unreadable`` (the run
        records them as failures of stage ``open``).

    Raises:
        PreflightError: the output is not writable, the CLC file is unusable or covers none of the
            tiles, or the disk cannot hold even one tile's patches.
    """
    check_writable(out)
    if layout in ("v1", "both"):
        check_v1_names(products, from_table=v1_from_table)
    plan = Plan()
    band_spec, clc_spec = specs.bands(), specs.clc()
    if clc is not None:
        check_clc(clc, clc_spec)
    for path in products:
        try:
            product = open_product(path)
        except BenBuilderError as exc:
            plan.unreadable[path.name] = str(exc)
            continue
        ny, nx = PatchGrid(product.tile, band_spec.patch_size_m).shape
        n = ny * nx
        covers = clc_covers(clc, product.tile, clc_spec) if clc is not None else None
        plan.products.append(
            PlannedProduct(path.name, product.name.tile_id, product.level, n, covers)
        )
        if covers is False:
            plan.warnings.append(
                f"{path.name}: no CLC polygon near tile {product.name.tile_id} in {clc}; its "
                "patches would all be unlabelled and dropped"
            )
    if clc is not None and plan.products and not any(p.clc_covers for p in plan.products):
        raise PreflightError(
            f"{clc} covers none of the tiles {plan.tiles}: is it the CLC file of this region "
            "(the official one covers the EEA39 countries)?"
        )
    plan.disk_free_bytes = shutil.disk_usage(out).free
    plan.disk_needed_bytes = plan.candidates * BYTES_PER_PATCH
    one_tile = max((p.candidates for p in plan.products), default=0) * BYTES_PER_PATCH
    if plan.disk_free_bytes < one_tile:
        raise PreflightError(
            f"{out}: {plan.disk_free_bytes / 1024**3:.1f} GiB free, one tile's patches take up to "
            f"{one_tile / 1024**3:.1f} GiB; free space or choose another output"
        )
    if plan.disk_free_bytes < plan.disk_needed_bytes:
        plan.warnings.append(
            f"{out}: {plan.disk_free_bytes / 1024**3:.1f} GiB free, the archive may need up to "
            f"{plan.disk_needed_bytes / 1024**3:.1f} GiB (fewer if many patches are dropped)"
        )
    for w in plan.warnings:
        log.warning("%s", w)
    return plan
