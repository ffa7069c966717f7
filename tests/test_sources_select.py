"""Picking the clearest acquisitions per tile and period."""

from __future__ import annotations

from ben_builder.sources.select import Candidate, select_clearest


def _name(level: str, when: str, tile: str = "T30TVK") -> str:
    return f"S2A_MSI{level}_{when}_N0509_R051_{tile}_{when}"


def test_one_acquisition_counts_once_and_its_l2a_wins():
    l1c, l2a = _name("L1C", "20210714T105621"), _name("L2A", "20210714T105621")
    other = _name("L2A", "20210724T105621")
    got = select_clearest(
        [Candidate(l1c, 1.0, 1), Candidate(l2a, 1.0, 2), Candidate(other, 0.5, 3)], n=2, per="month"
    )
    assert [c.name for c in got.picked] == [l2a, other]
    assert [(c.name, why) for c, why in got.passed_over] == [
        (l1c, f"the same acquisition as {l2a} (its L2A is taken)")
    ]
    only_l1c = select_clearest([Candidate(l1c, 1.0, 1), Candidate(l2a, 1.0, 2)], 1, "month", "L1C")
    assert [c.name for c in only_l1c.picked] == [l1c]


def test_periods_tiles_and_unknown_cloud_cover():
    c = [
        Candidate(_name("L2A", "20210605T105621"), 20.0, "a"),
        Candidate(_name("L2A", "20210715T105621"), None, "b"),  # unknown: after every known
        Candidate(_name("L2A", "20210725T105621"), 90.0, "c"),
        Candidate(_name("L2A", "20210725T105621", "T30TUK"), 99.0, "d"),  # another tile
        Candidate(_name("L2A", "20201215T105621"), 1.0, "e"),  # December: next year's winter
        Candidate(_name("L2A", "20210115T105621"), 2.0, "f"),
    ]
    month = {x.item for x in select_clearest(c, 1, "month").picked}
    assert month == {"a", "c", "d", "e", "f"}
    season = {x.item for x in select_clearest(c, 1, "season").picked}
    assert season == {"a", "d", "e"}  # JJA: 20 % beats 90 % and unknown; DJF 2021: December's 1 %
    whole = select_clearest(c, 2, "range")
    assert {x.item for x in whole.picked} == {"e", "f", "d"}
    assert len(whole.lines()) == len(c)


def test_a_local_folder_is_picked_by_the_products_own_cloud_cover(tmp_path):
    from datetime import datetime

    import rasterio

    from ben_builder.config import Inputs, SelectSettings
    from ben_builder.sources.inputs import discover_products
    from ben_builder.sources.synthetic.products import ProductRecipe
    from ben_builder.sources.synthetic.writer import write_dataset

    cloudy = ProductRecipe(
        "T30TVK",
        "L2A",
        "05.09",
        datetime(2021, 7, 4, 10, 56, 21),
        relative_orbit=51,
        cloud_fraction=0.4,
    )
    clear = ProductRecipe(
        "T30TVK",
        "L2A",
        "05.09",
        datetime(2021, 7, 14, 10, 56, 21),
        relative_orbit=51,
        cloud_fraction=0.02,
    )
    with rasterio.Env():
        written = write_dataset([cloudy, clear], tmp_path / "in", 600)
    inputs = Inputs(source="local", products_dir=tmp_path / "in" / "products", clc_path=written.clc)
    found = discover_products(inputs, select=SelectSettings(n=1, per="month"))
    assert [p.name for p in found.products] == [f"{clear.name}.SAFE"]
    assert found.notes == (
        f"picked {clear.name} (cloud 2.0 %)",
        f"passed over {cloudy.name}: cloud 40.0 %: T30TVK 2021-07 keeps its 1 clearest",
    )
    assert len(discover_products(inputs).products) == 2  # without select: every product
