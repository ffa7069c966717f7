import pytest

from ben_builder import specs
from ben_builder.errors import SpecError


def test_specs_load_with_expected_facts():
    b = specs.bands()
    assert [x.name for x in b.bands] == [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B11",
        "B12",
    ]
    assert {x.resolution_m: x.size_px for x in b.bands} == {10: 120, 20: 60, 60: 20}
    clc = specs.clc()
    assert len(clc.classes) == 44
    assert len(clc.v1_names) == 43 and "335" not in clc.v1_names
    nom = specs.nomenclature()
    assert len(nom.classes) == 19
    assert nom.code_to_class["243"] == 6
    mapped = set(nom.code_to_class)
    unmapped = {c.code for c in clc.classes + clc.special} - mapped
    assert unmapped == set("122 123 124 131 132 133 141 142 332 334 335 423 999 990 995".split())


def test_malformed_spec_names_file_and_key(tmp_path):
    bad = tmp_path / "bands.yaml"
    bad.write_text(
        "patch_size_m: 1200\ndtype: uint16\nnodata: 0\nbands:\n"
        "  - {name: B02, resolution_m: 10, size_px: 100, band_index: 1}\n"
    )
    with pytest.raises(SpecError) as err:
        specs.load_spec(specs.BandSpec, "bands.yaml", tmp_path)
    assert str(bad) in str(err.value) and "size_px" in str(err.value)

    bad.write_text("patch_size_m: 1200\ndtype: uint16\nnodata: 0\nbands:\n  - {name: B13}\n")
    with pytest.raises(SpecError) as err:
        specs.load_spec(specs.BandSpec, "bands.yaml", tmp_path)
    assert "bands.0.name" in str(err.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    (tmp_path / "screening.yaml").write_text("a: [1, 2\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        specs.load_spec(specs.ScreeningSpec, "screening.yaml", tmp_path)
    with pytest.raises(SpecError, match="cannot read"):
        specs.load_spec(specs.ScreeningSpec, "nomenclature.yaml", tmp_path)


def test_nomenclature_rejects_code_in_two_classes(tmp_path):
    (tmp_path / "nomenclature.yaml").write_text(
        "max_unlabeled_fraction: 0.25\nclasses:\n"
        "  - {name: A, codes: ['111']}\n  - {name: B, codes: ['111']}\n"
    )
    with pytest.raises(SpecError, match="111"):
        specs.load_spec(specs.Nomenclature, "nomenclature.yaml", tmp_path)
