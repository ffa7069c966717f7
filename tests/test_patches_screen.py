"""Screening: what the SCL's no-data class means for a patch, and what a band's no-data means."""

from __future__ import annotations

import numpy as np

from ben_builder import specs
from ben_builder.patches.grid import PatchGrid, TileGeometry
from ben_builder.patches.screen import masks_from_scl, nodata_fraction, screen


def _grid() -> PatchGrid:
    return PatchGrid(TileGeometry(32633, 300_000.0, 5_400_000.0, 2_400.0), 1_200)  # 2 x 2 patches


def test_isolated_scl_no_data_pixels_drop_nothing_band_no_data_does():
    """Real SCLs have isolated class-0 pixels where every band is valid: the bands decide."""
    spec = specs.screening()
    assert "scl_nodata" not in type(spec).model_fields  # the spec declares only what is read
    grid = _grid()
    scl = np.full((120, 120), 4, np.uint8)  # vegetation, 20 m
    scl[5, 7] = scl[30, 2] = 0  # isolated no-data pixels in patch (0, 0)
    scl[70, 70] = 9  # a cloud pixel in patch (1, 1)
    b02 = np.full((240, 240), 812, np.uint16)
    b11 = np.full((120, 120), 1500, np.uint16)
    b11[100, 10] = 0  # a no-data pixel of a 20 m band in patch (0, 1)
    nodata = nodata_fraction(grid, [(b02, 10), (b11, 20)])
    s = screen(grid, nodata, masks_from_scl(scl, spec), spec)
    assert s.drop_nodata.tolist() == [[False, False], [True, False]]
    assert s.cloud_or_shadow.tolist() == [[False, False], [False, True]]
    assert not s.snow.any()
