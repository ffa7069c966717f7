"""The whole chain on Dask: products -> patches -> labels -> screening -> archive -> metadata.

One task per product, keyed by the product's name so keys are deterministic. Tasks get paths and
small frozen records, never open datasets; each sets its own GDAL environment. A failing product
is recorded as data (product, stage, error, traceback) and the others go on; the run report is
written, then the command fails if anything did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ben_builder import archive, specs
from ben_builder.archive.finalize import finalize, prune_products, read_parts
from ben_builder.bigearthnet import Reproduction, reproduction
from ben_builder.chain.cluster import (
    dask_client,
    pin_to_worker_cores,
    plan_workers,
    usable_cores,
    wait_some,
)
from ben_builder.chain.l2a import make_l2a
from ben_builder.chain.metadata import MetadataRules, metadata_rules
from ben_builder.chain.preflight import Plan, check_writable, preflight
from ben_builder.chain.product import (
    Options,
    finished_summary,
    overlap_tiles,
    process_product,
    v1_names_for,
)
from ben_builder.chain.results import (
    RunResult,
    TaskResult,
    cancelled,
    failed,
    outcome,
    result_line,
    unavailable,
)
from ben_builder.chain.s1 import attach_s1
from ben_builder.chain.stages import stage_of
from ben_builder.config import HubInputs, RunConfig
from ben_builder.errors import BenBuilderError, ClusterError
from ben_builder.files import output_lock, write_bytes
from ben_builder.patches.aoi import read_area
from ben_builder.product.names import ProductName, acquisition
from ben_builder.product.verify import checksum
from ben_builder.runtime import StopRequest, gdal_env, stop_on_signals
from ben_builder.sources.inputs import discover_products
from ben_builder.sources.local import Duplicate, select_products

log = logging.getLogger(__name__)

#: Seconds between looks at the cluster (SLURM job states) while tasks run.
POLL_S = 5.0


def product_task(
    path: str,
    out_root: str,
    options: Options,
    with_checksum: bool,
    pin: bool = False,
    threads: int = 1,
) -> TaskResult:
    """Process one product on a worker; never raises, failures come back as data.

    ``threads`` cores for decoding (bands side by side, see :func:`process_product`) change the
    speed, never the pixels.
    """
    name = Path(path).name
    if pin:
        pin_to_worker_cores(threads)
    try:
        with gdal_env(GDAL_NUM_THREADS=threads):
            s = process_product(path, out_root, options, threads=threads)
        digest = _product_digest(Path(path), Path(out_root), s.skipped) if with_checksum else None
        return TaskResult(product=name, ok=True, summary=asdict(s), sha256=digest)
    except Exception as exc:
        return failed(name, stage_of(exc), exc)


def _product_digest(path: Path, out_root: Path, skipped: bool) -> str:
    """The product's SHA-256, hashed once per product (a re-run reads the recorded digest)."""
    stem = ProductName.parse(path.name).stem
    record = archive.part_path(out_root, stem).with_suffix(".sha256")
    if skipped and record.exists():
        return record.read_text().strip()
    digest = checksum(path)
    write_bytes(record, digest.encode())
    return digest


#: Seconds ``build --check --online`` waits for a hub.
PROBE_TIMEOUT_S = 10.0


def _check_hub(hub: HubInputs, online: bool) -> list[str]:
    """The hub's credentials (and, ``online``, the hub itself with them).

    Raises:
        CredentialsError: none are set, or the hub refuses them.
        HubError: the hub cannot be reached (``online``).
    """
    from ben_builder.sources.hub import HubSettings, make_backend

    backend = make_backend(HubSettings(hub.backend, hub.api_url, hub.endpoints))
    if not online:
        return [f"{hub.backend}: credentials found (not tried: --online tries them)"]
    backend.timeout_s = PROBE_TIMEOUT_S  # type: ignore[attr-defined]
    return [backend.probe()]


def task_key(path: Path) -> str:
    """Deterministic Dask key of a product's task."""
    return f"product-{path.name}"


