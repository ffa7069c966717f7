"""No ground twice: the grid arithmetic at full size, and the pixels on small tiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import rasterio

from ben_builder import archive
from ben_builder.archive.finalize import read_parts
from ben_builder.chain.product import Options
from ben_builder.chain.serial import run_serial
from ben_builder.patches.grid import PatchGrid
from ben_builder.patches.overlap import kept_places
from ben_builder.patches.tiles import tile_geometry
from ben_builder.sources.synthetic.products import datatake_recipes
from ben_builder.sources.synthetic.writer import write_dataset


def _kept(tile_id: str, others: tuple[str, ...]) -> np.ndarray:
    g = tile_geometry(tile_id)
    return kept_places(tile_id, g, PatchGrid(g, 1200), others)


def test_same_zone_neighbours_keep_each_place_once_at_full_size():
    """T30TUK (x from 299,960) and T30TVK (x from 399,960) share 9,800 m of ground.

    TUK's columns 83-90 have their centres east of 400,000 m, in TVK's own 100 km square: left
    out for its rows 0-82 (inside both squares' rows), 8 x 83 = 664. Rows 83-90 lie in neither
    tile's own square; the smaller tile id keeps them, so TVK leaves out its columns 0-7 there
    (centres west of TUK's edge at 409,760 m), 8 x 8 = 64.
    """
    tuk, tvk = _kept("T30TUK", ("T30TUK", "T30TVK")), _kept("T30TVK", ("T30TUK", "T30TVK"))
    assert (~tuk).sum() == 664 and (~tuk)[:83, 83:].all() and tuk[83:, :].all()
    assert (~tvk).sum() == 64 and (~tvk)[83:, :8].all()
    # alone, a tile keeps all 8,281; an unrelated tile changes nothing
    assert _kept("T30TUK", ("T30TUK", "T33UUP")).all()


def test_a_place_belongs_to_exactly_one_tile_also_across_a_zone_border():
    """Every patch centre both tiles cover is kept by exactly one (T30TYP | T31TCJ, full size)."""
    from pyproj import Transformer

    tiles = ("T30TYP", "T31TCJ")
    kept = {t: _kept(t, tiles) for t in tiles}
    assert (~kept["T31TCJ"]).sum() > 0 and (~kept["T30TYP"]).sum() > 0
    # a kept centre of one tile that the other tile also covers: the other must leave it out,
    # checked on the other's own grid at the nearest patch
    a, b = (tile_geometry(t) for t in tiles)
    to_b = Transformer.from_crs(a.epsg, b.epsg, always_xy=True)
    rows, cols = np.nonzero(kept["T30TYP"])
    x, y = to_b.transform(a.ulx_m + 1200 * cols + 600, a.uly_m - 1200 * rows - 600)
    cb, rb = np.floor((np.asarray(x) - b.ulx_m) / 1200), np.floor((b.uly_m - np.asarray(y)) / 1200)
    inside = (cb >= 0) & (cb < 91) & (rb >= 0) & (rb < 91)
    # the other tile's patch under a kept centre is its own only where its own square holds it
    assert inside.any()
    assert not kept["T31TCJ"][rb[inside].astype(int), cb[inside].astype(int)].all()


def test_a_small_tile_across_a_zone_border_leaves_out_what_its_neighbour_keeps(tmp_path):
    """Pixels: T31TCJ's upper-left patches lie on T30TYP's ground; once-mode leaves them out."""
    with rasterio.Env():
        written = write_dataset(datatake_recipes(("T30TYP", "T31TCJ")), tmp_path / "in", 1260)
    tcj = next(p for p in written.products if "T31TCJ" in p.name)
    expected = (~_kept("T31TCJ", ("T30TYP", "T31TCJ")))[:10, :10].sum()
    assert expected > 0
    once = run_serial(written.products, tmp_path / "once", Options(clc_path=written.clc), False)
    keep = run_serial(
        written.products, tmp_path / "keep", Options(clc_path=written.clc), False, overlap="keep"
    )
    assert not once.failures and not keep.failures
    rows_once, rows_keep = read_parts(tmp_path / "once"), read_parts(tmp_path / "keep")
    stem = tcj.name.rsplit("_", 1)[0]
    dropped = set(rows_keep.patch_id) - set(rows_once.patch_id)
    assert dropped and all(p.startswith(stem) for p in dropped)
    summary = pd.read_json(tmp_path / "once" / archive.PARTS_DIR / f"{stem}.json", typ="series")
    # the places the neighbour keeps, less those dropped before for their labels
    assert len(dropped) == summary["dropped_overlap"] > expected - summary["dropped_unlabeled"] - 1
    assert not (tmp_path / "once" / archive.S2_DIR / stem / next(iter(dropped))).exists()
