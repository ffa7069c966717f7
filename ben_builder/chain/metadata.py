"""The metadata rules applied to the combined rows before finalisation: flags and countries.

Read (and checked) when a run starts, before any product is processed, so a bad list or
boundaries file fails at once.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ben_builder import bigearthnet, specs
from ben_builder.bigearthnet import Reproduction
from ben_builder.config import CountrySettings, RunConfig
from ben_builder.sources.local import read_name_list

#: A function from the combined metadata rows to the rows finalisation writes.
MetadataRule = Callable[[pd.DataFrame], pd.DataFrame]


def metadata_rules(config: RunConfig, rules: Reproduction) -> MetadataRule:
    """The flag and country rules of ``config`` (with ``rules``' defaults) as one function.

    Flags come from the configured name lists, else from the reproduction's published lists,
    else they stay as screening set them. Countries come from the configured boundaries (the
    reproduction's candidates by default), else from ``data_specs/tiles.yaml`` per tile.

    Raises:
        SpecError: a list or the boundaries file cannot be read.
    """
    flags = config.flags_from_lists
    lists: tuple[frozenset[str] | set[str], frozenset[str] | set[str]] | None
    if flags is not None:
        lists = (read_name_list(flags.cloud_or_shadow), read_name_list(flags.snow))
    else:
        lists = rules.flag_lists()
    tile_country = {t.tile_id: t.country for t in specs.tiles().tiles}
    countries = config.countries
    if countries is None and rules.release is not None:  # v2's countries, from the shipped file
        countries = CountrySettings()
    borders = None
    rule = countries.rule if countries is not None else "closest"
    if countries is not None and "rule" not in countries.model_fields_set:
        rule = rules.country_rule or rule
    if countries is not None:
        candidates = countries.candidates
        if candidates is None:
            candidates = rules.country_candidates
        path = countries.path or bigearthnet.natural_earth()
        borders = bigearthnet.read_boundaries(path, countries.field, candidates)

    def apply(frame: pd.DataFrame) -> pd.DataFrame:
        if lists is not None:
            frame["contains_cloud_or_shadow"] = frame["s2v1_name"].isin(lists[0])
            frame["contains_seasonal_snow"] = frame["s2v1_name"].isin(lists[1])
            frame["flagged"] = frame["contains_cloud_or_shadow"] | frame["contains_seasonal_snow"]
        if countries is not None and len(frame):
            frame["country"] = bigearthnet.closest_country(frame, borders, rule)
        elif len(frame):
            frame["country"] = frame["tile_id"].map(tile_country).astype(object)
            frame.loc[frame["country"].isna(), "country"] = None
        return frame

    return apply
