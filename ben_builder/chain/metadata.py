"""The metadata rules applied to the combined rows before finalisation: flags, countries, S1.

Read (and checked) when a run starts, before any product is processed, so a bad list or
boundaries file fails at once.
"""

from __future__ import annotations

import pandas as pd

from ben_builder.bigearthnet import Reproduction
from ben_builder.config import CountrySettings, RunConfig
from ben_builder.patches.countries import (
    CountryRule,
    closest_country,
    natural_earth,
    read_boundaries,
)
from ben_builder.sources.local import read_name_list

#: How many patch names a note lists before it only counts.
EXAMPLES = 5


class MetadataRules:
    """The rules applied to the combined rows of an archive before they are written.

    Flags come from the configured name lists, else from the reproduction's published lists,
    else they stay as screening set them. Countries come from the configured boundaries, by
    default the shipped Natural Earth with every country and the ``closest`` rule (a
    reproduction's default: the ten BigEarthNet countries and v2's ``square`` rule). A
    reproduction's ``s1_name`` comes from the published pairs; a patch without one is noted
    (:attr:`notes`), since every published patch has one.

    Raises:
        SpecError: a list, the pairs or the boundaries file cannot be read (at construction,
            before any product is processed).
    """

    def __init__(self, config: RunConfig, rules: Reproduction) -> None:
        flags = config.flags_from_lists
        self.lists: tuple[frozenset[str] | set[str], frozenset[str] | set[str]] | None
        if flags is not None:
            self.lists = (read_name_list(flags.cloud_or_shadow), read_name_list(flags.snow))
        else:
            self.lists = rules.flag_lists()
        self.s1 = rules.s1_pairs()
        countries = config.countries or CountrySettings()  # the shipped Natural Earth by default
        self.rule: CountryRule = countries.rule
        if "rule" not in countries.model_fields_set:
            self.rule = rules.country_rule or self.rule
        candidates = countries.candidates
        if candidates is None:
            candidates = rules.country_candidates
        self.borders = read_boundaries(
            countries.path or natural_earth(), countries.field, candidates
        )
        self.notes: list[str] = []

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the rules applied (its columns are set in place, and it is returned)."""
        if self.lists is not None:
            frame["contains_cloud_or_shadow"] = frame["s2v1_name"].isin(self.lists[0])
            frame["contains_seasonal_snow"] = frame["s2v1_name"].isin(self.lists[1])
            frame["flagged"] = frame["contains_cloud_or_shadow"] | frame["contains_seasonal_snow"]
        if len(frame):
            frame["country"] = closest_country(frame, self.borders, self.rule)
        if self.s1 is not None and len(frame):
            self._pair(frame, self.s1)
        return frame

    def _pair(self, frame: pd.DataFrame, pairs: dict[str, str]) -> None:
        """``s1_name`` from the published pairs; the patches without one are noted."""
        s1 = frame["s2v1_name"].map(pairs)
        frame["s1_name"] = s1.astype(object).where(s1.notna(), None)
        unpaired = frame.loc[s1.isna(), "patch_id"].tolist()
        if unpaired:
            self.notes.append(
                f"{len(unpaired)} patches have no published Sentinel-1 pair, so no s1_name (the "
                f"published v2 has none of them): {', '.join(unpaired[:EXAMPLES])}"
                + (" ..." if len(unpaired) > EXAMPLES else "")
            )


def metadata_rules(config: RunConfig, rules: Reproduction) -> MetadataRules:
    """The metadata rules of ``config`` with ``rules``' defaults (see :class:`MetadataRules`)."""
    return MetadataRules(config, rules)
