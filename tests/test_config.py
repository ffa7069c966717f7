"""Run configurations: validation errors name the file and key; the shipped ones load."""

from __future__ import annotations

from pathlib import Path

import pytest

from ben_builder.config import load_config
from ben_builder.errors import SpecError

REPO = Path(__file__).resolve().parent.parent


def test_bad_config_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noutput: out\ninputs: {source: local}\ncluster: {kind: moon}\n")
    with pytest.raises(SpecError) as err:
        load_config(bad)
    assert "bad.yaml" in str(err.value) and "cluster.kind" in str(err.value)


def test_shipped_pipelines_are_valid():
    from ben_builder.train.config import load_train_config

    def paths(value: object):
        if isinstance(value, Path):
            yield value
        elif hasattr(type(value), "model_fields"):
            for k in type(value).model_fields:
                yield from paths(getattr(value, k))

    for p in sorted((REPO / "pipelines").glob("*.yaml")):
        cfg = load_train_config(p) if p.name.startswith("train-") else load_config(p)
        assert cfg.output.is_absolute()
        # whatever a shipped configuration takes from the repository is in the repository
        inside = [
            q for q in paths(cfg) if q.is_relative_to(REPO) and not q.is_relative_to(REPO / "demo")
        ]
        assert all(q.exists() for q in inside), (p.name, inside)
        assert "shared/" not in p.read_text(), p.name


def test_the_readme_lists_every_configuration_key_as_the_models_define_them():
    from ben_builder.config import reference_markdown

    readme = (REPO / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    block = readme[readme.index(start) + len(start) : readme.index(end)]
    assert block == reference_markdown(), "regenerate the README block from reference_markdown()"
    for key in ("inputs.synthetic.sensing_time", "countries.rule", "s1.bigearthnet_v1"):
        assert f"`{key}`" in block


def test_a_synthetic_tile_id_is_checked_when_the_configuration_loads(tmp_path):
    """``T30TVKX`` used to pass ``--check`` and crash the build; now the config names it."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\noutput: out\ninputs:\n  source: synthetic\n"
        "  synthetic: {dir: in, tiles: [T30TVKX]}\n"
    )
    with pytest.raises(SpecError) as err:
        load_config(bad)
    assert "bad.yaml" in str(err.value) and "'T30TVKX' is not a Sentinel-2 tile id" in str(
        err.value
    )
    bad.write_text(bad.read_text().replace("T30TVKX", "30tvk"))
    with pytest.raises(SpecError, match="did you mean T30TVK"):
        load_config(bad)
