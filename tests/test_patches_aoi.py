"""An area of interest: only the tiles that touch it, only the patches that intersect it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import rasterio
import yaml
from pyproj import Transformer

from ben_builder import archive
from ben_builder.chain.run import run
from ben_builder.config import load_config
from ben_builder.errors import SpecError
from ben_builder.patches.aoi import patches_in, read_area, touches_tile
from ben_builder.patches.grid import PatchGrid
from ben_builder.patches.tiles import tile_geometry
from ben_builder.sources.synthetic.products import datatake_recipes
from ben_builder.sources.synthetic.writer import write_dataset


def _box_around(tile_id: str, x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """A lon/lat box of the tile's UTM rectangle (metres from its corner)."""
    g = tile_geometry(tile_id)
    to_ll = Transformer.from_crs(g.epsg, 4326, always_xy=True)
    lon, lat = to_ll.transform([g.ulx_m + x0, g.ulx_m + x1], [g.uly_m - y1, g.uly_m - y0])
    return [min(lon), min(lat), max(lon), max(lat)]


def test_the_area_picks_tiles_and_patches_at_full_size(tmp_path):
    box = _box_around("T30TUK", 3_000, 3_000, 8_000, 7_000)
    wkt = read_area(tuple(box), None)  # type: ignore[arg-type]
    assert touches_tile(wkt, tile_geometry("T30TUK")) and not touches_tile(
        wkt, tile_geometry("T30TVK")
    )
    inside = patches_in(wkt, PatchGrid(tile_geometry("T30TUK"), 1200))
    # 3-8 km east and 3-7 km south of the corner: columns 2-6, rows 2-5 (a lon/lat box is a
    # little wider than the UTM rectangle it was made from)
    rows, cols = inside.nonzero()
    assert {2, 3, 4, 5} <= set(rows) <= {1, 2, 3, 4, 5, 6}
    assert {2, 3, 4, 5, 6} <= set(cols) <= {1, 2, 3, 4, 5, 6, 7}
    path = tmp_path / "aoi.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [
                                [
                                    [box[0], box[1]],
                                    [box[2], box[1]],
                                    [box[2], box[3]],
                                    [box[0], box[3]],
                                    [box[0], box[1]],
                                ]
                            ],
                        },
                    }
                ],
            }
        )
    )
    assert (
        patches_in(read_area(None, path), PatchGrid(tile_geometry("T30TUK"), 1200)) == inside
    ).all()
    with pytest.raises(SpecError, match="either bbox"):
        read_area(None, None)
    with pytest.raises(SpecError, match="west, south, east, north"):
        read_area((1.0, 2.0, 0.0, 3.0), None)
    with pytest.raises(SpecError, match="cannot read the area of interest"):
        read_area(None, tmp_path / "absent.gpkg")


def test_a_run_keeps_only_the_tiles_and_patches_of_the_area(tmp_path):
    with rasterio.Env():
        written = write_dataset(datatake_recipes(("T30TVK", "T30TUK")), tmp_path / "in", 1260)
    cfg = {
        "name": "aoi",
        "output": str(tmp_path / "archive"),
        "inputs": {
            "source": "local",
            "products_dir": str(tmp_path / "in" / "products"),
            "clc_path": str(written.clc),
        },
        "aoi": {"bbox": _box_around("T30TUK", 3_000, 3_000, 8_000, 7_000)},
        "cluster": {"kind": "local", "n_workers": 1},
        "report_samples": 0,
    }
    (tmp_path / "aoi.yaml").write_text(yaml.safe_dump(cfg))
    result = run(load_config(tmp_path / "aoi.yaml"), progress=False)
    assert not result.failures
    tuk = next(p for p in written.products if "T30TUK" in p.name)
    assert [r.product for r in result.results] == [tuk.name]
    assert any("T30TVK does not touch the aoi" in n for n in result.warnings)
    meta = pd.concat(
        [
            pd.read_parquet(tmp_path / "archive" / archive.METADATA),
            pd.read_parquet(tmp_path / "archive" / archive.FLAGGED),
        ]
    )
    cells = {tuple(int(v) for v in p.rsplit("_", 2)[1:]) for p in meta.patch_id}
    assert cells and all(1 <= x <= 7 and 1 <= y <= 6 for x, y in cells)
    summary = result.results[0].summary or {}
    assert summary["dropped_outside_aoi"] >= 100 - 7 * 6
