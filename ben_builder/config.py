"""Run configurations (``pipelines/*.yaml``) loaded into validated models.

Relative paths in a configuration are taken relative to the configuration file's folder, so a
pipeline runs the same from any working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ben_builder.specs import check_tile_id, load_yaml, parse_model


def _check_tiles(tiles: tuple[str, ...]) -> tuple[str, ...]:
    for tile in tiles:
        check_tile_id(tile)
    return tiles


#: Sentinel-2 tile ids, each checked when a configuration loads (a hint for ``30TVK``).
TileIds = Annotated[tuple[str, ...], AfterValidator(_check_tiles)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class CdseEndpoints:
    """Service URLs (defaults: the public CDSE)."""

    catalogue: str = "https://catalogue.dataspace.copernicus.eu/odata/v1"
    download: str = "https://download.dataspace.copernicus.eu/odata/v1"
    token: str = (
        "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
    )
    client_id: str = "cdse-public"


class SyntheticInputs(_Model):
    """Generate the embedded default instead of reading real products."""

    dir: Path = Field(description="Where products/, clc/ and ground_truth/ are written.")
    size_px: int = Field(2460, gt=0, multiple_of=6)
    seed: int = 0
    tiles: TileIds = Field((), description="Any Sentinel-2 tiles (default: the demo set's two).")
    sensing_time: datetime | None = Field(
        None,
        description="Make one product per tile from one datatake sensed then (default: the demo "
        "products; tiles outside the demo set make a datatake at 2021-07-14T10:56:21).",
    )
    level: Literal["L1C", "L2A"] = Field("L2A", description="Level of a datatake's products.")
    s1: bool = Field(
        False, description="Also write a BigEarthNet-S1 v1.0 folder of the products' S1 patches."
    )


class AoiSettings(_Model):
    """An area of interest: only tiles that touch it, only patches that intersect it."""

    bbox: tuple[float, float, float, float] | None = Field(
        None, description="West, south, east, north in degrees."
    )
    path: Path | None = Field(None, description="A GeoJSON or GeoPackage file (any CRS).")


class SelectSettings(_Model):
    """Keep the clearest acquisitions per tile and period (hub searches and local folders)."""

    n: int = Field(1, gt=0, description="Acquisitions kept per tile and period.")
    per: Literal["month", "season", "range"] = Field(
        "month",
        description="The period: a calendar month, a season (DJF, MAM, JJA, SON), or "
        "the whole date range.",
    )
    level: Literal["L1C", "L2A"] | None = Field(
        None, description="Keep only this level; default: an acquisition's L2A over its L1C."
    )


class ProductListFilter(_Model):
    """Restrict the products of a folder to those named in a CSV column (e.g. BigEarthNet's)."""

    csv: Path
    column: str
    match: Literal["name", "stem", "acquisition"] = Field(
        "stem",
        description="Compare full product names, names without generation time, or the "
        "acquisition (mission, sensing time, orbit, tile: an L1C matches its L2A).",
    )


class AreaQuery(_Model):
    """A search by area and season: a box or GeoJSON, dates, tiles, cloud cover."""

    start: date | None = None
    end: date | None = None
    bbox: tuple[float, float, float, float] | None = None
    geojson: Path | None = None
    tiles: TileIds = ()
    max_cloud: float | None = None


class HubQuery(AreaQuery):
    """A hub search: an area and a season, tiles, or exact names (see ``ben-builder search``)."""

    level: Literal["L1C", "L2A"] = "L2A"
    names: ProductListFilter | None = None


class HubInputs(_Model):
    """Search (unless a manifest is given) and download products before processing them."""

    backend: Literal["cdse", "dhus"] = "cdse"
    api_url: str | None = None
    endpoints: CdseEndpoints = Field(default_factory=CdseEndpoints)
    download_dir: Path
    manifest: Path | None = None
    query: HubQuery | None = None
    max_concurrent: int = Field(4, gt=0)
    offline_rounds: int = Field(0, ge=0)
    offline_wait_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> HubInputs:
        if self.manifest is None and self.query is None:
            raise ValueError("a hub input needs a 'query' or a 'manifest'")
        return self


class StacInputs(_Model):
    """Search a STAC API (pystac-client); bands are read from the items' assets (COGs)."""

    url: str = Field(description="The STAC API's root URL (its landing page).")
    collection: str = Field("sentinel-2-l2a", description="The collection of Sentinel-2 L2A items.")
    items_dir: Path = Field(
        description="Where the items found are kept (<product>.json); a re-run compares them."
    )
    query: AreaQuery = Field(default_factory=AreaQuery)


class Inputs(_Model):
    """Where products and CLC data come from."""

    source: Literal["synthetic", "local", "hub", "stac"] = Field(
        description="synthetic (the generator, no network), local (a products folder), hub "
        "(download SAFE products) or stac (a STAC API's items, bands read from their assets)."
    )
    synthetic: SyntheticInputs | None = None
    hub: HubInputs | None = None
    stac: StacInputs | None = None
    products_dir: Path | None = Field(
        None,
        description="Folder of .SAFE folders, .zip files, <name>.json STAC items or <name>.zarr "
        "EOPF products (subfolders too), for local.",
    )
    product_list: ProductListFilter | None = None
    clc_path: Path | None = Field(
        None,
        description="The CLC 2018 GeoPackage U2018_CLC2018_V2020_20u1.gpkg (EEA39 countries "
        "only); required but for synthetic.",
    )

    @model_validator(mode="after")
    def _check(self) -> Inputs:
        if self.source == "synthetic" and self.synthetic is None:
            raise ValueError("source 'synthetic' needs a 'synthetic' section")
        if self.source == "local" and self.products_dir is None:
            raise ValueError("source 'local' needs 'products_dir'")
        if self.source == "hub" and self.hub is None:
            raise ValueError("source 'hub' needs a 'hub' section")
        if self.source == "stac" and self.stac is None:
            raise ValueError("source 'stac' needs a 'stac' section (url, items_dir)")
        if self.source != "synthetic" and self.clc_path is None:
            raise ValueError(
                f"source {self.source!r} needs 'clc_path', the CLC 2018 GeoPackage "
                "(U2018_CLC2018_V2020_20u1.gpkg): without it every patch is unlabelled "
                "(`ben-builder patch` cuts unlabelled patches on purpose)"
            )
        return self


class S1Inputs(_Model):
    """Sentinel-1 patches for a BigEarthNet v2 reproduction, taken from BigEarthNet-S1 v1.0."""

    bigearthnet_v1: Path | None = Field(
        None,
        description="The BigEarthNet-S1 v1.0 folder (one <s1_name>/ folder per patch); default "
        "for a synthetic source with s1: true, the folder it writes.",
    )


class SlurmSettings(_Model):
    """dask-jobqueue ``SLURMCluster`` settings; each job holds ``processes`` workers.

    Each worker runs one tile at a time and decodes it with ``cores / processes`` GDAL threads
    (1 by default). Lost jobs
    (cancelled, preempted, a node failing) are replaced to keep ``jobs`` running; past
    ``max_lost_jobs`` the run stops with the remaining products recorded as failed.
    """

    cores: int = Field(8, gt=0, description="Cores per job.")
    memory: str = Field("32GB", description="Memory per job (#SBATCH --mem).")
    processes: int = Field(8, gt=0, description="Worker processes per job.")
    walltime: str = Field("04:00:00", pattern=r"^(\d+-)?\d{1,2}:\d{2}(:\d{2})?$")
    queue: str | None = Field(None, description="Partition (#SBATCH -p).")
    account: str | None = None
    job_name: str = "ben-builder"
    interface: str | None = Field(None, description="Network interface workers use (e.g. ib0).")
    python: str | None = Field(None, description="Python on the nodes (default: this one).")
    log_directory: str | None = Field(
        None, description="Folder for the jobs' slurm-<id>.out (default: <output>/report/workers)."
    )
    worker_log_level: Literal["debug", "info", "warning", "error"] = "info"
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    local_directory: str | None = None
    jobs: int = Field(1, gt=0, description="SLURM jobs kept running.")
    max_lost_jobs: int | None = Field(
        None, ge=0, description="Lost jobs replaced before the run stops (default: 2 x jobs)."
    )
    lifetime_margin_s: int = Field(
        600,
        ge=0,
        description="Workers retire this long before the walltime (staggered), so no "
        "tile is cut off by the walltime; their jobs are replaced.",
    )

    @model_validator(mode="after")
    def _check(self) -> SlurmSettings:
        if self.cores % self.processes:
            raise ValueError(
                f"cores ({self.cores}) must be a multiple of processes ({self.processes}): each "
                "worker gets cores / processes threads"
            )
        return self

    def walltime_s(self) -> int:
        """The walltime in seconds."""
        days, _, rest = self.walltime.rpartition("-")
        parts = [int(v) for v in rest.split(":")] + [0]
        h, m, sec = (parts + [0, 0])[:3]
        return int(days or 0) * 86400 + h * 3600 + m * 60 + sec


class ClusterSettings(_Model):
    """Which Dask cluster runs the tasks."""

    kind: Literal["local", "slurm", "address"] = "local"
    n_workers: int | None = Field(None, gt=0, description="Local workers; default: one per core.")
    threads_per_task: int | None = Field(
        None,
        gt=0,
        description="Decoding threads per product (GDAL_NUM_THREADS); default: local, the cores "
        "divided among the workers that have a product (all cores for one tile); SLURM, a "
        "worker's share of its job's cores; address, 1.",
    )
    memory_limit: str = "auto"
    dashboard: bool = Field(False, description="Serve Dask's dashboard on port 8787.")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    scheduler_address: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ClusterSettings:
        if self.kind == "address" and not self.scheduler_address:
            raise ValueError("cluster kind 'address' needs 'scheduler_address'")
        return self


class FlagLists(_Model):
    """Take cloud/shadow and snow flags from published patch-name lists (exact v2 reproduction)."""

    cloud_or_shadow: Path
    snow: Path


class CountrySettings(_Model):
    """Per-patch countries from a boundaries file (``ben_builder.patches.countries``)."""

    path: Path | None = Field(
        None,
        description="Boundaries file; default: Natural Earth's admin-0 countries at 1:110m "
        "(v5.1.2, public domain), shipped in data_specs/naturalearth/.",
    )
    field: str = Field("NAME", description="Attribute with the country name (any case).")
    candidates: tuple[str, ...] | None = Field(
        None,
        description="Countries to choose among; default every feature (the reproduction: "
        "the ten BigEarthNet countries).",
    )
    rule: Literal["closest", "within", "square"] = Field(
        "closest",
        description="Nearest candidate to the patch centre (sea patches too), only the one "
        "containing it, or nearest to the whole patch square with ties to the larger country "
        "(the published v2's rule, the default of a reproduction).",
    )


class Sen2CorSettings(_Model):
    """Make L2A products from L1C ones with sen2cor before cutting (``ben_builder.sen2cor``)."""

    executable: str = Field("L2A_Process", description="L2A_Process on PATH, or its path.")
    version: str | None = Field("2.11", description="Expected sen2cor version; null: any.")
    output_dir: Path = Field(description="Where the L2A .SAFE folders (and sen2cor logs) go.")
    extra_args: tuple[str, ...] = ()
    timeout_s: float = Field(4 * 3600.0, gt=0)


class RunConfig(_Model):
    """One run of the chain: inputs, output archive, processing and cluster settings."""

    name: str = Field(description="The run's name (report title, SLURM job name).")
    output: Path = Field(description="The archive folder (relative paths: to the config file).")
    inputs: Inputs
    layout: Literal["v2", "v1", "both", "lmdb"] = Field(
        "v2", description="v2 folders, v1 folders, both, or lmdb (straight into the training LMDB)."
    )
    aoi: AoiSettings | None = Field(
        None,
        description="Area of interest: products of tiles that do not touch it are left out, "
        "and patches that do not intersect it (dropped_outside_aoi).",
    )
    select: SelectSettings | None = Field(
        None,
        description="Pick the clearest acquisitions per tile and period; only those are "
        "downloaded (default: every product found).",
    )
    overlap: Literal["once", "keep"] = Field(
        "once",
        description="Where the archive's tiles overlap (neighbours share ~9.8 km): keep each "
        "place once, in the tile whose own 100 km square holds it, or keep every tile's patches "
        "(a reproduction keeps what v2 kept).",
    )
    flags_from_lists: FlagLists | None = None
    countries: CountrySettings | None = None
    sen2cor: Sen2CorSettings | None = None
    s1: S1Inputs | None = Field(
        None,
        description="Sentinel-1 patches: each patch's s1_name pair copied into BigEarthNet-S1/ "
        "(a reproduction; hard links where the file system allows).",
    )
    reproduce: Literal["bigearthnet-v2"] | None = Field(
        None,
        description="Apply BigEarthNet v2's rules (ben_builder.bigearthnet): v1 names from v1's "
        "table, flags from the published lists (unless flags_from_lists names others), the ten "
        "countries, and the 115 products as the default product list.",
    )
    report_samples: int = Field(24, ge=0, description="Sample patches in the report's mosaic.")
    prune_max_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Products no input asks for any more are removed from the archive; more "
        "than this share of them stops the run unless build --prune (a mistyped folder).",
    )
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    fail_fast: bool = False
    duplicates: Literal["latest", "fail"] = Field(
        "latest",
        description="Products of one acquisition (reprocessed copies): keep the latest generation "
        "time and report the others as skipped, or fail.",
    )
    verify: bool = Field(
        True, description="Check products against manifest.safe checksums and zip CRCs."
    )


