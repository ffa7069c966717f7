"""Write synthetic scenes in the real formats: SAFE products (JP2 + MTD XML) and a CLC GeoPackage.

Every product is written under a temporary name and renamed when complete, so an interrupted run
never leaves a half-written product that looks whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import shapely
from pyproj import Transformer

from ben_builder import __version__, specs
from ben_builder.files import write_bytes, write_parquet
from ben_builder.patches.grid import TileGeometry
from ben_builder.patches.tiles import tile_geometry
from ben_builder.product.safe import IMAGE_FORMATS
from ben_builder.product.verify import ALGORITHMS
from ben_builder.sources.synthetic.products import ProductRecipe
from ben_builder.sources.synthetic.s1 import write_s1_v1
from ben_builder.sources.synthetic.scene import (
    NO_POLYGON,
    Acquisition,
    Scene,
    make_scene,
    render_band,
    render_classi,
    render_scl,
)
from ben_builder.sources.synthetic.truth import patch_truth

log = logging.getLogger(__name__)

L1C_BANDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
BAND_ID = {b: i for i, b in enumerate(L1C_BANDS)}


def _jp2_options(n: int) -> dict[str, str]:
    block = str(min(n, 1024))
    return {
        "REVERSIBLE": "YES",
        "QUALITY": "100",
        "BLOCKXSIZE": block,
        "BLOCKYSIZE": block,
        "YCC": "NO",
    }


def write_jp2(path: Path, data: np.ndarray, tile: TileGeometry, resolution_m: int) -> None:
    """Write a lossless, georeferenced JP2 (one or more bands)."""
    arr = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="JP2OpenJPEG",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype.name,
        crs=f"EPSG:{tile.epsg}",
        transform=tile.transform(resolution_m),
        **_jp2_options(arr.shape[1]),
    ) as ds:
        ds.write(arr)
    aux = path.with_name(path.name + ".aux.xml")
    if aux.exists():
        aux.unlink()


def _granule_id(r: ProductRecipe) -> str:
    abs_orbit = 10000 + r.relative_orbit * 7
    return f"{r.level}_{r.tile_id}_A{abs_orbit:06d}_{r.generation.strftime('%Y%m%dT%H%M%S')}"


L2A_FILES = {  # IMAGE_FILE kinds per resolution folder, in the order real L2A products list them
    10: ("B02", "B03", "B04", "B08", "TCI", "AOT", "WVP"),
    20: (
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B8A",
        "B11",
        "B12",
        "TCI",
        "AOT",
        "WVP",
        "SCL",
    ),
    60: (
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B8A",
        "B09",
        "B11",
        "B12",
        "TCI",
        "AOT",
        "WVP",
        "SCL",
    ),
}


@dataclass(frozen=True)
class ImageFile:
    """One IMAGE_FILE of a product: path (relative to the SAFE root, no extension), content."""

    rel: str
    kind: str  # band name, or TCI / AOT / WVP / SCL
    resolution_m: int


def image_files(r: ProductRecipe) -> list[ImageFile]:
    """The IMAGE_FILE list of a product, as real products of its level and baseline list it.

    L1C: the 13 bands and TCI, each once at its native resolution, flat under ``IMG_DATA``.
    L2A: ``R10m``, ``R20m`` and ``R60m`` with most bands at several resolutions, plus TCI, AOT,
    WVP and SCL (36 files from baseline 04.00 on; before it, B01 is not in ``R20m``: 35 files).
    """
    prefix = f"{r.tile_id}_{r.sensing.strftime('%Y%m%dT%H%M%S')}"
    img = f"GRANULE/{_granule_id(r)}/IMG_DATA"
    if r.level == "L1C":
        native = {b.name: b.resolution_m for b in specs.bands().bands}
        native |= {"B10": 60, "TCI": 10}
        return [ImageFile(f"{img}/{prefix}_{k}", k, native[k]) for k in (*L1C_BANDS, "TCI")]
    out = []
    for res, kinds_at_res in L2A_FILES.items():
        for k in kinds_at_res:
            if res == 20 and k == "B01" and r.offset == 0:
                continue  # B01 at 20 m appears with baseline 04.00
            out.append(ImageFile(f"{img}/R{res}m/{prefix}_{k}_{res}m", k, res))
    return out


def _mtd_product(r: ProductRecipe, files: Iterable[str], image_format: str) -> str:
    """``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``: the real namespaces and element order.

    Only elements real products have are written (a test checks every element path against the
    real metadata in ``../shared/real-s2-metadata``), in their order; the many elements the
    chain does not read (solar irradiance, GIPP lists, quality checks) are left out.
    """
    lvl = r.level
    xsd = f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{lvl[1:]}.xsd"
    root = f"Level-{lvl[1:]}_User_Product"
    image_files = "\n".join(f"            <IMAGE_FILE>{escape(f)}</IMAGE_FILE>" for f in files)
    if lvl == "L2A":
        quant = (
            "<QUANTIFICATION_VALUES_LIST>\n"
            '        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>\n'
            '        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>\n'
            '        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>\n'
            "      </QUANTIFICATION_VALUES_LIST>"
        )
        off_list, off_tag = "BOA_ADD_OFFSET_VALUES_LIST", "BOA_ADD_OFFSET"
    else:
        quant = '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>'
        off_list, off_tag = "Radiometric_Offset_List", "RADIO_ADD_OFFSET"
    offsets = ""
    if r.offset:
        items = "".join(
            f'\n        <{off_tag} band_id="{i}">{r.offset}</{off_tag}>'
            for i in range(len(L1C_BANDS))
        )
        offsets = f"<{off_list}>{items}\n      </{off_list}>"
    doi = (
        "<PRODUCT_DOI>https://doi.org/10.5270/S2_-synthetic</PRODUCT_DOI>\n      "
        if r.offset
        else ""
    )
    sensing = r.sensing.strftime("%Y%m%dT%H%M%S")
    start = r.sensing.strftime("%Y-%m-%dT%H:%M:%S.024Z")
    gen = r.generation.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    datatake = f"G{r.mission}_{sensing}_{10000 + r.relative_orbit * 7:06d}_N{r.baseline}"
    granule_ident = (
        f"{r.mission}_OPER_MSI_{lvl}_TL_SGS__{r.generation.strftime('%Y%m%dT%H%M%S')}_"
        f"A{10000 + r.relative_orbit * 7:06d}_{r.tile_id}_N{r.baseline}"
    )
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="{xsd}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="{xsd}">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{start}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{start}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{r.name}.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-{lvl[1:]}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{lvl[1:]}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{r.baseline}</PROCESSING_BASELINE>
      {doi}<GENERATION_TIME>{gen}</GENERATION_TIME>
      <PREVIEW_IMAGE_URL>Not applicable</PREVIEW_IMAGE_URL>
      <PREVIEW_GEO_INFO>Not applicable</PREVIEW_GEO_INFO>
      <Datatake datatakeIdentifier="{datatake}">
        <SPACECRAFT_NAME>Sentinel-2{r.mission[-1]}</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{start}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>{r.relative_orbit}</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier="{granule_ident.replace("_TL_", "_DS_")}" \
granuleIdentifier="{granule_ident}" imageFormat="{image_format}">
{image_files}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Image_Display_Order>
        <RED_CHANNEL>3</RED_CHANNEL>
        <GREEN_CHANNEL>2</GREEN_CHANNEL>
        <BLUE_CHANNEL>1</BLUE_CHANNEL>
      </Image_Display_Order>
      {quant}
      {offsets}
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>{100 * r.cloud_fraction:.6f}</Cloud_Coverage_Assessment>
  </n1:Quality_Indicators_Info>
</n1:{root}>
"""


