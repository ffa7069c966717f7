import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from ben_builder.archive.shards import safetensors_bytes
from ben_builder.archive.tiff import GeoTiffTemplate
from ben_builder.archive.writer import write_geotiff, write_unfinished


@pytest.mark.parametrize("epsg", [32633, 32634])
@pytest.mark.parametrize("n,res", [(120, 10), (60, 20), (20, 60)])
def test_template_bytes_equal_gdal_output(tmp_path, epsg, n, res):
    crs = CRS.from_epsg(epsg)
    template = GeoTiffTemplate.build((n, n), "uint16", crs, res)
    rng = np.random.default_rng(n + epsg)
    for i in range(3):
        arr = rng.integers(1, 65535, (n, n), dtype=np.uint16)
        ulx, uly = 300000.0 + 1200 * i, 5400000.0 - 1200 * (i + 5)
        ref = tmp_path / f"{i}.tif"
        write_geotiff(ref, arr, crs, Affine(res, 0, ulx, 0, -res, uly))
        assert template.render(arr, ulx, uly) == ref.read_bytes()


def test_template_output_reads_back_even_with_nodata_strips(tmp_path):
    crs = CRS.from_epsg(32633)
    template = GeoTiffTemplate.build((120, 120), "uint16", crs, 10)
    arr = np.zeros((120, 120), np.uint16)
    arr[60:] = 7
    path = tmp_path / "x.tif"
    path.write_bytes(template.render(arr, 301200.0, 5398800.0))
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(1), arr)
        assert ds.transform == Affine(10, 0, 301200.0, 0, -10, 5398800.0)
        assert ds.crs == crs and ds.nodata == 0
    with pytest.raises(ValueError, match="shape"):
        template.render(arr[:10], 0, 0)