def run(
    config: RunConfig,
    fail_fast: bool | None = None,
    progress: bool = True,
    force: bool = False,
    prune: bool = False,
) -> RunResult:
    """Run the chain for ``config``; write the archive, metadata and run report.

    Returns:
        All task results, metadata counts and the report path. Failures are in the result (and the
        report); the caller decides the exit status.

    Products already in the archive that no input asks for any more are removed (more than
    ``config.prune_max_share`` of them only with ``prune``).

    A first SIGTERM or SIGINT stops the run in order: no new product starts, the running ones
    are cancelled (their files removed), the finished ones are kept, and the metadata and the
    report are written, the unfinished products as ``cancelled``; ``stopped_by`` names the
    signal. A second one ends the process at once.

    Raises:
        OutputLockedError: another run is writing into the same output folder.
        PreflightError: too many products would be removed without ``prune``.
    """
    fail_fast = config.fail_fast if fail_fast is None else fail_fast
    with output_lock(config.output, f"ben-builder build {config.name}"):
        with run_log(config.output / "report" / "run.log"), stop_on_signals() as stop:
            return _run(config, fail_fast, progress, force, prune, stop)


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


def plan_run(
    config: RunConfig, online: bool = False
) -> tuple[Plan, list[Duplicate], list[TaskResult]]:
    """What ``build`` would do (``build --check``): the preflight plan, nothing written.

    Products are discovered as the run would (a folder is listed; a hub is not searched, a
    synthetic set is not written: their products are only known once the run fetches them). A
    hub's credentials must be there; with ``online`` the hub is reached with them, briefly.

    Returns:
        The plan, the duplicates left out, and the listed products that are absent.
    """
    rules = reproduction(config.reproduce)
    metadata_rules(config, rules)  # lists and boundaries readable
    if config.inputs.source != "local":
        check_writable(config.output)
        if config.inputs.clc_path is not None:
            from ben_builder.patches.clc import check_clc

            check_clc(config.inputs.clc_path, specs.clc())
        plan = Plan()
        if config.inputs.hub is not None:
            plan.checked += _check_hub(config.inputs.hub, online)
        plan.warnings.append(
            f"source {config.inputs.source!r}: the products are known only once the run fetches "
            "them; checked the output, the CLC file, lists and boundaries"
        )
        return plan, [], []
    aoi = read_area(config.aoi.bbox, config.aoi.path) if config.aoi is not None else None
    found = discover_products(config.inputs, rules.product_list(), config.select, aoi)
    products, duplicates = select_products(found.products, config.duplicates)
    plan = preflight(
        products, found.clc, config.output, config.layout, rules.v1_names == "bigearthnet"
    )
    return plan, duplicates, [unavailable(m) for m in found.unavailable]


@dataclass(frozen=True)
class _Work:
    """What a run was given to do, found before any product is touched."""

    rules: Reproduction
    adjust: MetadataRules
    products: list[Path]
    clc: Path | None
    options: Options
    s1_v1: Path | None


def _prepare(config: RunConfig, force: bool, result: RunResult) -> _Work:
    """Rules, products and options of a run, checked before any work.

    Lists, boundaries, inputs, output and disk are checked here; the unavailable and duplicate
    products go in ``result``.
    """
    rules = reproduction(config.reproduce)
    adjust = metadata_rules(config, rules)
    aoi = read_area(config.aoi.bbox, config.aoi.path) if config.aoi is not None else None
    found = discover_products(config.inputs, rules.product_list(), config.select, aoi)
    products, duplicates = select_products(found.products, config.duplicates)
    clc = found.clc
    for d in duplicates:
        log.info("skip %s: %s", d.path.name, d.reason)  # reported by the caller and the report
    plan = preflight(products, clc, config.output, config.layout, rules.v1_names == "bigearthnet")
    options = Options(
        clc_path=clc,
        layout=config.layout,
        verify=config.verify,
        force=force,
        v1_names=v1_names_for(config.layout, rules),
        overlap_tiles=overlap_tiles(products, config.overlap, rules),
        aoi_wkt=aoi,
    )
    # the shared inputs' digests once (the CLC hashed once per version of the file)
    options = replace(options, inputs=options.run_inputs(config.output))
    result.results.extend(unavailable(m) for m in found.unavailable)
    result.skipped = duplicates
    result.notes = list(plan.warnings) + list(found.notes)
    s1_v1 = config.s1.bigearthnet_v1 if config.s1 is not None else None
    return _Work(rules, adjust, products, clc, options, s1_v1 or found.s1_v1)


