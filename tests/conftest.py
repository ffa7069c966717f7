from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import rasterio

from ben_builder.sources.synthetic.products import ProductRecipe, demo_recipes
from ben_builder.sources.synthetic.scene import Scene
from ben_builder.sources.synthetic.writer import scene_for, write_dataset

SIZE_PX = 1260  # 10 x 10 patches and a dropped partial row/column


@dataclass(frozen=True)
class Synthetic:
    root: Path
    recipes: list[ProductRecipe]
    products: list[Path]
    clc: Path
    truth: list[Path]

    def path_of(self, recipe: ProductRecipe) -> Path:
        return self.products[self.recipes.index(recipe)]

    def scene(self, recipe: ProductRecipe) -> Scene:
        return scene_for(recipe.tile_id, SIZE_PX, 0)

    def find(self, **kw: object) -> ProductRecipe:
        for r in self.recipes:
            if all(getattr(r, k) == v for k, v in kw.items()):
                return r
        raise LookupError(kw)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    root = tmp_path_factory.mktemp("synthetic")
    recipes = demo_recipes()
    with rasterio.Env():
        written = write_dataset(recipes, root, size_px=SIZE_PX, seed=0)
    return Synthetic(root, recipes, written.products, written.clc, written.truth)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI, a test of real files (``@pytest.mark.real_data``) that skips is a failure.

    The real files ship with the tests; a skip would mean a clone lost them, and CI must not
    pass without the checks against reality.
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and item.get_closest_marker("real_data"):
        report.outcome = "failed"
        report.longrepr = f"a real-data test skipped in CI: {report.longrepr}"
