"""Pure generation of synthetic scenes: land cover, atmosphere masks and band values.

Nothing here touches files. A :class:`Scene` is the land cover of one tile (a grid of
``cell_m`` cells, each with a CLC code, aligned to the tile's upper-left corner so that every cell
edge falls on a 60 m pixel edge). A :class:`Acquisition` adds a date's clouds, shadows, snow and
no-data swath edge, defined on the 60 m grid so they agree across resolutions. Band values follow
class-specific spectra and textures, so labels are learnable.

All values are DNs in the pre-04.00 convention (reflectance x 10000, 0 = no data); the writer adds
the 04.00 offset where the product's baseline asks for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ben_builder.patches.grid import TileGeometry

BAND_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

# Family prototypes: reflectance x 10000 in BAND_ORDER.
_PROTO: dict[str, tuple[int, ...]] = {
    "water": (900, 700, 600, 400, 300, 250, 200, 150, 130, 80, 60, 40),
    "broadleaf": (300, 350, 600, 350, 1000, 2800, 3400, 3600, 3700, 1200, 1800, 800),
    "conifer": (250, 250, 450, 250, 700, 1800, 2200, 2400, 2500, 900, 1200, 500),
    "grass": (400, 450, 800, 600, 1300, 2600, 3000, 3200, 3300, 1100, 2300, 1300),
    "arable": (600, 700, 1000, 1200, 1500, 2000, 2300, 2500, 2600, 900, 3000, 2200),
    "urban": (1200, 1200, 1300, 1400, 1600, 1700, 1800, 1900, 2000, 800, 2400, 2100),
    "sand": (1800, 2000, 2400, 2800, 3000, 3100, 3200, 3300, 3400, 1200, 4000, 3500),
    "rock": (1400, 1500, 1700, 1900, 2100, 2200, 2300, 2400, 2500, 1000, 3000, 2600),
    "wetland": (500, 500, 700, 500, 900, 1600, 1900, 2000, 2100, 800, 1400, 700),
    "shrub": (400, 400, 650, 550, 1000, 1900, 2200, 2400, 2500, 900, 2200, 1300),
    "burnt": (500, 500, 550, 600, 700, 800, 900, 1000, 1000, 500, 1800, 1700),
    "snow": (9000, 9000, 8800, 8600, 8400, 8200, 8000, 7800, 7700, 3000, 600, 400),
}
CLOUD = np.array((7000, 7200, 7300, 7400, 7500, 7600, 7700, 7800, 7800, 3500, 5000, 4000), "f4")
SNOW = np.array(_PROTO["snow"], "f4")
# L1C top-of-atmosphere = BOA * gain + path radiance (a crude but monotone stand-in).
TOA_GAIN = 0.92
TOA_PATH = np.array((1100, 900, 650, 450, 380, 330, 300, 280, 270, 200, 60, 30), "f4")
SHADOW_FACTOR = 0.35

# code: (family, texture, weight). texture: 0 smooth, 1 stripes (fields), 2 speckle, 3 blocks.
CODES: dict[str, tuple[str, int, float]] = {
    "111": ("urban", 3, 1.0),
    "112": ("urban", 3, 3.0),
    "121": ("urban", 3, 1.5),
    "122": ("urban", 1, 0.3),
    "124": ("urban", 0, 0.2),
    "131": ("rock", 2, 0.3),
    "141": ("grass", 2, 0.3),
    "142": ("grass", 3, 0.3),
    "211": ("arable", 1, 8.0),
    "212": ("arable", 1, 0.5),
    "221": ("shrub", 1, 1.0),
    "222": ("shrub", 3, 1.0),
    "231": ("grass", 0, 5.0),
    "242": ("arable", 3, 3.0),
    "243": ("grass", 3, 3.0),
    "244": ("shrub", 2, 0.5),
    "311": ("broadleaf", 2, 5.0),
    "312": ("conifer", 2, 6.0),
    "313": ("conifer", 3, 4.0),
    "321": ("grass", 2, 1.5),
    "322": ("shrub", 2, 1.0),
    "324": ("shrub", 2, 2.0),
    "331": ("sand", 0, 0.5),
    "332": ("rock", 2, 0.3),
    "333": ("rock", 2, 0.8),
    "334": ("burnt", 2, 0.2),
    "411": ("wetland", 2, 1.0),
    "412": ("wetland", 0, 1.0),
    "421": ("wetland", 1, 0.4),
    "511": ("water", 0, 0.7),
    "512": ("water", 0, 2.0),
    "523": ("water", 0, 1.0),
}
NO_POLYGON = 999


def stable_seed(*parts: object) -> int:
    """A stable 64-bit seed from arbitrary parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def class_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-code spectra and textures, indexed like ``list(CODES)``.

    Returns:
        ``(codes, spectra, texture, params)``: codes as uint16; spectra (n, 12) float32;
        texture kind (n,); params (n, 3) = amplitude, stripe period in metres, stripe angle.
    """
    codes = np.array([int(c) for c in CODES], "u2")
    spectra = np.empty((len(CODES), len(BAND_ORDER)), "f4")
    texture = np.empty(len(CODES), "i1")
    params = np.empty((len(CODES), 3), "f4")
    for i, (code, (family, tex, _)) in enumerate(CODES.items()):
        rng = np.random.default_rng(stable_seed("spectrum", code))
        spectra[i] = np.array(_PROTO[family], "f4") * (1 + 0.12 * rng.standard_normal(12))
        texture[i] = tex
        params[i] = (
            {0: 0.02, 1: 0.15, 2: 0.12, 3: 0.18}[tex] * (0.8 + 0.4 * rng.random()),
            rng.uniform(60, 240),
            rng.uniform(0, np.pi),
        )
    return codes, spectra, texture, params


@dataclass(frozen=True)
class Scene:
    """Land cover of one tile: CLC codes on a grid of ``cell_m`` cells.

    Attributes:
        tile_id: MGRS tile id.
        geometry: Tile geometry (a real tile's geoposition; ``size_m`` may be small for tests).
        cell_m: Side of a land-cover cell; a multiple of 60 m.
        cells: (n, n) uint16 CLC codes, ``NO_POLYGON`` where CLC has no coverage.
        seed: Seed the scene was made from.
    """

    tile_id: str
    geometry: TileGeometry
    cell_m: int
    cells: np.ndarray
    seed: int

    def codes_at(self, resolution_m: int) -> np.ndarray:
        """CLC code of every pixel of the tile at ``resolution_m`` (pixel-centre rule)."""
        n = self.geometry.size_px(resolution_m)
        k = self.cell_m // resolution_m
        return np.repeat(np.repeat(self.cells, k, 0), k, 1)[:n, :n]


def make_scene(
    tile_id: str, geometry: TileGeometry, seed: int, cell_m: int = 300, region_m: float = 1800.0
) -> Scene:
    """Make a tile's land cover: jittered Voronoi regions of weighted CLC codes.

    A corner of the tile (a triangle over about a twelfth of it) has no CLC coverage, and small
    water bodies sit inside other regions (they become polygon holes).

    Args:
        tile_id: MGRS tile id.
        geometry: Tile geometry.
        seed: Random seed.
        cell_m: Land-cover cell side, a multiple of 60 m.
        region_m: Mean spacing of region seeds; regions are about ``region_m`` across.
    """
    if cell_m % 60:
        raise ValueError(f"cell_m must be a multiple of 60 m, got {cell_m}")
    rng = np.random.default_rng(stable_seed("scene", tile_id, seed))
    n = int(np.ceil(geometry.size_m / cell_m))
    step = max(region_m / cell_m, 2.0)
    ng = int(np.ceil(n / step)) + 2
    # one seed per coarse block, jittered; nearest seed among the 3x3 neighbouring blocks
    jitter = rng.random((ng, ng, 2))
    names = list(CODES)
    weights = np.array([CODES[c][2] for c in names])
    region_code = rng.choice(
        np.array([int(c) for c in names], "u2"), (ng, ng), p=weights / weights.sum()
    )
    ii, jj = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
    bi, bj = (ii // step).astype(int), (jj // step).astype(int)
    best = np.full((n, n), np.inf)
    cells = np.zeros((n, n), "u2")
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            gi, gj = np.clip(bi + di, 0, ng - 1), np.clip(bj + dj, 0, ng - 1)
            si = (gi + jitter[gi, gj, 0]) * step
            sj = (gj + jitter[gi, gj, 1]) * step
            d = (ii - si) ** 2 + (jj - sj) ** 2
            closer = d < best
            best[closer] = d[closer]
            cells[closer] = region_code[gi, gj][closer]
    # small lakes (2x2 cells) inside other regions
    for _ in range(max(1, n * n // 400)):
        i, j = rng.integers(1, max(2, n - 3), 2)
        if cells[i, j] != 512:
            cells[i : i + 2, j : j + 2] = 512
    # a corner without CLC coverage (e.g. beyond the mapped area)
    cut = n // 3
    tri = (ii[::-1, :] + jj) < cut  # lower-left triangle
    cells[tri] = NO_POLYGON
    return Scene(tile_id=tile_id, geometry=geometry, cell_m=cell_m, cells=cells, seed=seed)


@dataclass(frozen=True)
class Acquisition:
    """One date's atmosphere over a scene, on the tile's 60 m grid.

    Attributes:
        cloud: (n60, n60) bool, opaque cloud.
        shadow: (n60, n60) bool, cloud shadow (never under cloud).
        snow: (n60, n60) bool, seasonal snow (never under cloud or shadow).
        nodata: (n60, n60) bool, outside the orbit swath.
        key: Identifies the acquisition (date); seeds its noise.
    """

    cloud: np.ndarray
    shadow: np.ndarray
    snow: np.ndarray
    nodata: np.ndarray
    key: str = ""

    def at(self, mask: np.ndarray, resolution_m: int) -> np.ndarray:
        """Upsample one of the 60 m masks to ``resolution_m``."""
        k = 60 // resolution_m
        return np.repeat(np.repeat(mask, k, 0), k, 1) if k > 1 else mask


def _blobs(
    rng: np.random.Generator, n: int, count: int, radius_px: tuple[float, float]
) -> np.ndarray:
    """Union of ``count`` random ellipses on an ``n x n`` grid."""
    out = np.zeros((n, n), bool)
    for _ in range(count):
        cy, cx = rng.uniform(0, n, 2)
        ry, rx = rng.uniform(*radius_px, 2)
        y0, y1 = int(max(0, cy - ry)), int(min(n, cy + ry + 1))
        x0, x1 = int(max(0, cx - rx)), int(min(n, cx + rx + 1))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1
    return out


def make_acquisition(
    scene: Scene,
    date_key: str,
    cloud_fraction: float = 0.06,
    snow: bool = False,
    swath_edge: bool = False,
) -> Acquisition:
    """Make the clouds, shadows, snow and swath edge of one acquisition.

    Args:
        scene: The scene observed.
        date_key: Identifies the acquisition (seeds its randomness).
        cloud_fraction: Rough share of the tile under cloud (0 for a clear day).
        snow: Whether seasonal snow lies on parts of the scene.
        swath_edge: Whether the tile is only partly inside the orbit swath.
    """
    n = scene.geometry.size_px(60)
    rng = np.random.default_rng(stable_seed("acq", scene.tile_id, scene.seed, date_key))
    r_px = (n / 60 + 2, n / 25 + 3)
    mean_area = np.pi * np.mean(r_px) ** 2
    count = int(round(cloud_fraction * n * n / mean_area))
    cloud = _blobs(rng, n, count, r_px) if count else np.zeros((n, n), bool)
    dy, dx = (int(v) for v in rng.integers(2, max(3, n // 40 + 3), 2))
    shifted = np.zeros_like(cloud)
    shifted[dy:, dx:] = cloud[: n - dy, : n - dx]
    shadow = shifted & ~cloud
    s_px = (n / 30 + 2, n / 12 + 3)
    s_count = max(1, int(round(0.12 * n * n / (np.pi * np.mean(s_px) ** 2))))
    snowy = _blobs(rng, n, s_count, s_px) if snow else np.zeros((n, n), bool)
    snowy &= ~(cloud | shadow)
    nodata = np.zeros((n, n), bool)
    if swath_edge:
        yy, xx = np.mgrid[0:n, 0:n]
        nodata = xx > n - 0.3 * yy  # slanted edge over the lower-right part
    return Acquisition(
        cloud=cloud & ~nodata,
        shadow=shadow & ~nodata,
        snow=snowy & ~nodata,
        nodata=nodata,
        key=date_key,
    )


def render_band(
    scene: Scene, acq: Acquisition, band: str, resolution_m: int, level: str
) -> np.ndarray:
    """Band values of one acquisition in the pre-04.00 DN convention.

    Args:
        scene: Land cover.
        acq: Atmosphere of the date.
        band: Band name from :data:`BAND_ORDER`.
        resolution_m: The band's native resolution.
        level: ``"L2A"`` (bottom of atmosphere) or ``"L1C"`` (top of atmosphere).

    Returns:
        (n, n) uint16, 0 where no data, >= 1 elsewhere.
    """
    b = BAND_ORDER.index(band)
    codes, spectra, texture, params = class_table()
    lut = np.zeros(1000, "i2")
    lut[codes] = np.arange(len(codes))
    # pixels outside CLC coverage still have land cover: take the grassland class
    lut[NO_POLYGON] = list(CODES).index("231")
    idx = lut[scene.codes_at(resolution_m)]
    n = idx.shape[0]
    rng = np.random.default_rng(stable_seed("band", scene.tile_id, scene.seed, resolution_m))
    speckle = rng.standard_normal((n, n), dtype=np.float32)
    block_k = max(1, 30 // resolution_m)
    nb = -(-n // block_k)
    blocks = np.repeat(
        np.repeat(rng.standard_normal((nb, nb), dtype=np.float32), block_k, 0), block_k, 1
    )[:n, :n]
    x = (np.arange(n, dtype=np.float32) + 0.5) * resolution_m
    amp, period, angle = params[idx, 0], params[idx, 1], params[idx, 2]
    u = x[None, :] * np.cos(angle) + x[:, None] * np.sin(angle)
    stripes = np.sin((2 * np.pi) * u / period).astype(np.float32)
    tex = texture[idx]
    pattern = np.where(
        tex == 1, stripes, np.where(tex == 2, speckle, np.where(tex == 3, blocks, 0))
    )
    value = spectra[idx, b] * (1 + amp * pattern)
    value += (
        np.random.default_rng(stable_seed("noise", scene.tile_id, band, scene.seed, acq.key))
        .normal(0, 25, (n, n))
        .astype(np.float32)
    )
    snow = acq.at(acq.snow, resolution_m)
    value[snow] = SNOW[b] * (1 + 0.03 * speckle[snow])
    shadow = acq.at(acq.shadow, resolution_m)
    value[shadow] *= SHADOW_FACTOR
    cloud = acq.at(acq.cloud, resolution_m)
    value[cloud] = CLOUD[b] * (1 + 0.05 * speckle[cloud])
    if level == "L1C":
        value = value * TOA_GAIN + TOA_PATH[b]
    out = np.clip(np.rint(value), 1, 60000).astype(np.uint16)
    out[acq.at(acq.nodata, resolution_m)] = 0
    return out


SCL_OF_FAMILY = {"water": 6, "sand": 5, "rock": 5, "urban": 5, "burnt": 5}


def render_scl(scene: Scene, acq: Acquisition) -> np.ndarray:
    """Scene Classification map (20 m) consistent with the acquisition."""
    codes = scene.codes_at(20)
    scl = np.full(codes.shape, 4, "u1")  # vegetation
    for code, (family, _, _) in CODES.items():
        if family in SCL_OF_FAMILY:
            scl[codes == int(code)] = SCL_OF_FAMILY[family]
    scl[acq.at(acq.snow, 20)] = 11
    scl[acq.at(acq.shadow, 20)] = 3
    cloud = acq.at(acq.cloud, 20)
    scl[cloud] = 9
    scl[acq.at(acq.nodata, 20)] = 0
    return scl


def render_classi(acq: Acquisition) -> np.ndarray:
    """L1C ``MSK_CLASSI_B00`` (60 m, 3 bands: opaque cloud, cirrus, snow) as uint8 0/1."""
    return np.stack([acq.cloud, np.zeros_like(acq.cloud), acq.snow]).astype("u1")