def _run(
    config: RunConfig,
    fail_fast: bool,
    progress: bool,
    force: bool,
    prune: bool,
    stop: StopRequest,
) -> RunResult:
    from ben_builder.chain.report import write_report

    t0 = time.perf_counter()
    out = config.output
    result = RunResult()
    try:
        work = _prepare(config, force, result)
        # before any work: what no input asks for any more goes (too much of it only if asked)
        result.removed = prune_products(
            out, _asked(work.products, result), config.prune_max_share, prune
        )
    except BenBuilderError as exc:  # before any product: the report says why, then the error
        from ben_builder.chain.report import write_stopped_report

        write_stopped_report(config, exc)  # not logged: the CLI prints it, once
        raise
    workers, threads = plan_workers(config.cluster, len(work.products))
    if config.cluster.kind == "local":
        log.info("%d local workers, %d decoding threads per product", workers, threads)
    with dask_client(config.cluster, out / "report" / "workers", workers, threads) as client:
        watch = _job_watch(client, config)
        products, l2a_failures = make_l2a(
            client, work.products, config.sen2cor, work.rules, progress, stop
        )
        result.results.extend(l2a_failures)
        pin = (
            config.cluster.kind == "local"
            and 1 < workers
            and workers * threads <= len(usable_cores())
        )
        todo = products
        if stop.signum is not None:  # stopped before the products: none starts
            _log_stop(stop)
            todo = []
            result.results += [cancelled(p.name, stop) for p in products]
        futures = {
            client.submit(
                product_task,
                str(p),
                str(out),
                work.options,
                True,
                pin,
                threads,
                key=task_key(p),
                pure=False,
            ): p.name
            for p in todo
        }
        _collect(futures, result, watch, fail_fast, config.name, progress, stop)
    if stop.signum is not None:
        result.stopped_by = stop.name
        paths = {p.name: p for p in [*work.products, *products]}
        _settle_cancelled(result, paths, out, work.options)
    result.results.sort(key=lambda r: r.product)
    try:
        frame = work.adjust(read_parts(out))
        result.counts = finalize(out, frame, layout=config.layout)
        result.notes += work.adjust.notes
        if work.s1_v1 is not None:
            result.s1 = attach_s1(out, frame, work.s1_v1)
    except BenBuilderError as exc:  # e.g. a full disk: the report says so, then the error
        result.notes.append(f"finalisation failed: {exc}")
        result.seconds = time.perf_counter() - t0
        try:
            result.report = write_report(config, result, work.clc)
        except Exception as report_exc:  # the error that matters is the finalisation's
            log.error("the run report could not be written either: %s", report_exc)
        raise
    result.seconds = time.perf_counter() - t0
    result.report = write_report(config, result, work.clc)
    return result


def _asked(products: list[Path], result: RunResult) -> Callable[[str], bool]:
    """Whether the run's inputs ask for a product stem of the archive.

    Asked: the products to process and those listed but unavailable now (a failed download
    keeps what an earlier run made of it), and the L2A made of an L1C input (same acquisition).
    """
    stems, l1c = set(), set()
    for name in [p.name for p in products] + [r.product for r in result.results]:
        try:
            parsed = ProductName.parse(name)
        except BenBuilderError:
            stems.add(name)
            continue
        stems.add(parsed.stem)
        if parsed.level == "L1C":
            l1c.add(acquisition(parsed.name))

    def asked(stem: str) -> bool:
        if stem in stems:
            return True
        try:
            return "_MSIL2A_" in stem and acquisition(stem) in l1c
        except BenBuilderError:
            return False

    return asked


