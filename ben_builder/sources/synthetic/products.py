"""Descriptions of the synthetic products to generate (pure records, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ben_builder.sources.synthetic.scene import Acquisition, Scene, make_acquisition
from ben_builder.specs import check_tile_id


@dataclass(frozen=True)
class ProductRecipe:
    """What one synthetic product looks like.

    Attributes:
        tile_id: Any valid Sentinel-2 tile id (its corner comes from its MGRS square).
        level: ``"L1C"`` or ``"L2A"``.
        baseline: Processing baseline, ``"02.05"`` style; from ``"04.00"`` on, bands carry an
            offset.
        sensing: Sensing start time.
        mission: ``S2A`` or ``S2B``.
        relative_orbit: Relative orbit number.
        cloud_fraction: Rough cloud cover share.
        snow: Whether seasonal snow lies on the scene.
        swath_edge: Whether part of the tile is outside the swath (no data).
        zipped: Write ``<name>.zip`` instead of a ``.SAFE`` folder.
        image_format: ``JPEG2000`` (ESA products) or ``GeoTIFF`` (products made by Esri for the
            Planetary Computer: ``.tif`` bands under the same names).
        generated: Generation time (default: 5 min 37 s after sensing), e.g. to write a product
            under the exact name of a real one.
    """

    tile_id: str
    level: str
    baseline: str
    sensing: datetime
    mission: str = "S2A"
    relative_orbit: int = 22
    cloud_fraction: float = 0.06
    snow: bool = False
    swath_edge: bool = False
    zipped: bool = False
    image_format: str = "JPEG2000"
    generated: datetime | None = None

    def __post_init__(self) -> None:
        if self.level not in ("L1C", "L2A"):
            raise ValueError(f"level must be L1C or L2A, got {self.level!r}")
        if len(self.baseline) != 5 or self.baseline[2] != ".":
            raise ValueError(f"baseline must look like '04.00', got {self.baseline!r}")
        if self.image_format not in ("JPEG2000", "GeoTIFF"):
            raise ValueError(f"image_format must be JPEG2000 or GeoTIFF, got {self.image_format!r}")

    @property
    def generation(self) -> datetime:
        """Generation time: as given, else a few minutes after sensing."""
        return self.generated or self.sensing + timedelta(minutes=5, seconds=37)

    @property
    def name(self) -> str:
        """Product name without ``.SAFE``."""
        fmt = "%Y%m%dT%H%M%S"
        return (
            f"{self.mission}_MSI{self.level}_{self.sensing.strftime(fmt)}_"
            f"N{self.baseline.replace('.', '')}_R{self.relative_orbit:03d}_{self.tile_id}_"
            f"{self.generation.strftime(fmt)}"
        )

    @property
    def stem(self) -> str:
        """Product name without generation time (patch-name prefix)."""
        return self.name.rsplit("_", 1)[0]

    @property
    def offset(self) -> int:
        """Additive DN offset of this baseline (-1000 from 04.00 on, else 0)."""
        return -1000 if tuple(int(v) for v in self.baseline.split(".")) >= (4, 0) else 0

    def acquisition(self, scene: Scene) -> Acquisition:
        """The atmosphere of this product's date over ``scene``."""
        return make_acquisition(
            scene,
            self.sensing.strftime("%Y%m%dT%H%M%S"),
            cloud_fraction=self.cloud_fraction,
            snow=self.snow,
            swath_edge=self.swath_edge,
        )


def demo_recipes() -> list[ProductRecipe]:
    """The embedded default: two tiles, L1C and L2A, both baselines, folders and zips."""
    summer = datetime(2017, 6, 13, 10, 10, 31)
    autumn = datetime(2017, 8, 12, 10, 10, 21)
    winter = datetime(2018, 2, 15, 10, 0, 29)
    return [
        ProductRecipe("T33UUP", "L2A", "04.00", summer, swath_edge=True),
        ProductRecipe("T33UUP", "L2A", "02.05", autumn, mission="S2B", zipped=True),
        ProductRecipe("T33UUP", "L1C", "02.05", summer, swath_edge=True),
        ProductRecipe("T33UUP", "L1C", "04.00", autumn, mission="S2B", zipped=True),
        ProductRecipe("T34VER", "L2A", "04.00", winter, relative_orbit=36, snow=True, zipped=True),
        ProductRecipe("T34VER", "L1C", "04.00", winter, relative_orbit=36, snow=True),
    ]


#: The sensing time of a generated datatake when none is given.
DEFAULT_SENSING = datetime(2021, 7, 14, 10, 56, 21)


def datatake_recipes(
    tiles: tuple[str, ...],
    level: str = "L2A",
    sensing: datetime = DEFAULT_SENSING,
    mission: str = "S2A",
    relative_orbit: int = 51,
    baseline: str = "05.09",
) -> list[ProductRecipe]:
    """One product per tile from one datatake: every tile shares the sensing time and orbit.

    Raises:
        SpecError: a tile id is not a valid Sentinel-2 tile.
    """
    return [
        ProductRecipe(
            check_tile_id(t),
            level,
            baseline,
            sensing,
            mission=mission,
            relative_orbit=relative_orbit,
        )
        for t in dict.fromkeys(tiles)
    ]


def recipes_for(
    tiles: tuple[str, ...] = (),
    sensing: datetime | None = None,
    level: str = "L2A",
) -> list[ProductRecipe]:
    """The products to generate: the demo set (of ``tiles``), or one datatake over ``tiles``.

    Without ``sensing``, tiles of the demo set get the demo's products and any other tile makes
    the set a datatake at :data:`DEFAULT_SENSING`.
    """
    demo = demo_recipes()
    known = {r.tile_id for r in demo}
    if sensing is None and set(tiles) <= known:
        return [r for r in demo if not tiles or r.tile_id in tiles]
    return datatake_recipes(tiles, level, sensing or DEFAULT_SENSING)
