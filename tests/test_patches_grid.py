import numpy as np
import pytest

from ben_builder.patches.grid import PatchGrid, TileGeometry, split_for

T33UUP = TileGeometry(epsg=32633, ulx_m=300000, uly_m=5400000, size_m=109800)


def test_full_tile_has_91_by_91_patches():
    grid = PatchGrid(T33UUP, 1200)
    assert grid.shape == (91, 91)
    assert len(grid) == 8281
    assert len(list(grid)) == 8281


def test_patch_geometry_and_name_follow_the_grid_rule():
    grid = PatchGrid(T33UUP, 1200)
    p = grid.patch(26, 57)
    assert (p.ulx_m, p.uly_m) == (300000 + 1200 * 26, 5400000 - 1200 * 57)
    assert p.name("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP") == (
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57"
    )
    t = p.transform(20)
    assert (t.a, t.e, t.c, t.f) == (20, -20, p.ulx_m, p.uly_m)
    with pytest.raises(IndexError):
        grid.patch(91, 0)


def test_blocks_slice_patches_and_drop_partial_edge():
    tile = TileGeometry(32633, 0, 0, 2460)  # 2 x 2 patches, 60 m left over
    grid = PatchGrid(tile, 1200)
    band = np.arange(246 * 246, dtype=np.uint32).reshape(246, 246)
    blocks = grid.blocks(band, 10)
    assert blocks.shape == (2, 2, 120, 120)
    np.testing.assert_array_equal(blocks[1, 0], band[120:240, 0:120])  # y=1, x=0
    np.testing.assert_array_equal(blocks[0, 1], band[0:120, 120:240])
    with pytest.raises(ValueError):
        grid.blocks(band[:-1], 10)


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (45, 45, "test"),
        (23, 45, "test"),
        (22, 45, "validation"),
        (0, 0, "train"),
        (10, 10, "train"),
    ],
)
def test_split_rule(x, y, expected):
    grid = PatchGrid(T33UUP, 1200)
    assert split_for(grid.patch(x, y), T33UUP) == expected


def test_split_boundaries_match_chebyshev_distance():
    grid = PatchGrid(T33UUP, 1200)
    s = T33UUP.size_m
    cx, cy = T33UUP.centre_m
    for p in grid:
        d = max(abs(p.centre_m[0] - cx), abs(p.centre_m[1] - cy))
        want = "test" if d <= s / 4 else "validation" if d <= s * 2**0.5 / 4 else "train"
        assert split_for(p, T33UUP) == want


def test_nodata_share_per_patch_is_the_largest_over_bands_across_row_steps():
    from ben_builder.patches.screen import ROWS_PER_STEP, nodata_fraction

    rows = 2 * ROWS_PER_STEP + 1  # more patch rows than one step, and a partial last step
    tile = TileGeometry(32633, 0, 0, 1200 * rows + 60)  # and a partial edge, ignored
    grid = PatchGrid(tile, 1200)
    rng = np.random.default_rng(5)
    b10 = rng.integers(1, 100, (tile.size_px(10),) * 2).astype(np.uint16)
    b20 = rng.integers(1, 100, (tile.size_px(20),) * 2).astype(np.uint16)
    scattered = rng.random(b10.shape) < 0.3
    scattered[120 * ROWS_PER_STEP : 120 * 2 * ROWS_PER_STEP] = False  # a step with none at 10 m
    b10[scattered] = 0
    b20[: 60 * 3, :60] = 0  # patches (0, 0..2) wholly no-data at 20 m
    b20[60 * ROWS_PER_STEP + 7, 60 * 2 + 5] = 0  # one pixel in that step, at 20 m only
    b10[-3:, :] = 0  # the partial edge does not count
    share = nodata_fraction(grid, [(b10, 10), (b20, 20)])
    for y in range(rows):
        for x in range(rows):
            by_band = [
                np.mean(b10[120 * y : 120 * (y + 1), 120 * x : 120 * (x + 1)] == 0),
                np.mean(b20[60 * y : 60 * (y + 1), 60 * x : 60 * (x + 1)] == 0),
            ]
            assert share[y, x] == max(by_band), (x, y)
    assert share[:3, 0].tolist() == [1.0, 1.0, 1.0]
    assert share[ROWS_PER_STEP, 2] == 1 / 60**2 and share[ROWS_PER_STEP + 1].sum() == 0


def test_scl_masks_mark_exactly_the_listed_classes_of_every_byte_value():
    from ben_builder import specs
    from ben_builder.patches.screen import masks_from_scl

    spec = specs.screening()
    scl = np.arange(256, dtype=np.uint8).reshape(16, 16)
    masks = masks_from_scl(scl, spec)
    assert masks.resolution_m == 20
    np.testing.assert_array_equal(masks.cloud_or_shadow, np.isin(scl, spec.scl_cloud_or_shadow))
    np.testing.assert_array_equal(masks.snow, np.isin(scl, spec.scl_snow))
    assert masks.cloud_or_shadow.sum() == len(spec.scl_cloud_or_shadow) and masks.snow.any()
    wide = masks_from_scl(scl.astype(np.uint16) + 256, spec)  # not bytes: no class matches
    assert not wide.cloud_or_shadow.any() and not wide.snow.any()