def _mtd_tile(r: ProductRecipe, tile: TileGeometry) -> str:
    xsd = f"https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-{r.level[1:]}_Tile_Metadata.xsd"
    zone = tile.epsg % 100
    gen = r.generation.strftime("%Y%m%dT%H%M%S")
    tile_name = (
        f"{r.mission}_OPER_MSI_{r.level}_TL_SGS__{gen}_A{10000 + r.relative_orbit * 7:06d}_"
        f"{r.tile_id}_N{r.baseline}"
    )
    sizes = "".join(
        f'<Size resolution="{res}"><NROWS>{tile.size_px(res)}</NROWS>'
        f"<NCOLS>{tile.size_px(res)}</NCOLS></Size>"
        for res in (10, 20, 60)
    )
    geos = "".join(
        f'<Geoposition resolution="{res}"><ULX>{tile.ulx_m:.0f}</ULX><ULY>{tile.uly_m:.0f}</ULY>'
        f"<XDIM>{res}</XDIM><YDIM>-{res}</YDIM></Geoposition>"
        for res in (10, 20, 60)
    )
    hemisphere = "N" if tile.epsg // 100 == 326 else "S"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-{r.level[1:]}_Tile_ID xmlns:n1="{xsd}" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="{xsd}">
  <n1:General_Info>
    <TILE_ID metadataLevel="Brief">{tile_name}</TILE_ID>
    <SENSING_TIME metadataLevel="Standard">{r.sensing.strftime("%Y-%m-%dT%H:%M:%S.457Z")}\
