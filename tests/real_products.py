"""Build test products around the metadata of REAL Sentinel-2 products.

``tests/data/real-s2-metadata/`` holds ``MTD_MSIL*.xml``, ``MTD_TL.xml`` and ``manifest.safe`` of
four real products, byte for byte (no image files). :func:`build` writes a product around them:
every IMAGE_FILE the real metadata lists, at its path, in the format ``imageFormat`` names, with
the pixel size its resolution has in ``MTD_TL.xml``; the QI cloud mask the manifest lists; the
metadata files copied unchanged. Pixels come from the synthetic scene renderer (offsets added as
the product's own ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` say), or are blank at full size.

Two things are changed, and only these: with ``size_px`` the ``<Size>`` elements of
``MTD_TL.xml`` are rewritten (a full 10980 px tile takes minutes to encode and decode), and the
``manifest.safe`` entries of the files written here get their real size and checksum (same
algorithm) when the manifest is a genuine one, i.e. its entry for ``MTD_MSIL*.xml`` verifies
against the real file. Entries of files not written here (QI reports, AUX data, HTML) stay as
they are, and the metadata files' entries are the real ones.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from ben_builder import specs
from ben_builder.patches.grid import TileGeometry
from ben_builder.product.names import ProductName
from ben_builder.product.safe import IMAGE_FORMATS
from ben_builder.product.verify import ALGORITHMS
from ben_builder.sources.synthetic.products import ProductRecipe
from ben_builder.sources.synthetic.scene import Acquisition, Scene, make_scene
from ben_builder.sources.synthetic.writer import ImageFile, cloud_gml, render_image, write_image

REAL_METADATA = Path(
    os.environ.get(
        "BEN_REAL_METADATA",
        Path(__file__).resolve().parent / "data" / "real-s2-metadata",
    )
)


def real_products() -> list[Path]:
    """The real metadata folders (``<PRODUCT_URI>.SAFE``), sorted."""
    return sorted(REAL_METADATA.glob("*.SAFE"))


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(frozen=True)
class RealMetadata:
    """What the real metadata of one product says."""

    src: Path
    name: ProductName
    image_files: list[str]
    image_format: str
    offset: int
    geometry: TileGeometry  # from the real MTD_TL.xml (full size)
    granule: str

    @classmethod
    def read(cls, src: Path) -> RealMetadata:
        name = ProductName.parse(src.name)
        mtd = ET.parse(src / f"MTD_MSI{name.level}.xml").getroot()
        files = [e.text.strip() for e in mtd.iter() if local_name(e.tag) == "IMAGE_FILE" and e.text]
        fmt = next(e.get("imageFormat") for e in mtd.iter() if local_name(e.tag) == "Granule")
        offsets = {
            int(e.text or 0)
            for e in mtd.iter()
            if local_name(e.tag) in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")
        }
        if len(offsets) > 1:
            raise ValueError(f"{src}: per-band offsets differ; the builder assumes one value")
        granule = files[0].split("/")[1]
        tl = ET.parse(src / "GRANULE" / granule / "MTD_TL.xml").getroot()
        code = next(e.text for e in tl.iter() if local_name(e.tag) == "HORIZONTAL_CS_CODE")
        geo = next(
            e
            for e in tl.iter()
            if local_name(e.tag) == "Geoposition" and e.get("resolution") == "10"
        )
        size = next(
            e for e in tl.iter() if local_name(e.tag) == "Size" and e.get("resolution") == "10"
        )
        vals = {local_name(c.tag): c.text for c in [*geo, *size]}
        geometry = TileGeometry(
            epsg=int(str(code).split(":")[1]),
            ulx_m=float(vals["ULX"] or 0),
            uly_m=float(vals["ULY"] or 0),
            size_m=int(vals["NCOLS"] or 0) * 10.0,
        )
        return cls(src, name, files, str(fmt), offsets.pop() if offsets else 0, geometry, granule)

    def recipe(self) -> ProductRecipe:
        """A generator recipe with this product's identity (for rendering pixels)."""
        n = self.name
        return ProductRecipe(
            n.tile_id,
            n.level,
            f"{n.baseline[:2]}.{n.baseline[2:]}",
            n.sensing_time,
            mission=n.mission,
            relative_orbit=n.relative_orbit,
            image_format=self.image_format,
        )

    def image(self, rel: str) -> ImageFile:
        """Kind and resolution of an IMAGE_FILE, from its name."""
        base = rel.rsplit("/", 1)[1]
        m = re.fullmatch(r"\w+_(\w{3})_(\d\d)m", base)
        if m:
            return ImageFile(rel, m[1], int(m[2]))
        kind = base.rsplit("_", 1)[1]
        native = {b.name: b.resolution_m for b in specs.bands().bands} | {"B10": 60, "TCI": 10}
        return ImageFile(rel, kind, native[kind])


@dataclass(frozen=True)
class Built:
    """A product built around real metadata."""

    path: Path
    meta: RealMetadata
    geometry: TileGeometry  # as written (scaled or full)
    scene: Scene | None
    acq: Acquisition | None
    written: tuple[str, ...]  # relative paths of the files written here


def _blank(cache: Path, fmt: str, n: int, count: int, dtype: str, tile: TileGeometry) -> Path:
    """A blank (all-zero) raster of a given size, encoded once and copied for every file."""
    path = cache / f"blank_{n}_{count}_{dtype}{IMAGE_FORMATS[fmt]}"
    if not path.exists():
        arr = np.zeros((count, n, n), dtype) if count > 1 else np.zeros((n, n), dtype)
        geom = TileGeometry(tile.epsg, tile.ulx_m, tile.uly_m, n * 10.0)
        tmp = path.with_name(f".{path.name}")
        write_image(tmp, arr, geom, 10, fmt)
        tmp.rename(path)
    return path


