import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from ben_builder.archive import write_geotiff
from ben_builder.tiff import GeoTiffTemplate


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