</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone {zone:02d}{hemisphere}</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{tile.epsg}</HORIZONTAL_CS_CODE>
      {sizes}
      {geos}
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:Level-{r.level[1:]}_Tile_ID>
"""


def cloud_gml(mask: np.ndarray, tile: TileGeometry) -> str:
    """Old-baseline L1C ``MSK_CLOUDS_B00.gml``: OPAQUE cloud polygons in the tile CRS."""
    srs = f"urn:ogc:def:crs:EPSG::{tile.epsg}"
    members = []
    shapes = rasterio.features.shapes(
        mask.astype("u1"), mask=mask, transform=tile.transform(60), connectivity=4
    )
    for i, (geom, _) in enumerate(shapes):
        rings = []
        for k, ring in enumerate(geom["coordinates"]):
            pos = " ".join(f"{x:.0f} {y:.0f}" for x, y in ring)
            tag = "exterior" if k == 0 else "interior"
            rings.append(
                f'<gml:{tag}><gml:LinearRing><gml:posList srsDimension="2">{pos}'
                f"</gml:posList></gml:LinearRing></gml:{tag}>"
            )
        members.append(
            f'<eop:MaskFeature gml:id="OPAQUE.{i}"><eop:maskType '
            f'codeSpace="urn:gs2:S2PDGS:maskType">OPAQUE</eop:maskType><eop:extentOf>'
            f'<gml:Polygon gml:id="OPAQUE.{i}.Polygon" srsName="{srs}">{"".join(rings)}'
            "</gml:Polygon></eop:extentOf></eop:MaskFeature>"
        )
    lrx, lry = tile.ulx_m + tile.size_m, tile.uly_m - tile.size_m
    body = f"<eop:maskMembers>{''.join(members)}</eop:maskMembers>" if members else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<eop:Mask xmlns:eop="http://www.opengis.net/eop/2.0" '
        'xmlns:gml="http://www.opengis.net/gml/3.2" gml:id="Cloud_Mask">'
        f'<gml:boundedBy><gml:Envelope srsName="{srs}"><gml:lowerCorner>{tile.ulx_m:.0f} '
        f"{lry:.0f}</gml:lowerCorner><gml:upperCorner>{lrx:.0f} {tile.uly_m:.0f}"
        f"</gml:upperCorner></gml:Envelope></gml:boundedBy>{body}</eop:Mask>\n"
    )


def check_size_px(size_px: int) -> None:
    """Raise ValueError unless ``size_px`` can be a synthetic tile's side in 10 m pixels."""
    if size_px <= 0 or size_px % 6:
        raise ValueError(
            f"size_px {size_px} is not a positive multiple of 6 (10, 20 and 60 m grids must "
            "align; e.g. 2460 or 10980)"
        )


def scene_for(tile_id: str, size_px: int, seed: int) -> Scene:
    """The scene of any Sentinel-2 tile (its real corner), ``size_px`` pixels (10 m) square."""
    check_size_px(size_px)
    t = tile_geometry(tile_id)
    geom = TileGeometry(epsg=t.epsg, ulx_m=t.ulx_m, uly_m=t.uly_m, size_m=size_px * 10.0)
    return make_scene(tile_id, geom, seed)