def _rewrite_sizes(text: str, size_px: int) -> str:
    def repl(m: re.Match[str]) -> str:
        n = size_px * 10 // int(m[1])
        body = re.sub(r"<NROWS>\d+</NROWS>", f"<NROWS>{n}</NROWS>", m[2])
        body = re.sub(r"<NCOLS>\d+</NCOLS>", f"<NCOLS>{n}</NCOLS>", body)
        return f'<Size resolution="{m[1]}">{body}</Size>'

    return re.sub(r'<Size resolution="(\d+)">(.*?)</Size>', repl, text, flags=re.S)


def _genuine(src: Path, manifest: str, mtd_name: str) -> bool:
    m = re.search(
        rf'href="(?:\./)?{re.escape(mtd_name)}".*?checksumName="([^"]+)">([^<]+)<', manifest, re.S
    )
    if not m:
        return False
    digest = hashlib.new(ALGORITHMS[m[1]], (src / mtd_name).read_bytes()).hexdigest()
    return digest.lower() == m[2].strip().lower()


def _update_manifest(manifest: str, safe: Path, rels: list[str]) -> str:
    for rel in rels:
        pattern = re.compile(
            r'(<byteStream[^>]*size=")(\d+)("[^>]*>\s*<fileLocation[^>]*href="(?:\./)?'
            + re.escape(rel)
            + r'"[^>]*/>\s*<checksum checksumName=")([^"]+)(">)([^<]+)(<)',
            re.S,
        )
        m = pattern.search(manifest)
        if m is None:
            continue
        data = (safe / rel).read_bytes()
        digest = hashlib.new(ALGORITHMS[m[4]], data).hexdigest()
        digest = digest.upper() if m[6].isupper() else digest
        manifest = (
            manifest[: m.start()]
            + f"{m[1]}{len(data)}{m[3]}{m[4]}{m[5]}{digest}{m[7]}"
            + manifest[m.end() :]
        )
    return manifest


def build(
    src: Path,
    out: Path,
    size_px: int | None = None,
    zipped: bool = False,
    blank_cache: Path | None = None,
    seed: int = 0,
) -> Built:
    """Write a product around the real metadata in ``src`` under ``out``.

    Args:
        src: A folder of ``real_products()``.
        out: Where the ``.SAFE`` folder (or ``.zip``) goes.
        size_px: Rewrite the tile to this size (10 m pixels) and render pixels; ``None`` keeps the
            real size and writes blank rasters (copies of one encoded file per size).
        zipped: Write ``<name>.zip`` holding the ``.SAFE`` folder.
        blank_cache: Folder for the blank rasters (full size only).
        seed: Scene seed.
    """
    meta = RealMetadata.read(src)
    level = meta.name.level
    safe = out / src.name
    if safe.exists():
        shutil.rmtree(safe)
    mtd_tl_rel = f"GRANULE/{meta.granule}/MTD_TL.xml"
    tl_text = (src / mtd_tl_rel).read_text()
    geometry = meta.geometry
    scene = acq = None
    recipe = meta.recipe()
    if recipe.offset != meta.offset:
        raise ValueError(f"{src.name}: offset {meta.offset} differs from the generator's rule")
    if size_px is not None:
        tl_text = _rewrite_sizes(tl_text, size_px)
        geometry = TileGeometry(geometry.epsg, geometry.ulx_m, geometry.uly_m, size_px * 10.0)
        scene = make_scene(meta.name.tile_id, geometry, seed)
        acq = recipe.acquisition(scene)
    ext = IMAGE_FORMATS[meta.image_format]
    written: list[str] = []
    for rel in meta.image_files:
        f = meta.image(rel)
        target = safe / f"{rel}{ext}"
        if scene is not None and acq is not None:
            write_image(
                target,
                render_image(f, scene, acq, recipe),
                geometry,
                f.resolution_m,
                meta.image_format,
            )
        else:
            assert blank_cache is not None
            count, dtype = (3, "uint8") if f.kind == "TCI" else (1, "uint16")
            if f.kind == "SCL":
                dtype = "uint8"
            n = geometry.size_px(f.resolution_m)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(
                _blank(blank_cache, meta.image_format, n, count, dtype, geometry), target
            )
        written.append(f"{rel}{ext}")
    manifest = (src / "manifest.safe").read_text()
    gml = f"GRANULE/{meta.granule}/QI_DATA/MSK_CLOUDS_B00.gml"
    if level == "L1C" and gml in manifest:
        cloud = acq.cloud if acq is not None else np.zeros((geometry.size_px(60),) * 2, bool)
        (safe / gml).parent.mkdir(parents=True, exist_ok=True)
        (safe / gml).write_text(cloud_gml(cloud, geometry))
        written.append(gml)
    shutil.copyfile(src / f"MTD_MSI{level}.xml", safe / f"MTD_MSI{level}.xml")
    (safe / mtd_tl_rel).write_text(tl_text)
    if size_px is not None:
        written.append(mtd_tl_rel)
    if _genuine(src, manifest, f"MTD_MSI{level}.xml"):
        manifest = _update_manifest(manifest, safe, written)
    (safe / "manifest.safe").write_text(manifest)
    path = safe
    if zipped:
        path = out / f"{src.stem}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for p in sorted(safe.rglob("*")):
                zf.write(p, p.relative_to(out).as_posix())
        shutil.rmtree(safe)
    return Built(path, meta, geometry, scene, acq, tuple(written))
