"""Labelling from CLC 2018 and screening, against ground truth and hand-made cases."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from ben_builder import archive, specs
from ben_builder.archive.finalize import finalize
from ben_builder.chain.product import Options, process_product
from ben_builder.errors import ClcError
from ben_builder.patches.clc import geojson_shapes, rasterize_codes, read_clc
from ben_builder.patches.grid import PatchGrid, TileGeometry
from ben_builder.patches.labels import label_patches


@pytest.fixture(scope="module")
def labelled(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("labelled")
    summaries = {
        r: process_product(p, out, Options(clc_path=synthetic.clc))
        for r, p in zip(synthetic.recipes, synthetic.products, strict=True)
    }
    counts = finalize(out)
    return out, summaries, counts


def test_labels_refmaps_and_flags_match_ground_truth(synthetic, labelled):
    out, summaries, _ = labelled
    max_unl = specs.nomenclature().max_unlabeled_fraction
    for recipe, summary in summaries.items():
        truth = pd.read_parquet(synthetic.root / "ground_truth" / f"{recipe.stem}.parquet")
        part = pd.read_parquet(archive.part_path(out, recipe.stem)).set_index("patch_id")
        keep = truth[~truth.has_nodata & (truth.unlabeled_fraction < max_unl)]
        assert sorted(part.index) == sorted(keep.patch_id), recipe.name
        assert summary.dropped_nodata == truth.has_nodata.sum()
        assert (
            summary.dropped_unlabeled
            == ((~truth.has_nodata) & (truth.unlabeled_fraction >= max_unl)).sum()
        )
        assert summary.dropped_unlabeled > 0 or recipe.tile_id == "T34VER"
        scene = synthetic.scene(recipe)
        codes = scene.codes_at(10)
        for row in keep.itertuples():
            got = part.loc[row.patch_id]
            assert list(got.labels) == list(row.labels)
            assert list(got.labels43) == list(row.labels43)
            assert got.contains_cloud_or_shadow == row.cloud_or_shadow, row.patch_id
            snow_truth = row.snow and (recipe.level == "L2A" or recipe.offset != 0)
            assert got.contains_seasonal_snow == snow_truth, row.patch_id
            ref = archive.refmap_path(out, recipe.stem, row.patch_id)
            with rasterio.open(ref) as ds:
                assert ds.dtypes[0] == "uint16" and ds.profile["compress"] == "deflate"
                assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
                assert (ds.transform.c, ds.transform.f) == (got.ulx_m, got.uly_m)
                want = codes[row.y * 120 : (row.y + 1) * 120, row.x * 120 : (row.x + 1) * 120]
                np.testing.assert_array_equal(ds.read(1), want)


def test_metadata_and_flagged_parquet(labelled):
    out, summaries, counts = labelled
    meta = pd.read_parquet(out / archive.METADATA)
    flagged = pd.read_parquet(out / archive.FLAGGED)
    assert list(meta.columns) == list(archive.METADATA_COLUMNS)
    assert len(meta) == counts["metadata"] and len(flagged) == counts["flagged"]
    assert len(meta) + len(flagged) == sum(s.kept for s in summaries.values())
    assert not (meta.contains_cloud_or_shadow | meta.contains_seasonal_snow).any()
    assert (flagged.contains_cloud_or_shadow | flagged.contains_seasonal_snow).all()
    assert meta.patch_id.is_monotonic_increasing
    assert flagged.contains_seasonal_snow.any() and flagged.contains_cloud_or_shadow.any()
    names = set(specs.nomenclature().names)
    assert all(len(x) > 0 and set(x) <= names for x in meta.labels)
    assert all(list(x) == sorted(x) for x in meta.labels)  # published order: alphabetical
    assert any(len(x) > 1 for x in meta.labels)
    for name in (archive.METADATA, archive.FLAGGED):  # the published Arrow types
        schema = pq.read_schema(out / name)
        assert schema.remove_metadata() == archive.METADATA_SCHEMA, name
        assert str(schema.field("patch_id").type) == "string"
        assert str(schema.field("s1_name").type) == "string"
        assert str(schema.field("labels").type.value_type) == "string"


def test_reference_map_is_deflate_predictor2_like_gdal_writes_it(labelled, tmp_path):
    """The published format (deflate, PREDICTOR=2) and every tag GDAL would write for it."""
    out, _, _ = labelled
    refs = sorted((out / archive.REFMAP_DIR).rglob("*_reference_map.tif"))
    for ref in refs[:: max(1, len(refs) // 10)]:
        with rasterio.open(ref) as ds:
            profile, data, structure = ds.profile, ds.read(1), ds.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "DEFLATE" and structure["PREDICTOR"] == "2"
        want = tmp_path / "gdal.tif"
        with rasterio.open(
            want,
            "w",
            driver="GTiff",
            width=120,
            height=120,
            count=1,
            dtype="uint16",
            crs=profile["crs"],
            transform=profile["transform"],
            nodata=0,
            compress="deflate",
            predictor=2,
        ) as ds:
            ds.write(data, 1)
        with rasterio.open(want) as ds:
            assert ds.profile == profile and ds.tags(ns="IMAGE_STRUCTURE") == structure
        assert (data > 0).all()  # every pixel a CLC code or 999


# ---------------------------------------------------------------- hand-made cases

TILE = TileGeometry(epsg=32633, ulx_m=300000, uly_m=5400000, size_m=2460)  # 2 x 2 patches


def _gpkg(tmp_path, polygons, codes, crs="EPSG:3035", field="Code_18"):
    frame = gpd.GeoDataFrame({field: codes}, geometry=polygons, crs="EPSG:32633")
    path = tmp_path / "clc.gpkg"
    frame.to_crs(crs).to_file(path, layer=specs.clc().source.layer, driver="GPKG")
    return path


def _label(tmp_path, polygons, codes, densify=True):
    if densify:  # keep edges straight in UTM through the round trip via EPSG:3035
        polygons = [shapely.segmentize(p, 50) for p in polygons]
    path = _gpkg(tmp_path, polygons, codes)
    frame = read_clc(path, TILE, specs.clc())
    codes_px = rasterize_codes(frame, TILE, 999)
    grid = PatchGrid(TILE, 1200)
    return codes_px, label_patches(grid.blocks(codes_px, 10), specs.nomenclature(), specs.clc())


def _patch_box(x, y, x0=0.0, x1=1200.0, y0=0.0, y1=1200.0):
    """A box inside patch (x, y), offsets in metres from its upper-left corner."""
    ulx, uly = 300000 + 1200 * x, 5400000 - 1200 * y
    return box(ulx + x0, uly - y1, ulx + x1, uly - y0)


def test_pixel_corner_is_not_labelled_and_boundary_patch_gets_both(tmp_path):
    whole = box(300000, 5400000 - 2460, 300000 + 2460, 5400000)
    left = _patch_box(0, 0, 0, 600)
    right = _patch_box(0, 0, 600, 1200)
    rest = whole.difference(_patch_box(0, 0))
    corner = _patch_box(1, 1, 96, 104, 96, 104)  # around a pixel corner: no centre inside
    codes_px, labels = _label(
        tmp_path, [left, right, rest.difference(corner), corner], ["311", "211", "231", "512"]
    )
    assert 512 not in codes_px
    c19, c43 = labels.names_at(0, 0)
    assert c19 == ["Arable land", "Broad-leaved forest"]
    assert c43 == ["Non-irrigated arable land", "Broad-leaved forest"]
    np.testing.assert_array_equal(codes_px[:120, :60], 311)
    np.testing.assert_array_equal(codes_px[:120, 60:120], 211)
    assert labels.names_at(1, 1)[0] == ["Pastures"]


def test_outside_coverage_and_unmapped_codes_are_dropped(tmp_path):
    p00 = _patch_box(0, 0, 0, 840)  # 70 % covered, 30 % outside CLC
    p10 = _patch_box(1, 0)  # only unmapped codes
    p01 = _patch_box(0, 1, 0, 960)  # 80 % covered: kept
    p11a, p11b = _patch_box(1, 1, 0, 1200, 0, 300), _patch_box(1, 1, 0, 1200, 300, 1200)
    _, labels = _label(tmp_path, [p00, p10, p01, p11a, p11b], ["312", "122", "231", "124", "211"])
    unl = labels.unlabeled_fraction
    assert unl[0, 0] == pytest.approx(0.30) and unl[0, 0] >= 0.25
    assert unl[0, 1] == 1.0
    assert unl[1, 0] == pytest.approx(0.20)
    assert unl[1, 1] == pytest.approx(0.25)  # exactly 25 % unlabelled: dropped (rule is "under")
    assert labels.names_at(0, 1) == (["Pastures"], ["Pastures"])
    assert labels.names_at(1, 0)[0] == [] and labels.names_at(1, 0)[1] == [
        "Road and rail networks and associated land"
    ]


def test_multipolygon_with_hole(tmp_path):
    outer = _patch_box(0, 0)
    hole = _patch_box(0, 0, 300, 900, 300, 900)
    ring = Polygon(outer.exterior.coords, [hole.exterior.coords])
    other = _patch_box(1, 1)
    codes_px, labels = _label(tmp_path, [MultiPolygon([ring, other]), hole], ["313", "512"])
    np.testing.assert_array_equal(codes_px[30:90, 30:90], 512)
    assert codes_px[0, 0] == 313 and codes_px[130, 130] == 313
    assert labels.names_at(0, 0)[0] == ["Inland waters", "Mixed forest"]  # alphabetical


def test_invalid_geometry_is_repaired_not_dropped(tmp_path):
    ulx, uly = 300000, 5400000
    bowtie = Polygon([(ulx, uly), (ulx + 1200, uly - 1200), (ulx + 1200, uly), (ulx, uly - 1200)])
    assert not bowtie.is_valid
    codes_px, _ = _label(tmp_path, [bowtie], ["311"], densify=False)
    # both triangles (3,600 px each, less the pixels along the diagonals) survive the repair
    assert (codes_px[:120, :60] == 311).sum() > 3000 and (codes_px[:120, 60:] == 311).sum() > 3000


def test_clc_errors_name_file_and_problem(tmp_path):
    poly = [_patch_box(0, 0)]
    with pytest.raises(ClcError, match="Code_18"):
        read_clc(_gpkg(tmp_path, poly, ["311"], field="CODE"), TILE, specs.clc())
    with pytest.raises(ClcError, match="unknown Code_18 codes \\['777'\\]"):
        read_clc(_gpkg(tmp_path, poly, ["777"]), TILE, specs.clc())
    with pytest.raises(ClcError, match="EPSG:3035") as err:
        read_clc(_gpkg(tmp_path, poly, ["311"], crs="EPSG:4326"), TILE, specs.clc())
    assert "clc.gpkg" in str(err.value)
    with pytest.raises(ClcError, match="not found"):
        read_clc(tmp_path / "nope.gpkg", TILE, specs.clc())


def test_reads_only_the_tile_bbox(synthetic):
    far = TileGeometry(epsg=32633, ulx_m=600000, uly_m=5000000, size_m=12600)
    assert len(read_clc(synthetic.clc, far, specs.clc())) == 0
    near = TileGeometry(epsg=32633, ulx_m=300000, uly_m=5400000, size_m=12600)
    total = len(gpd.read_file(synthetic.clc))
    assert 0 < len(read_clc(synthetic.clc, near, specs.clc())) < total


def test_strip_rasterization_equals_whole_tile(synthetic):
    tile = TileGeometry(epsg=32633, ulx_m=300000, uly_m=5400000, size_m=12600)
    frame = read_clc(synthetic.clc, tile, specs.clc())
    whole = rasterize_codes(frame, tile, 999, strip_px=tile.size_px(10))
    for strip in (7, 32, 100, 512):
        np.testing.assert_array_equal(rasterize_codes(frame, tile, 999, strip_px=strip), whole)


def test_geojson_shapes_equal_shapelys_own_mappings():
    """Mappings built from coordinate arrays equal ``__geo_interface__``, whatever the mix."""
    holed = box(0, 0, 10, 10).difference(box(2, 2, 4, 4)).difference(box(6, 6, 8, 8))
    multi = MultiPolygon([box(20, 0, 30, 10), holed])
    line = shapely.LineString([(0, 0), (5, 5)])
    mixes = [
        [box(0, 0, 1, 1), holed],  # polygons only
        [multi, MultiPolygon([box(40, 0, 41, 1)])],  # multipolygons only
        [holed, multi, box(50, 50, 51, 52), multi],  # both: polygons stay polygons
        [line, holed, shapely.GeometryCollection([box(0, 0, 1, 1), line]), multi],  # others too
        [line],
    ]
    for mix in mixes:
        geoms = np.array(mix, dtype=object)
        got = geojson_shapes(geoms)
        assert len(got) == len(mix)
        for shape, geom in zip(got, mix, strict=True):
            if geom.geom_type in ("Polygon", "MultiPolygon"):
                want = geom.__geo_interface__
                assert shape == {"type": want["type"], "coordinates": _lists(want["coordinates"])}
            else:
                assert shape is geom  # passed on as it is


def _lists(coords):
    """Nested tuples of coordinates as nested lists (a pair of floats stays a pair)."""
    if isinstance(coords, tuple) and coords and isinstance(coords[0], float):
        return list(coords)
    return [_lists(c) for c in coords]


def test_reads_a_shapefile_with_the_same_schema(tmp_path):
    poly = _patch_box(0, 0, 0, 600)
    frame = gpd.GeoDataFrame(
        {"Code_18": ["311"]}, geometry=[shapely.segmentize(poly, 50)], crs="EPSG:32633"
    ).to_crs("EPSG:3035")
    shp = tmp_path / "clc.shp"
    frame.to_file(shp)
    codes_px = rasterize_codes(read_clc(shp, TILE, specs.clc()), TILE, 999)
    np.testing.assert_array_equal(codes_px[:120, :60], 311)
    np.testing.assert_array_equal(codes_px[:120, 60:120], 999)


def test_patch_labels_equal_each_patch_counted_on_its_own():
    """Histograms made a patch row at a time equal each patch's own codes, edge patches too."""
    rng = np.random.default_rng(11)
    nom, clc = specs.nomenclature(), specs.clc()
    known = np.array(sorted(int(c) for c in clc.all_codes) + [int(clc.no_polygon_code)])
    codes = rng.choice(known, (3 * 120, 4 * 120)).astype(np.uint16)
    codes[:120, :120] = 311  # one patch a single class
    blocks = codes.reshape(3, 120, 4, 120).transpose(0, 2, 1, 3)  # a view, as the grid gives
    got = label_patches(blocks, nom, clc)
    names43 = {int(c): n for c, n in clc.v1_names.items()}
    for y in range(3):
        for x in range(4):
            patch = codes[y * 120 : (y + 1) * 120, x * 120 : (x + 1) * 120]
            present = set(np.unique(patch).tolist())
            want19 = sorted(
                {
                    nom.names[nom.code_to_class[str(c)]]
                    for c in present
                    if str(c) in nom.code_to_class
                }
            )
            want43 = [names43[c] for c in sorted(present) if c in names43]
            mapped = sum(int((patch == c).sum()) for c in present if str(c) in nom.code_to_class)
            assert got.names_at(x, y) == (want19, want43), (x, y)
            assert got.unlabeled_fraction[y, x] == pytest.approx(1 - mapped / patch.size)
    assert got.names_at(0, 0)[1] == [names43[311]]
