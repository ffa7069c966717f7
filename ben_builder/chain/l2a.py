"""L1C products replaced by their L2A before cutting: one given beside it, or sen2cor's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ben_builder.bigearthnet import Reproduction
from ben_builder.chain.cluster import wait_some
from ben_builder.chain.results import TaskResult, cancelled, failed, outcome
from ben_builder.config import Sen2CorSettings
from ben_builder.errors import UnsupportedProductError
from ben_builder.product.names import ProductName, acquisition
from ben_builder.runtime import StopRequest

log = logging.getLogger(__name__)


def sen2cor_task(path: str, settings: Sen2CorSettings) -> TaskResult:
    """Make one L2A product with sen2cor on a worker; never raises, failures come back as data."""
    from ben_builder.sources.sen2cor import run_sen2cor

    name = Path(path).name
    try:
        made = run_sen2cor(path, settings)
        return TaskResult(product=name, ok=True, summary={"l2a": str(made)})
    except Exception as exc:
        return failed(name, "sen2cor", exc)


def _by_level(products: list[Path]) -> tuple[list[Path], list[Path]]:
    """The products to cut as they are, and the L1C products whose L2A is not among them."""
    level: dict[Path, str | None] = {}
    for p in products:
        try:
            level[p] = ProductName.parse(p.name).level
        except UnsupportedProductError:
            level[p] = None  # not a product name: its task reports it
    l2a = [p for p in products if level[p] != "L1C"]
    have = {acquisition(p.name) for p in l2a if level[p] == "L2A"}
    l1c = [p for p in products if level[p] == "L1C" and acquisition(p.name) not in have]
    return l2a, l1c


def make_l2a(
    client: Any,
    products: list[Path],
    settings: Sen2CorSettings | None,
    rules: Reproduction,
    progress: bool,
    stop: StopRequest | None = None,
) -> tuple[list[Path], list[TaskResult]]:
    """Replace each L1C product by its L2A: one given beside it, one made before, or sen2cor's.

    Without ``sen2cor`` settings, L1C products pass unchanged, except where the reproduction is
    made of L2A products only (BigEarthNet v2): there they are recorded as failures.

    A stop signal (``stop``) cancels the sen2cor runs not finished (stage ``cancelled``).

    Returns:
        The products to cut and the failures (stage ``sen2cor``).
    """
    l2a, l1c = _by_level(products)
    if settings is None:
        if not rules.l2a_only:
            return products, []
        why = (
            "an L1C product: BigEarthNet v2 is made of sen2cor's L2A products; set 'sen2cor' in "
            "the configuration or put the L2A product beside it"
        )
        return sorted(l2a), [
            TaskResult(product=p.name, ok=False, stage="sen2cor", error=why) for p in l1c
        ]
    if not l1c:
        return sorted(l2a), []
    made, failures = _run_sen2cor(client, l1c, settings, progress, stop or StopRequest())
    return sorted(l2a + made), failures


def _run_sen2cor(
    client: Any, l1c: list[Path], settings: Sen2CorSettings, progress: bool, stop: StopRequest
) -> tuple[list[Path], list[TaskResult]]:
    from tqdm import tqdm

    from ben_builder.sources.sen2cor import check_version, find_l2a

    if any(find_l2a(p, settings.output_dir) is None for p in l1c):
        log.info("sen2cor %s", check_version(settings))  # before any work: missing or wrong version
    futures = {
        client.submit(sen2cor_task, str(p), settings, key=f"sen2cor-{p.name}", pure=False): p.name
        for p in l1c
    }
    made: list[Path] = []
    failures: list[TaskResult] = []
    bar = tqdm(
        total=len(futures), unit="product", desc="sen2cor", disable=None if progress else True
    )
    pending = set(futures)
    with bar:
        while pending and stop.signum is None:
            done, pending = wait_some(pending)
            for fut in sorted(done, key=lambda f: futures[f]):
                r = outcome(fut, futures[fut])  # a worker lost to sen2cor fails that product only
                if r.ok and r.summary:
                    made.append(Path(r.summary["l2a"]))
                elif stop.signum is not None:  # sen2cor was signalled with the whole job
                    failures.append(cancelled(r.product, stop))
                else:
                    log.error("%s failed in stage sen2cor: %s", r.product, r.error)
                    failures.append(r)
                bar.update()
    for fut in sorted(pending, key=lambda f: futures[f]):  # left by a stop signal
        fut.cancel()
        failures.append(cancelled(futures[fut], stop))
    return made, failures
