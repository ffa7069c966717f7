"""The whole chain on Dask: products -> patches -> labels -> screening -> archive -> metadata.

One task per product, keyed by the product's name so keys are deterministic. Tasks get paths and
small frozen records, never open datasets; each sets its own GDAL environment. A failing product
is recorded as data (product, stage, error, traceback) and the others go on; the run report is
written, then the command fails if anything did.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import rasterio

from ben_builder import archive, bigearthnet, specs
from ben_builder.config import (
    ClusterSettings,
    HubInputs,
    ProductListFilter,
    RunConfig,
    Sen2CorSettings,
)
from ben_builder.errors import (
    ClusterError,
    ProductNotFoundError,
    SpecError,
    UnsupportedProductError,
)
from ben_builder.process import (
    Options,
    decode_threads,
    process_product,
    product_seconds,
    stage_of,
)
from ben_builder.safe import (
    DECODER_ENV_DEFAULTS,
    Duplicate,
    ProductName,
    bare_name,
    select_products,
)
from ben_builder.verify import product_files

log = logging.getLogger(__name__)

GDAL_OPTIONS: dict[str, Any] = {
    "GDAL_CACHEMAX": 256,
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_NUM_THREADS": 1,
}


@dataclass(frozen=True)
class TaskResult:
    """Outcome of one product task."""

    product: str
    ok: bool
    stage: str | None = None
    error: str | None = None
    traceback: str | None = None
    summary: dict[str, Any] | None = None
    sha256: str | None = None


@dataclass
class RunResult:
    """Outcome of a whole run."""

    results: list[TaskResult] = field(default_factory=list)
    skipped: list[Duplicate] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    report: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[TaskResult]:
        """The tasks that failed."""
        return [r for r in self.results if not r.ok]

    @property
    def warnings(self) -> list[str]:
        """Warnings of the products processed (no CLC coverage, nothing kept), and of the run."""
        out = list(self.notes)
        out += [f"{r.product}: {w}" for r in self.results if r.summary
                for w in r.summary.get("warnings", [])]  # fmt: skip
        if not self.failures and self.produced_nothing:
            out.append("the run produced no patch at all")
        return out

    @property
    def produced_nothing(self) -> bool:
        """Whether the archive holds no patch (such a run must not look like a success)."""
        return self.counts.get("metadata", 0) + self.counts.get("flagged", 0) == 0


def checksum(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative path and content, sorted)."""
    h = hashlib.sha256()
    for f in product_files(path):
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _cores() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def plan_workers(settings: ClusterSettings, n_products: int) -> tuple[int, int]:
    """Local workers to start and decoding threads per product task.

    Many products: one single-threaded worker per core, as before. Fewer products than cores:
    one worker per product, and the spare cores go to those products as OpenJPEG decoding
    threads (``GDAL_NUM_THREADS``; a full band decodes 1.9x faster on 2 threads), so a one-tile
    run uses the whole machine. On SLURM each worker gets its job's cores divided among the
    job's processes. ``threads_per_task`` overrides the threads.
    """
    cores = len(_cores())
    workers = settings.n_workers or cores
    if settings.kind == "local":
        workers = max(1, min(workers, n_products))
        threads = max(1, cores // workers)
    elif settings.kind == "slurm":
        threads = max(1, settings.slurm.cores // settings.slurm.processes)
    else:
        threads = 1
    return workers, settings.threads_per_task or threads


def _pin_to_worker_cores(threads: int) -> None:
    """Pin the calling process to its own cores (worker ``i`` -> cores ``i*threads`` onwards).

    On a workstation, floating workers share cores badly: two unpinned workers read a tile's
    bands in ~116 s each, where two bare decodes pinned to a core each took ~101 s. Only for
    local clusters with no more workers x threads than cores; a failure to pin is harmless.
    """
    try:
        from distributed import get_worker

        name = get_worker().name
        cores = _cores()
        if isinstance(name, int) and cores:
            first = (name * threads) % len(cores)
            os.sched_setaffinity(0, set(cores[first : first + threads]))
    except (ValueError, OSError, AttributeError):
        pass


def product_task(
    path: str, out_root: str, options: Options, with_checksum: bool, pin: bool = False,
    threads: int = 1,
) -> TaskResult:  # fmt: skip
    """Process one product on a worker; never raises, failures come back as data.

    ``threads`` cores for decoding (bands side by side, see :func:`process_product`) change the
    speed, never the pixels.
    """
    name = Path(path).name
    if pin:
        _pin_to_worker_cores(threads)
    try:
        with rasterio.Env(**{**GDAL_OPTIONS, "GDAL_NUM_THREADS": threads}):
            s = process_product(path, out_root, options, threads=threads)
        digest = None
        if with_checksum:  # hashed once per product; a re-run reads the recorded digest
            stem = ProductName.parse(name).stem
            record = archive.part_path(Path(out_root), stem).with_suffix(".sha256")
            if s.skipped and record.exists():
                digest = record.read_text().strip()
            else:
                digest = checksum(Path(path))
                archive.write_bytes(record, digest.encode())
        return TaskResult(product=name, ok=True, summary=asdict(s), sha256=digest)
    except Exception as exc:
        return TaskResult(product=name, ok=False, stage=stage_of(exc),
                          error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc())  # fmt: skip


def sen2cor_task(path: str, settings: Sen2CorSettings) -> TaskResult:
    """Make one L2A product with sen2cor on a worker; never raises, failures come back as data."""
    from ben_builder.sen2cor import run_sen2cor

    name = Path(path).name
    try:
        made = run_sen2cor(path, settings)
        return TaskResult(product=name, ok=True, summary={"l2a": str(made)})
    except Exception as exc:
        return TaskResult(product=name, ok=False, stage="sen2cor",
                          error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc())  # fmt: skip


def make_l2a(
    client: Any, products: list[Path], config: RunConfig, progress: bool
) -> tuple[list[Path], list[TaskResult]]:
    """Replace each L1C product by its L2A: one given beside it, one made before, or sen2cor's.

    Without ``sen2cor`` settings, L1C products pass unchanged, except in a BigEarthNet v2
    reproduction, which is made of L2A products only: there they are recorded as failures.

    Returns:
        The products to cut and the failures (stage ``sen2cor``).
    """
    from dask.distributed import as_completed
    from tqdm import tqdm

    from ben_builder.sen2cor import check_version, find_l2a

    level: dict[Path, str | None] = {}
    for p in products:
        try:
            level[p] = ProductName.parse(p.name).level
        except UnsupportedProductError:
            level[p] = None  # not a product name: its task reports it
    l2a = [p for p in products if level[p] != "L1C"]
    have = {bigearthnet.acquisition(p.name) for p in l2a if level[p] == "L2A"}
    l1c = [p for p in products if level[p] == "L1C" and bigearthnet.acquisition(p.name) not in have]
    settings = config.sen2cor
    if settings is None:
        if config.reproduce != "bigearthnet-v2":
            return products, []
        return sorted(l2a), [
            TaskResult(product=p.name, ok=False, stage="sen2cor",
                       error="an L1C product: BigEarthNet v2 is made of sen2cor's L2A products; "
                       "set 'sen2cor' in the configuration or put the L2A product beside it")
            for p in l1c
        ]  # fmt: skip
    if not l1c:
        return sorted(l2a), []
    if any(find_l2a(p, settings.output_dir) is None for p in l1c):
        log.info("sen2cor %s", check_version(settings))  # before any work: missing or wrong version
    futures = {
        client.submit(sen2cor_task, str(p), settings, key=f"sen2cor-{p.name}", pure=False): p.name
        for p in l1c
    }
    made, failed = list(l2a), []
    disable = None if progress else True
    bar = tqdm(total=len(futures), unit="product", desc="sen2cor", disable=disable)
    with bar:
        for fut in as_completed(list(futures)):
            r = _outcome(fut, futures[fut])  # a worker lost to sen2cor fails that product only
            if r.ok and r.summary:
                made.append(Path(r.summary["l2a"]))
            else:
                log.error("%s failed in stage sen2cor: %s", r.product, r.error)
                failed.append(r)
            bar.update()
    return sorted(made), failed


def task_key(path: Path) -> str:
    """Deterministic Dask key of a product's task."""
    return f"product-{path.name}"


def discover_products(config: RunConfig) -> tuple[list[Path], list[TaskResult], Path | None]:
    """Products to process, products listed but absent (as failures), and the CLC path."""
    inputs = config.inputs
    if inputs.source == "synthetic":
        from ben_builder.synth.products import demo_recipes
        from ben_builder.synth.writer import write_dataset

        syn = inputs.synthetic
        assert syn is not None  # validated by the model
        recipes = [r for r in demo_recipes() if not syn.tiles or r.tile_id in syn.tiles]
        with rasterio.Env():
            written = write_dataset(recipes, syn.dir, size_px=syn.size_px, seed=syn.seed)
        return written.products, [], inputs.clc_path or written.clc
    if inputs.source == "hub":
        assert inputs.hub is not None  # validated by the model
        found, failed = fetch_from_hub(inputs.hub)
        return found, failed, inputs.clc_path
    folder = inputs.products_dir
    assert folder is not None  # validated by the model
    if not folder.is_dir():
        raise ProductNotFoundError(f"{folder}: products_dir does not exist")
    found = sorted(p for p in folder.iterdir() if p.name.endswith((".SAFE", ".zip")))
    missing: list[TaskResult] = []
    product_list = inputs.product_list
    if product_list is None and config.reproduce == "bigearthnet-v2":
        # v2's products by acquisition: its L1C products (for sen2cor) or the L2A made of them
        product_list = ProductListFilter(
            csv=bigearthnet.data_dir() / bigearthnet.V2_PRODUCTS, column="product",
            match="acquisition",
        )  # fmt: skip
    if product_list is not None:
        found, missing = filter_by_list(found, product_list, folder)
    return found, missing, inputs.clc_path


def _list_key(name: str, match: str) -> str | None:
    if match == "acquisition":
        try:
            return bigearthnet.acquisition(name)
        except SpecError:
            return None
    bare = bare_name(name)
    if match == "stem" and bare.count("_") > 5:
        return bare.rsplit("_", 1)[0]
    return bare


def filter_by_list(
    found: list[Path], product_list: ProductListFilter, folder: Path
) -> tuple[list[Path], list[TaskResult]]:
    """The products of ``found`` named in the list, and each listed one absent (as a failure).

    With ``match: acquisition`` every product of a listed acquisition is kept (its L1C and L2A).
    """
    wanted = read_product_list(product_list.csv, product_list.column)
    keys = [_list_key(w, product_list.match) for w in wanted]
    bad = [w for w, k in zip(wanted, keys, strict=True) if k is None]
    if bad:
        raise SpecError(f"{product_list.csv}: {bad[:3]} are not Sentinel-2 product names")
    by_key: dict[str, list[Path]] = {}
    for p in found:
        k = _list_key(p.name, product_list.match)
        if k is not None:
            by_key.setdefault(k, []).append(p)
    kept = sorted({p for k in keys if k is not None and k in by_key for p in by_key[k]})
    missing = [
        TaskResult(product=w.removesuffix(".SAFE"), ok=False, stage="discover",
                   error=f"listed in {product_list.csv.name} but not in {folder}")
        for w, k in zip(wanted, keys, strict=True) if k not in by_key
    ]  # fmt: skip
    return kept, missing


def fetch_from_hub(hub: HubInputs) -> tuple[list[Path], list[TaskResult]]:
    """Search (or read the manifest) and download; failed downloads come back as data."""
    from ben_builder.hub import HubSettings, make_backend
    from ben_builder.hub.manifest import read_manifest, write_manifest
    from ben_builder.hub.query import Query, area_from_bbox, area_from_geojson
    from ben_builder.hub.transfer import TransferPolicy, download_all

    settings = HubSettings(backend=hub.backend, api_url=hub.api_url, endpoints=hub.endpoints)
    backend = make_backend(settings)
    names: tuple[str, ...] = ()
    if hub.manifest is not None and hub.manifest.exists():
        items = read_manifest(hub.manifest)
    else:
        q = hub.query
        assert q is not None  # validated by the model
        area = area_from_geojson(q.geojson) if q.geojson else None
        if q.bbox:
            area = area_from_bbox(q.bbox)
        if q.names:
            names = tuple(read_product_list(q.names.csv, q.names.column))
        query = Query(level=q.level, start=q.start, end=q.end, area_wkt=area, tiles=q.tiles,
                      max_cloud=q.max_cloud, names=names)  # fmt: skip
        items = backend.search(query)
        write_manifest(hub.manifest or hub.download_dir / "manifest.jsonl", items)
    policy = TransferPolicy(max_concurrent=hub.max_concurrent, offline_rounds=hub.offline_rounds,
                            offline_wait_s=hub.offline_wait_s)  # fmt: skip
    results = download_all(items, hub.download_dir, backend, policy)
    found = sorted(Path(r.path) for r in results if r.ok and r.path)
    failed = [TaskResult(product=r.name, ok=False, stage="download", error=r.error)
              for r in results if not r.ok]  # fmt: skip
    if hub.query is not None and hub.query.names is not None:  # named products the hub lacks
        have = {i.name.removesuffix(".SAFE") for i in items}
        failed += [
            TaskResult(product=n, ok=False, stage="search",
                       error=f"listed in {hub.query.names.csv.name} but not found at the hub")
            for n in (w.removesuffix(".SAFE") for w in names) if n not in have
        ]  # fmt: skip
    return found, failed


def read_product_list(path: Path, column: str) -> list[str]:
    """Values of ``column`` in a CSV file (e.g. ``../shared/bigearthnet/v2_l2a_products.csv``)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise SpecError(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
            return [row[column].strip() for row in reader if row[column].strip()]
    except OSError as exc:
        raise SpecError(f"{path}: cannot read product list ({exc.strerror})") from exc


def read_name_list(path: Path) -> set[str]:
    """Patch names from a one-name-per-line list (the published BigEarthNet flag lists)."""
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except OSError as exc:
        raise SpecError(f"{path}: cannot read patch list ({exc.strerror})") from exc


#: Times a task may be on a worker that dies before it is a failure of its product (one retry:
#: a worker lost to a signal or a lost job is retried once; one that kills its worker twice, as a
#: product over the memory limit does, is recorded as failed and the run goes on).
ALLOWED_FAILURES = 1
#: Seconds between looks at the cluster (SLURM job states) while tasks run.
POLL_S = 5.0

#: Dask's periodic work slowed down for tasks of minutes. Measured here, one core, a 20 s task:
#: Dask's defaults (stack sampling every 10 ms, event-loop ticks every 20 ms, system monitor
#: every 500 ms, work stealing every 100 ms) used 1.84 s of CPU in the worker and the scheduler
#: (9% of the core the product decodes on); these 0.40 s. The memory monitor keeps its 100 ms:
#: at 1 s a product over the memory limit could finish its allocations before its worker is
#: stopped. Not in the dashboard: no profiles.
QUIET_DASK: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.scheduler.work-stealing-interval": "1s",
}


#: Worker processes: OpenJPEG as :data:`~ben_builder.safe.DECODER_ENV_DEFAULTS` says, and glibc's
#: malloc keeping buffers of up to 16 MB on its heap and up to 32 MB free at its top. Dask sets
#: ``MALLOC_TRIM_THRESHOLD_=65536`` for its workers, which also fixes the size above which malloc
#: maps fresh pages at 128 kB: every JP2 tile's 4 MB buffer and every 2 MB GDAL block then comes
#: from new, zero-filled pages (4x the page faults of a decode; 3.4% of its time, measured here).
#: Bands (over 100 MB) are still mapped and returned on release. Values set in the environment
#: (or by a job script) are kept.
OPJ = "OPJ_NUM_THREADS"
WORKER_ENV_DEFAULTS: dict[str, str] = {
    **DECODER_ENV_DEFAULTS,
    "MALLOC_MMAP_THRESHOLD_": str(16 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20),
}


def worker_environ(threads: int = 1) -> dict[str, str]:
    """The environment variables worker processes start with (what the user set wins).

    ``threads``: a task's decoding cores. A band with more than one of them (24 or more cores
    for 12 bands) decodes on OpenJPEG's threads (GDAL gives them to each codec), so
    ``OPJ_NUM_THREADS`` is left out then: at 0 GDAL's threads did not decode a band faster.
    """
    env = {k: os.environ.get(k, v) for k, v in WORKER_ENV_DEFAULTS.items()}
    if decode_threads(threads, len(specs.bands().bands))[1] > 1 and OPJ not in os.environ:
        del env[OPJ]
    return env


@contextmanager
def dask_client(
    settings: ClusterSettings,
    log_directory: Path | None = None,
    local_workers: int | None = None,
    threads: int = 1,
) -> Iterator[Any]:
    """A Dask client for the configured cluster (local processes, SLURM, or an address).

    Args:
        settings: The cluster settings.
        log_directory: Where SLURM jobs write their output (unless the settings name a folder).
        local_workers: Local workers to start (default: ``n_workers``, else one per core).
        threads: Decoding cores per task on local workers (their environment follows).
    """
    import dask
    import distributed  # noqa: F401  (its config defaults, read and overridden here)

    # one task at a time per single-threaded worker (a tile's memory at a time, and a worker lost
    # to one product takes no queued product down with it)
    dask_config = {
        "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
        "distributed.scheduler.worker-saturation": 1.0,
        "distributed.nanny.pre-spawn-environ": {
            **dask.config.get("distributed.nanny.pre-spawn-environ"),
            **worker_environ(threads),
        },
        **QUIET_DASK,
    }
    before = {k: os.environ.get(k) for k in WORKER_ENV_DEFAULTS}
    try:
        with dask.config.set(dask_config):
            with _client(settings, log_directory, local_workers) as client:
                yield client
    finally:  # a nanny sets its workers' variables in this process too: undone, not inherited
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _client(
    settings: ClusterSettings, log_directory: Path | None, local_workers: int | None
) -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    if settings.kind == "address":
        try:
            client = Client(settings.scheduler_address)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {settings.scheduler_address} ({exc}); start "
                "it (`dask scheduler`) or fix cluster.scheduler_address"
            ) from exc
        with client:
            yield client
        return
    if settings.kind == "slurm":
        cluster = make_slurm_cluster(settings, log_directory)
        if log_directory is not None:
            log_directory.mkdir(parents=True, exist_ok=True)
        # adapt with a floor, not scale: lost jobs are replaced (scale never resubmits)
        jobs = settings.slurm.jobs
        cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
    else:
        n = local_workers or settings.n_workers or os.cpu_count() or 1
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            memory_limit=settings.memory_limit,
            # no dashboard unless asked for; ":0" also keeps the scheduler's HTTP server off 8787
            dashboard_address=":8787" if settings.dashboard else ":0",
            scheduler_kwargs={"dashboard": settings.dashboard},
        )
    with cluster, Client(cluster) as client:
        yield client


def make_slurm_cluster(settings: ClusterSettings, log_directory: Path | None = None) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` from the config (no dashboard unless asked for)."""
    from dask_jobqueue import SLURMCluster

    s = settings.slurm
    lifetime = max(s.walltime_s() - s.lifetime_margin_s, 1)
    stagger = min(300, max(lifetime // 10, 1))
    logs = s.log_directory or (str(log_directory) if log_directory is not None else None)
    return SLURMCluster(
        cores=s.cores, memory=s.memory, processes=s.processes, walltime=s.walltime,
        queue=s.queue, account=s.account, job_name=s.job_name, interface=s.interface,
        python=s.python, log_directory=logs,
        job_extra_directives=list(s.job_extra_directives),
        job_script_prologue=[
            f"export DASK_LOGGING__DISTRIBUTED={s.worker_log_level}", *dask_env_exports(QUIET_DASK),
            *(f"export {k}={v}" for k, v in worker_environ(plan_workers(settings, 1)[1]).items()),
            *s.job_script_prologue,
        ],
        local_directory=s.local_directory,
        # one product at a time per worker; its share of the job's cores decodes (GDAL threads)
        worker_extra_args=["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]
        + (["--nthreads", "1"] if s.cores > s.processes else []),
        scheduler_options={"dashboard_address": ":8787" if settings.dashboard else ":0"},
    )  # fmt: skip


def dask_env_exports(settings: dict[str, Any]) -> list[str]:
    """Shell lines that give Dask processes started by a job script these config settings."""
    return [
        f"export DASK_{key.upper().replace('.', '__').replace('-', '_')}={value}"
        for key, value in settings.items()
    ]


def _adjust_metadata(config: RunConfig) -> Any:
    flags = config.flags_from_lists
    lists: tuple[frozenset[str] | set[str], frozenset[str] | set[str]] | None = None
    if flags is not None:
        lists = (read_name_list(flags.cloud_or_shadow), read_name_list(flags.snow))
    elif config.reproduce == "bigearthnet-v2":
        lists = (bigearthnet.cloud_or_shadow_names(), bigearthnet.snow_names())
    tile_country = {t.tile_id: t.country for t in specs.tiles().tiles}
    countries = config.countries
    borders = None
    if countries is not None:  # read (and checked) before any product is processed
        candidates = countries.candidates
        if candidates is None and config.reproduce == "bigearthnet-v2":
            candidates = bigearthnet.COUNTRIES
        borders = bigearthnet.read_boundaries(countries.path, countries.field, candidates)

    def adjust(frame: pd.DataFrame) -> pd.DataFrame:
        if lists is not None:
            frame["contains_cloud_or_shadow"] = frame["s2v1_name"].isin(lists[0])
            frame["contains_seasonal_snow"] = frame["s2v1_name"].isin(lists[1])
            frame["flagged"] = frame["contains_cloud_or_shadow"] | frame["contains_seasonal_snow"]
        if countries is not None and len(frame):
            frame["country"] = bigearthnet.closest_country(frame, borders, countries.rule)
        elif len(frame):
            frame["country"] = frame["tile_id"].map(tile_country).astype(object)
            frame.loc[frame["country"].isna(), "country"] = None
        return frame

    return adjust


def run(
    config: RunConfig, fail_fast: bool | None = None, progress: bool = True, force: bool = False
) -> RunResult:
    """Run the chain for ``config``; write the archive, metadata and run report.

    Returns:
        All task results, metadata counts and the report path. Failures are in the result (and the
        report); the caller decides the exit status.

    Raises:
        OutputLockedError: another run is writing into the same output folder.
    """
    with archive.output_lock(config.output, f"ben-builder build {config.name}"):
        with run_log(config.output / "report" / "run.log"):
            return _run(config, config.fail_fast if fail_fast is None else fail_fast, progress,
                        force)  # fmt: skip


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append the project's progress messages (info and above) to ``path`` during a run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    own = logging.getLogger("ben_builder")
    before = own.level
    if own.getEffectiveLevel() > logging.INFO:
        own.setLevel(logging.INFO)
    own.addHandler(handler)
    try:
        yield
    finally:
        own.removeHandler(handler)
        own.setLevel(before)
        handler.close()


def plan_run(config: RunConfig) -> tuple[Any, list[Duplicate], list[TaskResult]]:
    """What ``build`` would do (``build --check``): the preflight plan, nothing written.

    Products are discovered as the run would (a folder is listed; a hub is not searched, a
    synthetic set is not written: their products are only known once the run fetches them).

    Returns:
        The plan, the duplicates left out, and the listed products that are absent.
    """
    from ben_builder.preflight import Plan, check_writable, preflight

    _adjust_metadata(config)  # lists and boundaries readable
    if config.inputs.source != "local":
        check_writable(config.output)
        if config.inputs.clc_path is not None:
            from ben_builder.clc import check_clc

            check_clc(config.inputs.clc_path, specs.clc())
        plan = Plan()
        plan.warnings.append(
            f"source {config.inputs.source!r}: the products are known only once the run fetches "
            "them; checked the output, the CLC file, lists and boundaries"
        )
        return plan, [], []
    products, missing, clc = discover_products(config)
    products, duplicates = select_products(products, config.duplicates)
    return preflight(products, clc, config.output, config.layout), duplicates, missing


def _run(config: RunConfig, fail_fast: bool, progress: bool, force: bool) -> RunResult:
    from dask.distributed import wait
    from tqdm import tqdm

    from ben_builder.report import write_report

    t0 = time.perf_counter()
    out = config.output
    adjust = _adjust_metadata(config)  # reads lists and boundaries: bad ones fail before work
    products, missing, clc = discover_products(config)
    products, duplicates = select_products(products, config.duplicates)
    for d in duplicates:
        log.info("skip %s: %s", d.path.name, d.reason)  # reported by the caller and the report
    from ben_builder.preflight import preflight

    plan = preflight(products, clc, out, config.layout)  # before any work: inputs, output, disk
    options = Options(
        clc_path=clc, layout=config.layout, verify=config.verify, force=force,
        v1_names="bigearthnet" if config.reproduce == "bigearthnet-v2" else "formula",
    )  # fmt: skip
    # the shared inputs' digests once (the CLC hashed once per version of the file)
    options = replace(options, inputs=options.run_inputs(out))
    result = RunResult(results=list(missing), skipped=duplicates, notes=list(plan.warnings))
    workers, threads = plan_workers(config.cluster, len(products))
    if config.cluster.kind == "local":
        log.info("%d local workers, %d decoding threads per product", workers, threads)
    with dask_client(config.cluster, out / "report" / "workers", workers, threads) as client:
        watch = None
        if config.cluster.kind == "slurm":
            from ben_builder.slurm import JobWatch

            s = config.cluster.slurm
            lost = s.max_lost_jobs if s.max_lost_jobs is not None else 2 * s.jobs
            watch = JobWatch(client.cluster, lost)
        products, failed = make_l2a(client, products, config, progress)
        result.results.extend(failed)
        pin = config.cluster.kind == "local" and 1 < workers and workers * threads <= len(_cores())
        futures = {
            client.submit(
                product_task, str(p), str(out), options, True, pin, threads, key=task_key(p),
                pure=False,
            ): p.name
            for p in products
        }  # fmt: skip
        patches = 0
        bar = tqdm(
            total=len(futures), unit="product", desc=config.name, disable=None if progress else True
        )
        finished: set[str] = set()
        stop: tuple[str, str] | None = None
        with bar:
            pending = set(futures)
            while pending and stop is None:
                try:
                    done, pending = wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                for fut in sorted(done, key=lambda f: futures[f]):
                    r = _outcome(fut, futures[fut])
                    finished.add(r.product)
                    result.results.append(r)
                    if r.ok and r.summary:
                        patches += int(r.summary["kept"])
                    bar.update()
                    log.info("%s", _result_line(r))
                    if not r.ok and fail_fast:
                        stop = ("cancelled", "not processed: the run stopped at the first "
                                "failure (--fail-fast)")  # fmt: skip
                jobs = None
                if watch is not None:
                    try:
                        jobs = watch.poll()
                    except ClusterError as exc:
                        log.error("%s", exc)
                        stop = ("cluster", f"not processed: {exc}")
                bar.set_postfix(patches=patches, failed=len(result.failures),
                                **({"jobs": jobs} if jobs else {}))  # fmt: skip
            if stop is not None:
                for f in futures:
                    f.cancel()
        result.results += [
            TaskResult(product=name, ok=False, stage=stop[0], error=stop[1])
            for name in sorted(set(futures.values()) - finished)
            if stop is not None
        ]  # fmt: skip
    result.results.sort(key=lambda r: r.product)
    try:
        result.counts = archive.finalize(out, adjust=adjust, layout=config.layout)
    finally:  # the report is written also when finalisation fails (e.g. a full disk)
        result.seconds = time.perf_counter() - t0
        result.report = write_report(config, result, clc)
    return result


def _outcome(fut: Any, product: str) -> TaskResult:
    """A task's result; a lost worker (memory limit, signal) is a failure of that product only."""
    try:
        r: TaskResult = fut.result()
        return r
    except Exception as exc:  # KilledWorker, CommClosedError, CancelledError, ...
        hint = ""
        if type(exc).__name__ == "KilledWorker":
            hint = (
                " (the worker died while processing it, e.g. killed for exceeding its memory "
                "limit: raise cluster.memory_limit or use fewer workers per machine)"
            )
        return TaskResult(product=product, ok=False, stage="worker",
                          error=f"{type(exc).__name__}: {exc}{hint}",
                          traceback=traceback.format_exc())  # fmt: skip


def _result_line(r: TaskResult) -> str:
    """One line per finished product (for logs of batch jobs)."""
    if not r.ok:
        return f"FAILED {r.product} [{r.stage}]: {r.error}"
    s = r.summary or {}
    state = "already done" if s.get("skipped") else "done"
    seconds = product_seconds(s.get("seconds") or {})
    kept = f"kept {s.get('kept', 0)} of {s.get('candidates', 0)}"
    return f"{state} {r.product}: {kept} ({seconds:.1f} s)"