def render_image(f: ImageFile, scene: Scene, acq: Acquisition, r: ProductRecipe) -> np.ndarray:
    """Pixels of one IMAGE_FILE as the product stores them (offset added from baseline 04.00)."""
    if f.kind == "SCL":
        scl = render_scl(scene, acq)
        return scl if f.resolution_m == 20 else scl[1::3, 1::3]
    if f.kind == "B10":  # cirrus band: not used downstream, dim except under cloud
        b09 = render_band(scene, acq, "B09", f.resolution_m, r.level)
        return np.where(b09 > 0, b09 // 8 + 1, 0).astype(np.uint16)
    if f.kind == "TCI":  # 8-bit true colour, 0 = no data
        rgb = [render_band(scene, acq, b, f.resolution_m, r.level) for b in ("B04", "B03", "B02")]
        return np.stack([np.where(c > 0, np.clip(c // 12, 1, 255), 0) for c in rgb]).astype("u1")
    if f.kind in ("AOT", "WVP"):
        valid = render_band(scene, acq, "B02", f.resolution_m, r.level) > 0
        return np.where(valid, 83 if f.kind == "AOT" else 1415, 0).astype(np.uint16)
    data = render_band(scene, acq, f.kind, f.resolution_m, r.level)
    if r.offset:
        valid = data != 0
        data = data.astype(np.int32)
        data[valid] -= r.offset
        data = np.clip(data, 0, 65535).astype(np.uint16)
    return data


def write_image(
    path: Path, data: np.ndarray, tile: TileGeometry, resolution_m: int, image_format: str
) -> None:
    """Write a raster as the product's ``imageFormat`` says: lossless JP2 or GeoTIFF (Esri)."""
    if image_format == "JPEG2000":
        write_jp2(path, data, tile, resolution_m)
        return
    arr = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype.name,
        crs=f"EPSG:{tile.epsg}",
        transform=tile.transform(resolution_m),
        compress="deflate",
        tiled=True,
        blockxsize=512,
        blockysize=512,
    ) as ds:
        ds.write(arr)


#: The first baseline whose ``manifest.safe`` lists SHA3-256 instead of MD5: 03.01, deployed on
#: 30 June 2021 (real products: 02.14 of January 2021 lists MD5; a 04.00 of October 2022 and
#: 05.09 list SHA3-256; the first reports of SHA3-256 manifests date from July 2021). Readers take
#: the algorithm from the manifest itself.
SHA3_BASELINE = (3, 1)


def manifest_algorithm(baseline: str) -> str:
    """Checksum algorithm of ``manifest.safe``: MD5 before baseline 03.01, SHA3-256 from it."""
    return "SHA3-256" if tuple(int(v) for v in baseline.split(".")) >= SHA3_BASELINE else "MD5"


def manifest_xml(safe: Path, algorithm: str, level: str) -> str:
    """``manifest.safe`` listing every file under ``safe`` with its size and checksum."""
    objects = []
    files = sorted(p for p in safe.rglob("*") if p.is_file() and p.name != "manifest.safe")
    for i, p in enumerate(files):
        h = hashlib.new(ALGORITHMS[algorithm], p.read_bytes())
        digest = h.hexdigest().upper() if algorithm == "SHA3-256" else h.hexdigest()
        objects.append(
            f'    <dataObject ID="Object_{i}">\n'
            f'      <byteStream mimeType="application/octet-stream" size="{p.stat().st_size}">\n'
            f'        <fileLocation href="./{p.relative_to(safe).as_posix()}" '
            'locatorType="URL"/>\n'
            f'        <checksum checksumName="{algorithm}">{digest}</checksum>\n'
            "      </byteStream>\n    </dataObject>"
        )
    unit = f"Product_Level-{level[1:]}"
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        '<xfdu:XFDU xmlns:gml="http://www.opengis.net/gml" '
        'xmlns:safe="http://www.esa.int/safe/sentinel/1.1" xmlns:xfdu="urn:ccsds:schema:xfdu:1" '
        f'version="esa/safe/sentinel/1.1/sentinel-2/msi/archive_{level.lower()}_user_product">\n'
        f'  <informationPackageMap>\n    <xfdu:contentUnit unitType="{unit}"/>\n'
        "  </informationPackageMap>\n  <metadataSection/>\n  <dataObjectSection>\n"
        + "\n".join(objects)
        + "\n  </dataObjectSection>\n</xfdu:XFDU>\n"
    )


def _write_qi_masks(r: ProductRecipe, acq: Acquisition, granule: Path, tile: TileGeometry) -> None:
    """QI_DATA cloud masks of the product's baseline family (what the reader screens L1C with)."""
    qi = granule / "QI_DATA"
    qi.mkdir(parents=True, exist_ok=True)
    if r.offset:  # baseline 04.00+: raster mask (opaque cloud, cirrus, snow)
        write_jp2(qi / "MSK_CLASSI_B00.jp2", render_classi(acq), tile, 60)
    else:
        (qi / "MSK_CLOUDS_B00.gml").write_text(cloud_gml(acq.cloud, tile))
    if r.level == "L2A":  # cloud and snow probabilities, percent
        for res in (20, 60):
            for name, mask in (("CLDPRB", acq.cloud), ("SNWPRB", acq.snow)):
                prob = (acq.at(mask, res) * 100).astype("u1")
                write_jp2(qi / f"MSK_{name}_{res}m.jp2", prob, tile, res)


def _made_from(*parts: object) -> str:
    """A key of what a generated file is made from (recipe, scene, generator version)."""
    h = hashlib.sha256(__version__.encode())
    for part in parts:
        h.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _up_to_date(final: Path, key: str) -> bool:
    """Whether ``final`` exists and its sidecar ``.<name>.made-from`` records ``key``."""
    sidecar = final.with_name(f".{final.name}.made-from")
    return final.exists() and sidecar.exists() and sidecar.read_text() == key


def _record(final: Path, key: str) -> None:
    write_bytes(final.with_name(f".{final.name}.made-from"), key.encode())


def write_product(r: ProductRecipe, scene: Scene, out_dir: Path) -> Path:
    """Write one product as ``<name>.SAFE`` or ``<name>.zip`` under ``out_dir``.

    The product has the real structure of its level and baseline: every IMAGE_FILE (TCI, AOT,
    WVP, SCL and bands at several resolutions for L2A), the QI_DATA masks, ``MTD_MSIL*.xml``,
    ``MTD_TL.xml`` and a ``manifest.safe`` with every file's checksum. A product written before
    from the same recipe and scene is kept; one written from another (e.g. another size) is
    replaced.
    """
    final = out_dir / (f"{r.name}.zip" if r.zipped else f"{r.name}.SAFE")
    key = _made_from(r, scene.geometry, scene.cell_m, scene.seed, scene.cells)
    if _up_to_date(final, key):
        log.info("skip %s: already written", final.name)
        return final
    if final.is_dir():
        shutil.rmtree(final)
    elif final.exists():
        final.unlink()
    acq = r.acquisition(scene)
    work = out_dir / f".{r.name}.partial"
    if work.exists():
        shutil.rmtree(work)
    safe = work / f"{r.name}.SAFE"
    tile = scene.geometry
    files = image_files(r)
    ext = IMAGE_FORMATS[r.image_format]
    for f in files:
        data = render_image(f, scene, acq, r)
        write_image(safe / f"{f.rel}{ext}", data, tile, f.resolution_m, r.image_format)
    granule = safe / "GRANULE" / _granule_id(r)
    mtd = _mtd_product(r, [f.rel for f in files], r.image_format)
    (safe / f"MTD_MSI{r.level}.xml").write_text(mtd)
    (granule / "MTD_TL.xml").write_text(_mtd_tile(r, tile))
    _write_qi_masks(r, acq, granule, tile)
    algorithm = manifest_algorithm(r.baseline)
    (safe / "manifest.safe").write_text(manifest_xml(safe, algorithm, r.level))
    if r.zipped:
        tmp_zip = out_dir / f".{r.name}.zip.partial"
        with zipfile.ZipFile(tmp_zip, "w") as zf:
            for p in sorted(safe.rglob("*")):
                arc = p.relative_to(work).as_posix()
                if p.is_dir():
                    zf.write(p, arc + "/")
                else:
                    method = zipfile.ZIP_STORED if p.suffix == ".jp2" else zipfile.ZIP_DEFLATED
                    zf.write(p, arc, compress_type=method)
        os.replace(tmp_zip, final)
        shutil.rmtree(work)
    else:
        os.replace(safe, final)
        work.rmdir()
    _record(final, key)
    log.info("wrote %s", final.name)
    return final


def clc_frame(scenes: Iterable[Scene]) -> gpd.GeoDataFrame:
    """CLC-schema polygons (EPSG:3035) of the scenes' land-cover cells; uncovered cells omitted."""
    rows: list[dict[str, object]] = []
    for scene in scenes:
        g = scene.geometry
        transform = rasterio.Affine(scene.cell_m, 0, g.ulx_m, 0, -scene.cell_m, g.uly_m)
        to_laea = Transformer.from_crs(g.epsg, 3035, always_xy=True)

        def project(xy: np.ndarray, t: Transformer = to_laea) -> np.ndarray:
            return np.column_stack(t.transform(xy[:, 0], xy[:, 1]))

        for geom, value in rasterio.features.shapes(
            scene.cells, mask=scene.cells != NO_POLYGON, transform=transform, connectivity=4
        ):
            poly = shapely.segmentize(shapely.geometry.shape(geom), 100.0)
            poly = shapely.transform(poly, project)
            rows.append({"Code_18": f"{int(value):03d}", "geometry": poly})
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:3035")
    frame["geometry"] = frame.geometry.apply(lambda p: shapely.MultiPolygon([p]))
    frame.insert(0, "ID", [f"EU_{i:07d}" for i in range(1, len(frame) + 1)])
    frame.insert(2, "Remark", pd.Series([None] * len(frame), dtype="object"))
    frame.insert(3, "Area_Ha", frame.geometry.area / 1e4)
    return frame.rename_geometry("Shape")


def write_clc(scenes: Iterable[Scene], out_dir: Path) -> Path:
    """Write the CLC GeoPackage (real file, layer and field names) covering ``scenes``."""
    src = specs.clc().source
    final = out_dir / src.file
    scenes = list(scenes)
    key = _made_from(*((s.tile_id, s.geometry, s.cell_m, s.cells) for s in scenes))
    if _up_to_date(final, key):  # a GeoPackage records its write time: rewrite only if changed
        return final
    tmp = out_dir / f".{src.file}.partial.gpkg"
    if tmp.exists():
        tmp.unlink()
    frame = clc_frame(scenes)
    frame.to_file(tmp, layer=src.layer, driver="GPKG", engine="pyogrio")
    os.replace(tmp, final)
    _record(final, key)
    log.info("wrote %s (%d polygons)", final.name, len(frame))
    return final


def write_truth(r: ProductRecipe, scene: Scene, acq: Acquisition, out_dir: Path) -> Path:
    """Record a product's ground truth per patch as parquet under ``out_dir``."""
    table = patch_truth(scene, acq, r.level, r.stem)
    path = out_dir / f"{r.stem}.parquet"
    write_parquet(path, table)
    return path


@dataclass(frozen=True)
class SyntheticDataset:
    """Paths of a written synthetic dataset."""

    products: list[Path]
    clc: Path
    truth: list[Path]
    s1: Path | None = None


#: The generated BigEarthNet-S1 v1.0 folder, under a dataset's folder.
S1_V1_DIR = "BigEarthNet-S1-v1.0"


def write_dataset(
    recipes: list[ProductRecipe], out_dir: Path, size_px: int, seed: int = 0, s1: bool = False
) -> SyntheticDataset:
    """Write products, the CLC GeoPackage and ground truth for ``recipes`` under ``out_dir``.

    Layout: ``products/`` (SAFE folders and zips), ``clc/`` (the GeoPackage), ``ground_truth/``,
    and with ``s1`` a BigEarthNet-S1 v1.0 folder of their acquisitions (:data:`S1_V1_DIR`).

    Returns:
        The paths written.
    """
    (out_dir / "products").mkdir(parents=True, exist_ok=True)
    (out_dir / "clc").mkdir(exist_ok=True)
    (out_dir / "ground_truth").mkdir(exist_ok=True)
    scenes = {t: scene_for(t, size_px, seed) for t in sorted({r.tile_id for r in recipes})}
    products, truth = [], []
    for r in recipes:
        scene = scenes[r.tile_id]
        products.append(write_product(r, scene, out_dir / "products"))
        truth.append(write_truth(r, scene, r.acquisition(scene), out_dir / "ground_truth"))
    clc = write_clc(scenes.values(), out_dir / "clc")
    s1_dir = None
    if s1:
        s1_dir = write_s1_v1(recipes, scenes, out_dir / S1_V1_DIR)
    return SyntheticDataset(products=products, clc=clc, truth=truth, s1=s1_dir)
