"""The chain without Dask: products one after the other in this process (``patch``/``process``).

The same per-product unit as :mod:`ben_builder.chain.run` (:func:`.product.process_product`)
and the same finalisation, without a cluster, a run report or metadata rules; the CLI prints
what it returns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from ben_builder.archive.finalize import finalize, read_parts
from ben_builder.bigearthnet import reproduction
from ben_builder.chain.preflight import check_v1_names
from ben_builder.chain.product import Options, overlap_tiles, process_product, v1_names_for
from ben_builder.errors import BenBuilderError
from ben_builder.files import output_lock
from ben_builder.runtime import decoder_environ
from ben_builder.sources.local import Duplicate, select_products

log = logging.getLogger(__name__)


@dataclass
class SerialResult:
    """What a serial run did: products left out, failures, warnings and metadata counts."""

    skipped: list[Duplicate] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def run_serial(
    products: Sequence[Path],
    out: Path,
    options: Options,
    fail_fast: bool,
    duplicates: str = "latest",
    what: str = "ben-builder patch/process",
    overlap: str = "once",
) -> SerialResult:
    """Process ``products`` one by one into the archive ``out``, then finalise its metadata.

    Raises:
        BenBuilderError: with ``fail_fast``, the first product's failure; the output is locked;
            v1 names would collide.
    """
    with output_lock(out, what):
        os.environ.update(decoder_environ())  # one decoding thread here: as the workers decode
        chosen, dropped = select_products(products, duplicates)
        new = reproduction(None)
        options = replace(
            options,
            overlap_tiles=overlap_tiles(chosen, overlap, new),
            v1_names=v1_names_for(options.layout, new),
        )
        if options.layout in ("v1", "both"):
            check_v1_names(list(chosen))
        result = SerialResult(skipped=dropped)
        with tqdm(total=len(chosen), unit="product", desc="products", disable=None) as bar:
            for path in chosen:
                _one(path, out, options, fail_fast, result)
                bar.update()
        result.counts = finalize(out, read_parts(out), layout=options.layout)
    return result


def _one(path: Path, out: Path, options: Options, fail_fast: bool, result: SerialResult) -> None:
    with tqdm(unit="patch", desc=path.name[:44], leave=False, disable=None) as pbar:
        try:
            s = process_product(path, out, options, on_patch=pbar.update)
        except BenBuilderError as exc:
            if fail_fast:
                raise
            result.failures.append((path, str(exc)))
            log.error("%s", exc)
        else:
            tqdm.write(s.line() + (" (already done)" if s.skipped else ""))
            result.warnings += [f"{path.name}: {w}" for w in s.warnings]
