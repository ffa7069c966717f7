"""The synthetic source: products written as their recipes say."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_synthetic_products_follow_their_recipe(tmp_path, synthetic):
    """A product written for another size (or seed) is replaced, one for the same is kept."""
    from ben_builder.product.safe import open_product
    from ben_builder.sources.synthetic.writer import scene_for, write_product

    recipe = synthetic.find(tile_id="T34VER", level="L1C")
    first = write_product(recipe, scene_for(recipe.tile_id, 1260, 0), tmp_path)
    mtime = first.stat().st_mtime_ns
    assert write_product(recipe, scene_for(recipe.tile_id, 1260, 0), tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # same recipe and scene: kept
    again = write_product(recipe, scene_for(recipe.tile_id, 1320, 0), tmp_path)
    assert again == first and open_product(again).tile.size_m == 13_200
