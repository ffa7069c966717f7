"""EOPF Zarr products of generated products, laid out as ESA's EOPF sample products.

The generator converts a SAFE product it wrote into ``<name>.zarr``: Zarr v2 with consolidated
metadata, ``measurements/reflectance/r10m|r20m|r60m/<band>`` (``uint16``, CF ``scale_factor``
and ``add_offset`` as the samples declare them, pixel-centre ``x``/``y`` coordinates),
``conditions/mask/l2a_classification/r20m/scl``, and the root's ``stac_discovery`` and
``other_metadata`` attributes. The arrays are chunked 6 x 6 per tile (1830 px at 10 m on a
10,980 px tile, as the samples are) and Blosc-zstd compressed. It is written with zarr-python, a
different implementation from the reader's GDAL, so a build from it checks the format, not our
own reading of our own writing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import shapely

from ben_builder.files import write_bytes
from ben_builder.product.eopf import REFLECTANCE, SCL_ARRAY, SUFFIX, open_eopf
from ben_builder.product.safe import native_m, open_product, read_cloud_cover
from ben_builder.sources.synthetic.stac import tile_footprint

#: Chunks per tile side (the samples: 1830 px of 10,980 at 10 m, 915 at 20 m, 305 at 60 m).
CHUNKS_PER_SIDE = 6


def write_eopf(
    product: Path, out_dir: Path, declare_offset: bool = True, zarr_format: Literal[2, 3] = 2
) -> Path:
    """Write ``<out_dir>/<product name>.zarr``, the EOPF Zarr product of an L2A SAFE product.

    Args:
        product: A generated L2A ``.SAFE`` folder (JPEG 2000 or GeoTIFF bands).
        out_dir: Where the store is written (atomically: a temporary folder renamed).
        declare_offset: Give the band arrays CF ``add_offset`` (as the samples do); without it
            only ``scale_factor`` is declared (a reader must then know the offset otherwise).
        zarr_format: 2 (the samples of CPM 2.5) or 3 (Zarr v3, consolidated in ``zarr.json``).

    Raises:
        ValueError: not an L2A product.
    """
    import zarr
    from numcodecs import Blosc

    p = open_product(product)
    if p.level != "L2A":
        raise ValueError(f"{product}: EOPF Zarr products are written of L2A products")
    t, n = p.tile, p.name
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{n.name}{SUFFIX}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{n.name}.", dir=out_dir))
    try:
        root = zarr.open_group(tmp, mode="w", zarr_format=zarr_format)
        if zarr_format == 2:
            compressor: Any = Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)
        else:
            from zarr.codecs import BloscCodec

            compressor = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")

        def array(path: str, data: np.ndarray, res: int, attrs: dict[str, Any]) -> None:
            side = data.shape[0]
            chunk = side // CHUNKS_PER_SIDE if side % CHUNKS_PER_SIDE == 0 else side
            arr = root.create_array(
                path,
                shape=data.shape,
                chunks=(chunk, chunk),
                dtype=data.dtype,
                compressors=compressor,
                fill_value=0,
            )
            arr[:] = data
            arr.attrs.update(
                {
                    "_ARRAY_DIMENSIONS": ["y", "x"],
                    "dtype": data.dtype.str,
                    "fill_value": 0,
                    "proj:epsg": t.epsg,
                    "proj:bbox": [t.ulx_m, t.uly_m - t.size_m, t.ulx_m + t.size_m, t.uly_m],
                    "proj:shape": list(data.shape),
                    "proj:transform": [res, 0, t.ulx_m, 0, -res, t.uly_m],
                    **attrs,
                }
            )

        for res in sorted(set(native_m().values())):
            group = f"{REFLECTANCE}/r{res}m"
            side = round(t.size_m / res)
            _coords(root, group, t.ulx_m + res / 2 + res * np.arange(side), "x")
            _coords(root, group, t.uly_m - res / 2 - res * np.arange(side), "y")
        for band, res in native_m().items():
            with rasterio.open(p.band_paths[band]) as ds:
                dn = ds.read(1)
            cf: dict[str, Any] = {
                "long_name": f"BOA reflectance from MSI acquisition at spectral band "
                f"{band.lower()}",
                "units": "digital_counts",
                "scale_factor": 1 / p.quantification_value,
            }
            if declare_offset:
                cf["add_offset"] = p.offsets.get(band, 0) / p.quantification_value
            array(f"{REFLECTANCE}/r{res}m/{band.lower()}", dn, res, {**cf, "_eopf_attrs": cf})
        with rasterio.open(p.band_paths["SCL"]) as ds:
            scl = ds.read(1)
        scl_group = SCL_ARRAY.rsplit("/", 1)[0]
        _coords(root, scl_group, t.ulx_m + 10 + 20 * np.arange(scl.shape[1]), "x")
        _coords(root, scl_group, t.uly_m - 10 - 20 * np.arange(scl.shape[0]), "y")
        array(SCL_ARRAY, scl, 20, {"long_name": "Scene classification map (SCL)"})
        root.attrs.update(
            {
                "stac_discovery": {
                    "type": "Feature",
                    "stac_version": "1.1.0",
                    "id": n.name,
                    "properties": {
                        "datetime": f"{n.sensing_time:%Y-%m-%dT%H:%M:%S}.024000Z",
                        "platform": f"sentinel-2{n.mission[-1].lower()}",
                        "constellation": "sentinel-2",
                        "instruments": ["msi"],
                        "eo:cloud_cover": read_cloud_cover(product),
                        "processing:version": p.processing_baseline,
                        "product:type": "S2MSI2A",
                        "proj:epsg": t.epsg,
                        "sat:relative_orbit": n.relative_orbit,
                    },
                },
                "other_metadata": {"horizontal_CRS_code": f"EPSG:{t.epsg}"},
            }
        )
        zarr.consolidate_metadata(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def write_eopf_item(store: Path, out_dir: Path, base_url: str | None = None) -> Path:
    """Write ``<out_dir>/<product name>.json``, an item as the EOPF STAC catalogue publishes it.

    Its id is the product name; its one ``product`` asset (``application/vnd+zarr``, roles data
    and metadata) links the store, at ``<base_url>/<store name>`` with ``base_url``.
    """
    import zarr

    attrs: dict[str, Any] = dict(zarr.open_group(store, mode="r").attrs)
    discovery = attrs["stac_discovery"]
    name = store.name.removesuffix(SUFFIX)
    footprint = tile_footprint(open_eopf(store).tile)
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": name,
        "collection": "sentinel-2-l2a",
        "geometry": shapely.geometry.mapping(footprint),
        "bbox": list(footprint.bounds),
        "properties": discovery["properties"],
        "assets": {
            "product": {
                "href": f"{base_url}/{store.name}" if base_url else str(store.resolve()),
                "type": "application/vnd+zarr",
                "title": "EOPF Product",
                "roles": ["data", "metadata"],
                "xarray:open_datatree_kwargs": {"engine": "zarr", "consolidated": True},
            }
        },
        "links": [],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    write_bytes(path, (json.dumps(item, indent=2) + "\n").encode())
    return path


def _coords(root: Any, group: str, values: np.ndarray, dim: str) -> None:
    arr = root.create_array(f"{group}/{dim}", shape=values.shape, dtype="<i8", fill_value=None)
    arr[:] = np.round(values).astype("<i8")
    arr.attrs.update({"_ARRAY_DIMENSIONS": [dim]})
