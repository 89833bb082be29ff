import pytest

from cng_assets.catalog import load_catalog, load_dataset_file
from cng_assets.errors import CngInputError


def test_shipped_catalog_loads_with_real_datasets():
    catalog = load_catalog()
    assert {"padus_4_1", "cpad_2025b", "demo"} <= set(catalog)
    padus = catalog["padus_4_1"]
    assert padus.source == "s3://public-padus/raw/PADUS4_1Geodatabase.gdb"
    assert (padus.bucket, padus.prefix, padus.doi) == ("public-padus", "padus-4-1", "10.5066/P96WBCHS")
    assert "public domain" in padus.license
    assert (padus.h3.resolution, padus.h3.parents) == (10, [9, 8, 0])
    assert catalog["cpad_2025b"].bucket == "public-cpad"
    assert catalog["cpad_2025b"].source.startswith("s3://public-cpad/2025b/")


def test_defaults_are_the_lab_conventions(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\ntitle: X\nsource: a.gpkg\nprefix: x\n")
    ds = load_dataset_file(f)
    assert (ds.h3.resolution, ds.h3.parents, ds.h3.containment) == (10, [9, 8, 0], "center")
    assert ds.include == ["*"] and ds.exclude == []


@pytest.mark.parametrize("resolution, parents", [(10, [9, 8, 0]), (8, [7, 6, 0]), (2, [1, 0]), (1, [0])])
def test_parents_follow_a_resolution_given_alone(tmp_path, resolution, parents):
    """`--resolution 8` or `h3: {resolution: 8}` alone: the parents are the two above it and 0, not 9, 8, 0."""
    f = tmp_path / "x.yaml"
    f.write_text(f"name: x\ntitle: X\nsource: a.gpkg\nprefix: x\nh3: {{resolution: {resolution}}}\n")
    assert load_dataset_file(f).h3.parents == parents


@pytest.mark.parametrize("body, expected", [
    ("name: x\ntitle: X\nsource: a\nprefix: x\nh3: {resolution: 16}\n", "h3.resolution"),
    ("name: x\ntitle: X\nsource: a\nprefix: x\nh3: {resolution: 8, parents: [9]}\n", "coarser than resolution 8"),
    ("name: x\ntitle: X\nsource: a\nprefix: x\nsource_url: y\n", "source_url"),
    ("name: x\ntitle: X\nsource: a\nprefix: x\nh3: {max_chunks: 201}\n", "h3.max_chunks"),
    ("name: X-1\ntitle: X\nsource: a\nprefix: x\n", "name"),
    ("name: x\ntitle: X\nsource: a\nprefix: x\ndoi: https://doi.org/10.5066/P96WBCHS\n", "is not a DOI"),
    ("name: x\ntitle: X\nprefix: x\n", "source"),
    ("name: x\n  title: [\n", "not valid YAML"),
])
def test_invalid_entries_say_which_field(tmp_path, body, expected):
    f = tmp_path / "x.yaml"
    f.write_text(body)
    with pytest.raises(CngInputError) as e:
        load_dataset_file(f)
    assert expected in str(e.value) and "x.yaml" in str(e.value)


def test_file_name_must_match_dataset_name(tmp_path):
    f = tmp_path / "other.yaml"
    f.write_text("name: x\ntitle: X\nsource: a\nprefix: x\n")
    with pytest.raises(CngInputError, match="name the file x.yaml"):
        load_dataset_file(f)