@pytest.mark.parametrize("epsg", [32633, 32629])
def test_deflate_template_reads_back_like_gdal_output(tmp_path, epsg):
    """A reference map rendered from the template: GDAL's tags, header and pixels, other bytes."""
    crs = CRS.from_epsg(epsg)
    template = GeoTiffTemplate.build((120, 120), "uint16", crs, 10, compress="deflate")
    rng = np.random.default_rng(epsg)
    blocky = rng.choice(np.array([0, 111, 211, 312, 523], np.uint16), (12, 12))
    arrays = [
        np.repeat(np.repeat(blocky, 10, 0), 10, 1),  # land cover as it looks
        rng.integers(0, 65535, (120, 120), dtype=np.uint16),  # barely compressible
        np.zeros((120, 120), np.uint16),
    ]
    for i, arr in enumerate(arrays):
        ulx, uly = 399960.0 + 1200 * i, 5800020.0 - 1200 * i
        transform = Affine(10, 0, ulx, 0, -10, uly)
        ours, gdal = tmp_path / f"ours{i}.tif", tmp_path / f"gdal{i}.tif"
        ours.write_bytes(template.render(arr, ulx, uly))
        write_geotiff(gdal, arr, crs, transform, compress="deflate")
        with rasterio.open(ours) as a, rasterio.open(gdal) as b:
            np.testing.assert_array_equal(a.read(1), arr)
            assert a.profile == b.profile  # size, dtype, CRS, transform, nodata, strips
            assert a.tags(ns="IMAGE_STRUCTURE") == b.tags(ns="IMAGE_STRUCTURE")  # deflate, pred.
        mine, theirs = ours.read_bytes(), gdal.read_bytes()
        n_bytes = 4 * -(-120 // template.rows_per_strip)  # one LONG offset and size per strip
        holes = {template.offsets_pos + k for k in range(n_bytes)} | {
            template.counts_pos + k for k in range(n_bytes)
        }
        same = [k for k in range(template.data_pos) if k not in holes]
        assert bytes(mine[k] for k in same) == bytes(theirs[k] for k in same)


def test_template_refuses_an_unknown_compression():
    from ben_builder.archive.tiff import TemplateError

    with pytest.raises(TemplateError, match="lzw"):
        GeoTiffTemplate.build((120, 120), "uint16", CRS.from_epsg(32633), 10, compress="lzw")


def _gtiff(path, arr, epsg=32633, ulx=300000.0, uly=5400000.0, **kw):
    profile = {
        "driver": "GTiff",
        "width": arr.shape[1],
        "height": arr.shape[0],
        "count": 1,
        "dtype": arr.dtype.name,
        "crs": CRS.from_epsg(epsg),
        "nodata": 0,
        "transform": Affine(10, 0, ulx, 0, -10, uly),
    }
    with rasterio.open(path, "w", **profile, **kw) as ds:
        ds.write(arr, 1)
    return path.read_bytes()


def test_encoder_reads_raw_only_files_laid_out_like_a_decoded_one(tmp_path):
    from ben_builder.encode import PatchReader

    rng = np.random.default_rng(3)
    arrays = [rng.integers(1, 65535, (120, 120), dtype=np.uint16) for _ in range(6)]
    paths = []
    for i, arr in enumerate(arrays[:3]):  # one product: GDAL's plain layout, other corners
        paths.append(tmp_path / f"a{i}.tif")
        _gtiff(paths[-1], arr, ulx=300000.0 + 1200 * i)
    paths.append(tmp_path / "other_crs.tif")
    _gtiff(paths[-1], arrays[3], epsg=32634)
    paths.append(tmp_path / "deflate.tif")
    _gtiff(paths[-1], arrays[4], compress="deflate")
    paths.append(tmp_path / "tiled.tif")
    _gtiff(paths[-1], arrays[5], tiled=True, blockxsize=64, blockysize=64)
    read = PatchReader()
    for path, arr in zip(paths, arrays, strict=True):
        np.testing.assert_array_equal(read(path, np.uint16), arr)
        with rasterio.open(path) as ds:
            np.testing.assert_array_equal(read(path, np.uint16), ds.read(1))
    # the first file of each layout goes through tifffile; the tiled one always does
    assert (read.raw, read.decoded) == (7, 5)
    # a deflated, predictor-2 file (as reference maps are) teaches its layout to one of another
    # compressed size: its strips are cut out by its own offsets and decoded by tifffile's codec
    codes = [rng.choice([211, 311, 312, 512], (120, 120)).astype(np.uint16) for _ in range(2)]
    codes[1][:60] = 311  # compresses to another size
    maps = []
    for i, arr in enumerate(codes):
        maps.append(tmp_path / f"map{i}.tif")
        _gtiff(maps[-1], arr, ulx=400000.0 + 1200 * i, compress="deflate", predictor=2)
    assert len(maps[0].read_bytes()) != len(maps[1].read_bytes())
    raw = read.raw
    for path, arr in zip(maps, codes, strict=True):
        np.testing.assert_array_equal(read(path, np.uint16), arr)
    assert read.raw == raw + 1
    # a learnt layout refuses a file that differs outside the corner, or a cut file
    buf = paths[0].read_bytes()
    layouts = [lay for known in read.layouts.values() for lay in known]
    layout = next(lay for lay in layouts if lay.read(buf) is not None)
    assert layout.read(buf[:-2]) is None
    other = bytearray(buf)
    other[10] ^= 0xFF
    assert layout.read(bytes(other)) is None


def test_lmdb_values_equal_safetensors_output_for_every_array_set(monkeypatch):
    from safetensors.numpy import load, save

    from ben_builder.archive import shards

    monkeypatch.setattr(shards, "_SAFETENSORS_LAYOUTS", {})
    rng = np.random.default_rng(5)

    def patch(size: int) -> dict[str, np.ndarray]:  # names in the archive's band order
        return {
            f"B{i:02d}": rng.integers(0, 65535, (size // (1 + i % 3),) * 2, dtype=np.uint16)
            for i in (1, 2, 3, 4, 5, 11, 12)
        }

    block = rng.integers(0, 999, (240, 240), dtype=np.uint16)[120:, :120]  # a view, not dense
    sets = [
        patch(120),
        patch(120),
        patch(60),
        {"Data": block},
        {"Data": block.copy() + 1},
        {"VV": rng.random((120, 120), np.float32), "VH": rng.random((120, 120), np.float32)},
        {"VV": rng.random((120, 120), np.float32), "VH": rng.random((120, 120), np.float32)},
        {"Data": block.astype(">u2")},
        {"Data": block.astype(">u2") + 2},
    ]
    for arrays in sets:
        value = safetensors_bytes(arrays)
        assert value == save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        got = load(value)
        assert set(got) == set(arrays)
        for name, arr in arrays.items():
            np.testing.assert_array_equal(got[name], arr)
    # one header per set of names, dtypes and shapes; big-endian arrays (which safetensors
    # swaps) are never put together from their bytes
    learnt = {key: v for key, v in shards._SAFETENSORS_LAYOUTS.items() if v is not None}
    assert len(learnt) == 4
    assert all(dtype.byteorder != ">" for key in learnt for _, dtype, _ in key)
    assert [key for key, v in shards._SAFETENSORS_LAYOUTS.items() if v is None] == [
        (("Data", np.dtype(">u2"), (120, 120)),)
    ]


@pytest.mark.parametrize("res", [10, 20, 60])
def test_band_files_written_side_by_side_equal_gdal_files(tmp_path, res):
    """``write_band``: header and pixels written from one copy give GDAL's bytes, file by file."""
    from ben_builder.archive.writer import BandWriter

    crs, n = CRS.from_epsg(32633), 1200 // res
    writer = BandWriter(crs, [10, 20, 60], 1200)
    band = np.random.default_rng(res).integers(0, 65535, (3 * n, 4 * n), dtype=np.uint16)
    blocks = band.reshape(3, n, 4, n).swapaxes(1, 2)  # a strided view, as the grid cuts a band
    for order in ("<", ">"):  # a big-endian band is written little-endian, as GDAL does
        picked = [(2, 3), (0, 0), (1, 2), (0, 0)]
        files = [
            (str(tmp_path / f"{order == '<'}_{i}.tif"), 300000.0 + 1200 * x, 5400000.0 - 1200 * y)
            for i, (y, x) in enumerate(picked)
        ]
        data = blocks.astype(blocks.dtype.newbyteorder(order))
        ys, xs = zip(*picked, strict=True)
        assert writer.write_band(files, data[list(ys), list(xs)], res) == len(files)
        for (path, ulx, uly), (y, x) in zip(files, picked, strict=True):
            ref = tmp_path / "ref.tif"
            write_geotiff(ref, blocks[y, x], crs, Affine(res, 0, ulx, 0, -res, uly))
            assert open(path, "rb").read() == ref.read_bytes()
    with pytest.raises(ValueError, match="2 files for 1 blocks"):
        writer.write_band(files[:2], blocks[0, :1], res)


def test_short_writes_are_finished_and_a_full_disk_leaves_no_file(tmp_path, monkeypatch):
    from ben_builder.archive import writer
    from ben_builder.errors import ArchiveWriteError

    real_write, parts = writer.os.write, (b"header", memoryview(bytes(range(256)) * 40))
    monkeypatch.setattr(writer.os, "writev", lambda fd, bufs: real_write(fd, bytes(bufs[0])[:3]))
    monkeypatch.setattr(writer.os, "write", lambda fd, data: real_write(fd, bytes(data)[:1000]))
    path = tmp_path / "a.tif"
    assert write_unfinished(path, *parts) == 1
    assert path.read_bytes() == b"".join(parts)

    monkeypatch.setattr(writer.os, "write", lambda fd, data: 0)
    with pytest.raises(ArchiveWriteError, match=r"b\.tif: cannot write.*short write \(3 of"):
        write_unfinished(tmp_path / "b.tif", *parts)
    assert not (tmp_path / "b.tif").exists()


def test_a_write_error_says_what_to_do_for_its_cause(tmp_path):
    from ben_builder.errors import ArchiveWriteError

    with pytest.raises(ArchiveWriteError, match=r"gone/a\.tif: cannot write .*folder was removed"):
        write_unfinished(tmp_path / "gone" / "a.tif", b"x")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        if os.access(tmp_path / "ro", os.W_OK):  # root writes anyway: nothing to refuse
            return
        with pytest.raises(ArchiveWriteError, match="not writable"):
            write_unfinished(tmp_path / "ro" / "a.tif", b"x")
    finally:
        (tmp_path / "ro").chmod(0o700)