def _log_stop(stop: StopRequest) -> None:
    log.warning(
        "%s received: no new product starts, the finished ones are kept and the report is "
        "written (a second signal stops at once)",
        stop.name,
    )


def _settle_cancelled(
    result: RunResult, paths: dict[str, Path], out: Path, options: Options
) -> None:
    """Cancelled products that finished anyway, as done.

    A task already running when the run stops goes on until its worker is stopped, and may
    write its part (its completion mark) in that time. Such a product is in the archive; the
    report says so (its recorded summary). Only products with a part are opened.
    """
    for i, r in enumerate(result.results):
        path = paths.get(r.product)
        if r.stage != "cancelled" or path is None:
            continue
        try:
            stem = ProductName.parse(r.product).stem
        except BenBuilderError:
            continue
        if not archive.part_path(out, stem).with_suffix(".json").exists():
            continue
        with gdal_env():
            done = finished_summary(path, out, options)
        if done is not None:
            result.results[i] = TaskResult(product=r.product, ok=True, summary=asdict(done))


def _job_watch(client: Any, config: RunConfig) -> Any:
    """A watch over the SLURM jobs of ``client``'s cluster (None for other clusters)."""
    if config.cluster.kind != "slurm":
        return None
    from ben_builder.chain.slurm import JobWatch

    s = config.cluster.slurm
    lost = s.max_lost_jobs if s.max_lost_jobs is not None else 2 * s.jobs
    return JobWatch(client.cluster, lost)


def _collect(
    futures: dict[Any, str],
    result: RunResult,
    watch: Any,
    fail_fast: bool,
    name: str,
    progress: bool,
    signals: StopRequest,
) -> None:
    """Gather the product tasks' results into ``result`` as they finish, with a progress bar.

    The run stops early at the first failure (``fail_fast``), when the SLURM jobs are lost
    past their limit, or on a stop signal; the products not finished then are recorded with the
    reason. A worker lost after a stop signal counts as cancelled, not failed: SLURM signals
    every process of a job at walltime, and Ctrl-C the terminal's whole process group.
    """
    from tqdm import tqdm

    patches = 0
    finished: set[str] = set()
    stop: TaskResult | None = None  # what the products not finished are recorded as
    polled = time.monotonic()
    with tqdm(
        total=len(futures), unit="product", desc=name, disable=None if progress else True
    ) as bar:
        pending = set(futures)
        while pending and stop is None:
            done, pending = wait_some(pending)
            for fut in sorted(done, key=lambda f: futures[f]):
                r = outcome(fut, futures[fut])
                if signals.signum is not None and r.stage == "worker":
                    r = cancelled(r.product, signals)
                finished.add(r.product)
                result.results.append(r)
                if r.ok and r.summary:
                    patches += int(r.summary["kept"])
                bar.update()
                log.info("%s", result_line(r))
                if not r.ok and fail_fast:
                    why = "not processed: the run stopped at the first failure (--fail-fast)"
                    stop = TaskResult(product="", ok=False, stage="cancelled", error=why)
            if signals.signum is not None and stop is None:
                _log_stop(signals)
                stop = cancelled("", signals)
            jobs = None
            if watch is not None and time.monotonic() - polled >= POLL_S:
                polled = time.monotonic()
                try:
                    jobs = watch.poll()
                except ClusterError as exc:
                    log.error("%s", exc)
                    why = f"not processed: {exc}"
                    stop = TaskResult(product="", ok=False, stage="cluster", error=why)
            bar.set_postfix(
                patches=patches, failed=len(result.failures), **({"jobs": jobs} if jobs else {})
            )
    if stop is not None:
        for f in futures:
            f.cancel()
        result.results += [
            replace(stop, product=n) for n in sorted(set(futures.values()) - finished)
        ]
