"""Which products a run takes: the clearest per tile and period, those touching the area.

A hub search for a season finds every acquisition of every tile (often 20 or more per tile,
each ~1 GB). A researcher wants the clearest one (or few) per tile and month, season or whole
range. An acquisition's L1C and L2A count as one: the L2A is taken unless a level is asked for.
Clearest means the lowest cloud cover: the hub's, or a local product's own
``Cloud_Coverage_Assessment``; an acquisition without one comes after every one with one.
Ties go to the earlier sensing time, then the name, so the pick is deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ben_builder.errors import BenBuilderError
from ben_builder.patches.aoi import touches_tile
from ben_builder.patches.tiles import tile_geometry
from ben_builder.product.names import ProductName, acquisition, bare_name

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The meteorological season of each month (December counts to the next year's winter).
SEASONS = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA",
           8: "JJA", 9: "SON", 10: "SON", 11: "SON"}  # fmt: skip


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """A product that may be picked: its name, cloud cover (percent) and what to keep of it."""

    name: str
    cloud: float | None
    item: T


@dataclass(frozen=True)
class Picked(Generic[T]):
    """What the selection kept, and what it passed over with the reason."""

    picked: list[Candidate[T]]
    passed_over: list[tuple[Candidate[T], str]]

    def lines(self) -> list[str]:
        """One line per product, for the report and the log."""
        out = [f"picked {c.name} (cloud {_cloud(c.cloud)})" for c in self.picked]
        out += [f"passed over {c.name}: {why}" for c, why in self.passed_over]
        return out


def _cloud(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} %"


def period_of(name: ProductName, per: str) -> str:
    """The period a product's acquisition falls in: ``2021-07``, ``2021-JJA`` or ``all``."""
    t = name.sensing_time
    if per == "month":
        return f"{t:%Y-%m}"
    if per == "season":
        return f"{t.year + (t.month == 12)}-{SEASONS[t.month]}"
    return "all"


def select_clearest(
    candidates: Sequence[Candidate[T]], n: int, per: str, level: str | None = None
) -> Picked[T]:
    """The ``n`` clearest acquisitions per tile and period (one product each).

    Args:
        candidates: The products found.
        n: Acquisitions kept per tile and period.
        per: ``month``, ``season`` or ``range``.
        level: Keep only this level (``L1C``/``L2A``); None: the L2A of an acquisition with both.
    """
    passed: list[tuple[Candidate[T], str]] = []
    by_acquisition: dict[str, Candidate[T]] = {}
    names: dict[str, ProductName] = {}
    for c in sorted(candidates, key=lambda c: c.name):
        try:
            parsed = ProductName.parse(c.name)
        except BenBuilderError:
            passed.append((c, "not a Sentinel-2 product name"))
            continue
        names[c.name] = parsed
        if level is not None and parsed.level != level:
            passed.append((c, f"level {parsed.level}, {level} asked for"))
            continue
        acq = acquisition(c.name)
        other = by_acquisition.get(acq)
        if other is None:
            by_acquisition[acq] = c
            continue
        keep, drop = (c, other) if parsed.level == "L2A" else (other, c)
        by_acquisition[acq] = keep
        passed.append((drop, f"the same acquisition as {keep.name} (its L2A is taken)"))
    groups: dict[tuple[str, str], list[Candidate[T]]] = {}
    for c in by_acquisition.values():
        key = (names[c.name].tile_id, period_of(names[c.name], per))
        groups.setdefault(key, []).append(c)
    picked: list[Candidate[T]] = []
    for (tile, period), members in sorted(groups.items()):
        members.sort(key=lambda c: (c.cloud is None, c.cloud or 0.0,
                                    names[c.name].sensing_time, c.name))  # fmt: skip
        picked += members[:n]
        for c in members[n:]:
            passed.append((c, f"cloud {_cloud(c.cloud)}: {tile} {period} keeps its {n} clearest"))
    for c, why in passed:
        log.info("passed over %s: %s", c.name, why)
    return Picked(sorted(picked, key=lambda c: c.name), passed)


def in_area(
    items: list[T], name_of: Callable[[T], str], aoi_wkt: str
) -> tuple[list[T], tuple[str, ...]]:
    """The items whose tile touches the area of interest, and a note for each left out."""
    kept, notes = [], []
    for item in items:
        name = name_of(item)
        try:
            tile_id = ProductName.parse(name).tile_id
        except BenBuilderError:
            kept.append(item)  # not a product name: opening it reports that
            continue
        if touches_tile(aoi_wkt, tile_geometry(tile_id)):
            kept.append(item)
        else:
            notes.append(f"left out {bare_name(name)}: tile {tile_id} does not touch the aoi")
    return kept, tuple(notes)
