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


def test_manifests_switch_to_sha3_with_baseline_03_01_and_either_case_verifies(synthetic, tmp_path):
    """MD5 before 03.01, SHA3-256 from it (real: 02.14 MD5, 04.00 and 05.09 SHA3-256)."""
    import re
    import shutil

    from ben_builder.product.verify import verify_product
    from ben_builder.sources.synthetic.writer import manifest_algorithm

    assert [manifest_algorithm(b) for b in ("02.14", "03.00", "03.01", "04.00", "05.09")] == [
        "MD5",
        "MD5",
        "SHA3-256",
        "SHA3-256",
        "SHA3-256",
    ]
    recipe = synthetic.find(tile_id="T34VER", level="L1C")  # baseline 04.00, a folder
    product = tmp_path / synthetic.path_of(recipe).name
    shutil.copytree(synthetic.path_of(recipe), product)
    manifest = (product / "manifest.safe").read_text()
    assert 'checksumName="SHA3-256"' in manifest and 'checksumName="MD5"' not in manifest
    # hex digits in mixed case, as a real 04.00 product lists them: still verified
    mixed = re.sub(
        r'(checksumName="SHA3-256">)([0-9A-Fa-f]+)',
        lambda m: m[1] + "".join(c.lower() if i % 2 else c.upper() for i, c in enumerate(m[2])),
        manifest,
    )
    (product / "manifest.safe").write_text(mixed)
    assert verify_product(product).algorithms == ("SHA3-256",)


def test_synth_makes_one_datatake_over_any_tiles(tmp_path):
    """Two Spanish tiles of one overpass: same sensing time and orbit, real corners, one CLC."""
    from click.testing import CliRunner

    from ben_builder.cli import main
    from ben_builder.patches import clc
    from ben_builder.patches.tiles import tile_geometry
    from ben_builder.product.safe import open_product
    from ben_builder.specs import clc as clc_spec

    args = [
        "synth",
        "--out",
        str(tmp_path),
        "--tile",
        "T30TVK",
        "--tile",
        "T30TUK",
        "--level",
        "L2A",
        "--sensing-time",
        "2021-07-14T10:56:21",
        "--size-px",
        "600",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "2 products" in res.output
    products = sorted(p for p in (tmp_path / "products").iterdir() if p.name.endswith(".SAFE"))
    assert len(products) == 2
    opened = [open_product(p) for p in products]
    assert {p.name.tile_id for p in opened} == {"T30TUK", "T30TVK"}
    assert len({(p.name.sensing_time, p.name.relative_orbit, p.level) for p in opened}) == 1
    for p in opened:
        real = tile_geometry(p.name.tile_id)
        assert (p.tile.epsg, p.tile.ulx_m, p.tile.uly_m) == (real.epsg, real.ulx_m, real.uly_m)
        polygons = clc.read_clc(tmp_path / "clc" / clc_spec().source.file, p.tile, clc_spec())
        assert len(polygons) > 0  # the CLC covers every tile
    bad = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "x"), "--tile", "30TVK"])
    assert bad.exit_code == 2 and "did you mean T30TVK" in bad.output
