"""Declarative facts from ``data_specs/`` loaded into validated, frozen models.

The YAML files hold the facts (bands, CLC classes, nomenclature, screening thresholds, tiles);
this module validates them and turns a malformed file into a :class:`SpecError` that names the file
and the key at fault.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ben_builder.errors import SpecError

SPECS_ENV = "BEN_BUILDER_SPECS"
_DEFAULT_SPECS_DIR = Path(__file__).resolve().parent.parent / "data_specs"


def specs_dir() -> Path:
    """Return the folder holding the spec YAML files (``$BEN_BUILDER_SPECS`` or ``data_specs/``)."""
    return Path(os.environ.get(SPECS_ENV, _DEFAULT_SPECS_DIR))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Band(_Frozen):
    """One Sentinel-2 band as it appears in a patch."""

    name: str = Field(pattern=r"^B(0[1-9]|1[0-2]|8A)$")
    resolution_m: Literal[10, 20, 60]
    size_px: int = Field(gt=0)
    band_index: int = Field(ge=0, le=12)


class BandSpec(_Frozen):
    """The band set and patch geometry (``bands.yaml``)."""

    patch_size_m: int = Field(gt=0)
    dtype: Literal["uint16"]
    nodata: int
    bands: tuple[Band, ...]

    @model_validator(mode="after")
    def _check_sizes(self) -> BandSpec:
        names = [b.name for b in self.bands]
        if len(set(names)) != len(names):
            raise ValueError(f"band names repeat: {names}")
        for b in self.bands:
            if b.size_px * b.resolution_m != self.patch_size_m:
                raise ValueError(
                    f"band {b.name}: size_px {b.size_px} x resolution_m {b.resolution_m} "
                    f"!= patch_size_m {self.patch_size_m}"
                )
        return self

    def by_name(self, name: str) -> Band:
        """Return the band called ``name``."""
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def resolutions_m(self) -> tuple[int, ...]:
        """Distinct band resolutions, finest first."""
        return tuple(sorted({b.resolution_m for b in self.bands}))


class ClcClass(_Frozen):
    """One CLC Level-3 class or special code."""

    code: str = Field(pattern=r"^\d{3}$")
    name: str
    v1_label: bool = True


class ClcSource(_Frozen):
    """Where the CLC 2018 vector data lives in the official GeoPackage."""

    file: str
    layer: str
    crs: str
    code_field: str


class ClcSpec(_Frozen):
    """CLC 2018 classes and schema (``clc_classes.yaml``)."""

    source: ClcSource
    classes: tuple[ClcClass, ...]
    special: tuple[ClcClass, ...]
    no_polygon_code: str

    @model_validator(mode="after")
    def _check(self) -> ClcSpec:
        codes = [c.code for c in self.classes + self.special]
        if len(set(codes)) != len(codes):
            raise ValueError("CLC codes repeat")
        if self.no_polygon_code not in codes:
            raise ValueError(f"no_polygon_code {self.no_polygon_code} is not a listed code")
        return self

    @property
    def all_codes(self) -> frozenset[str]:
        """Every valid ``Code_18`` value, classes and special codes."""
        return frozenset(c.code for c in self.classes + self.special)

    @property
    def v1_names(self) -> dict[str, str]:
        """Code -> BigEarthNet v1 (43-label) name, for the classes that are v1 labels."""
        return {c.code: c.name for c in self.classes if c.v1_label}


class NomenclatureClass(_Frozen):
    """One of the 19 classes and the CLC codes it takes."""

    name: str
    codes: tuple[str, ...]


class Nomenclature(_Frozen):
    """The 19-class nomenclature (``nomenclature.yaml``)."""

    max_unlabeled_fraction: float = Field(gt=0, le=1)
    classes: tuple[NomenclatureClass, ...]

    @model_validator(mode="after")
    def _check(self) -> Nomenclature:
        seen: dict[str, str] = {}
        for c in self.classes:
            for code in c.codes:
                if code in seen:
                    raise ValueError(f"code {code} maps to both {seen[code]!r} and {c.name!r}")
                seen[code] = c.name
        return self

    @property
    def code_to_class(self) -> dict[str, int]:
        """CLC code -> index of its class in the official order."""
        return {code: i for i, c in enumerate(self.classes) for code in c.codes}

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in the official order."""
        return tuple(c.name for c in self.classes)


class ScreeningSpec(_Frozen):
    """Screening thresholds (``screening.yaml``)."""

    nodata_max_fraction: float = Field(ge=0, le=1)
    cloud_or_shadow_min_fraction: float = Field(ge=0, le=1)
    snow_min_fraction: float = Field(ge=0, le=1)
    exclude_flagged: bool
    scl_cloud_or_shadow: tuple[int, ...]
    scl_snow: tuple[int, ...]

    @field_validator("scl_cloud_or_shadow", "scl_snow")
    @classmethod
    def _scl_range(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 0 <= x <= 11 for x in v):
            raise ValueError(f"SCL classes are 0..11, got {v}")
        return v


M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path) -> Any:
    """Read a YAML file, turning I/O and syntax errors into :class:`SpecError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec file ({exc.strerror})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc


def parse_model(model: type[M], data: Any, source: Path | str) -> M:
    """Validate ``data`` as ``model``; errors name ``source`` and the failing keys."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(f"{source}: invalid {model.__name__}: {problems}") from exc


def load_spec(model: type[M], filename: str, directory: Path | None = None) -> M:
    """Load and validate ``filename`` from the specs folder as ``model``."""
    path = (directory or specs_dir()) / filename
    return parse_model(model, load_yaml(path), path)


@functools.cache
def bands() -> BandSpec:
    """The band spec from ``bands.yaml`` (cached)."""
    return load_spec(BandSpec, "bands.yaml")


@functools.cache
def clc() -> ClcSpec:
    """The CLC spec from ``clc_classes.yaml`` (cached)."""
    return load_spec(ClcSpec, "clc_classes.yaml")


@functools.cache
def nomenclature() -> Nomenclature:
    """The 19-class nomenclature from ``nomenclature.yaml`` (cached)."""
    return load_spec(Nomenclature, "nomenclature.yaml")


@functools.cache
def screening() -> ScreeningSpec:
    """The screening thresholds from ``screening.yaml`` (cached)."""
    return load_spec(ScreeningSpec, "screening.yaml")


TILE_ID_RE = re.compile(
    r"^T(?P<zone>0[1-9]|[1-5]\d|60)(?P<band>[C-HJ-NP-X])(?P<square>[A-HJ-NP-Z][A-HJ-NP-V])$"
)


def check_tile_id(tile_id: str) -> str:
    """``tile_id`` if it is a valid Sentinel-2 tile id (``T`` + zone + band + square).

    Raises:
        SpecError: not a tile id, with a hint for the common slips (no ``T``, lower case).
    """
    if TILE_ID_RE.match(tile_id):
        return tile_id
    hint = ""
    if TILE_ID_RE.match("T" + tile_id.upper()):
        hint = f"; did you mean T{tile_id.upper()}?"
    elif TILE_ID_RE.match(tile_id.upper()):
        hint = f"; did you mean {tile_id.upper()}?"
    raise SpecError(
        f"{tile_id!r} is not a Sentinel-2 tile id: T, the UTM zone 01-60, a latitude band C-X and "
        f"a 100 km square, e.g. T33UUP{hint}"
    )