def resolve_paths(value: object, base: Path) -> object:
    """``value`` with every relative path in it (models searched deeply) taken against ``base``."""
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value).resolve()
    if isinstance(value, BaseModel):
        # only what changed: the copy's fields_set stays what the file set (defaults stay defaults)
        updates = {}
        for k in type(value).model_fields:
            old = getattr(value, k)
            new = resolve_paths(old, base)
            if new is not old:
                updates[k] = new
        return value.model_copy(update=updates) if updates else value
    return value


def load_config(path: Path) -> RunConfig:
    """Load a run configuration, resolving relative paths against its folder.

    Raises:
        SpecError: malformed YAML or invalid settings (naming the file and key).
    """
    path = Path(path)
    config = parse_model(RunConfig, load_yaml(path), path)
    return cast(RunConfig, resolve_paths(config, path.resolve().parent))


def reference_markdown() -> str:
    """Every key of a run configuration, as a markdown table (the README's reference).

    Made from the models themselves (names, types, defaults, descriptions), so it cannot drift
    from what the loader accepts.
    """
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    _model_rows(RunConfig, "", lines)
    return "\n".join(lines) + "\n"


def _model_rows(model: type[BaseModel], prefix: str, lines: list[str]) -> None:
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(info.annotation)
        meaning = info.description or ""
        if nested is not None:
            kind = "section"
            meaning = meaning or (nested.__doc__ or "").strip().splitlines()[0]
        else:
            kind = _type_name(info.annotation)
        if info.is_required():
            default = "required"
        else:
            default = _default(info.get_default(call_default_factory=True))
        lines.append(f"| `{key}` | {kind} | {default} | {meaning.replace('|', '/')} |")
        if nested is not None:
            _model_rows(nested, f"{key}.", lines)


def _nested_model(annotation: object) -> type[BaseModel] | None:
    """The model a field holds (itself or in ``X | None``), if any."""
    import typing

    candidates = typing.get_args(annotation) or (annotation,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("datetime.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("NoneType", "None")
    return text.replace("|", "or")


def _default(value: object) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, CdseEndpoints):
        return "the public CDSE"
    return f"`{value}`".replace("|", "/")
