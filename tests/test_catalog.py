import os
import subprocess
import sys
from pathlib import Path

import pytest

from cng_assets.catalog import load_catalog, load_dataset_file
from cng_assets.errors import CngInputError

ENTRY = "name: x\ntitle: X\nsource: a.gpkg\nprefix: x\n"


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


@pytest.mark.parametrize("extra, field, says", [
    # each of these loaded before, and failed only when its asset ran (STAC, hours of layers later) or never
    ('datetime: "last spring"', "datetime", "is not an ISO 8601 date or datetime (write it like 2024-01-01"),
    ('datetime: "2019-13-45"', "datetime", "is not an ISO 8601"),
    ('start_datetime: "2020-01-01"', "(entry)", "start_datetime and end_datetime go together"),
    ('start_datetime: "2021-01-01"\nend_datetime: "2020-01-01"', "(entry)", "is after end_datetime"),
    ("providers: [{name: Someone, roles: [owner]}]", "providers.0.roles", "['owner'] are not STAC provider roles"),
    ("pods: {geoparquett: {memory_gib: 8}}", "pods", "['geoparquett'] are not assets"),
    ("pods: {hex: {cpu: two}}", "pods.hex.cpu", "String should match pattern"),
    ("raster: {stats: [mean, median]}", "raster.stats", "each once, among mean, sum"),
    ("bucket: My_Bucket", "bucket", "String should match pattern"),
    ("source_builder: cng_assets.demo:no_such_function", "source_builder", "has no function no_such_function"),
    ("datetim: 2020-01-01", "datetim", "not a catalog field (did you mean datetime?)"),
])
def test_a_bad_entry_fails_at_load_naming_file_dataset_field_and_what_to_do(tmp_path, extra, field, says):
    f = tmp_path / "x.yaml"
    f.write_text(ENTRY + extra + "\n")
    with pytest.raises(CngInputError) as e:
        load_dataset_file(f)
    assert str(e.value).startswith(f"dataset 'x': catalog file {f} is invalid: {field}: "), str(e.value)
    assert says in str(e.value) and str(e.value).endswith("What to do: fix those fields in x.yaml (docs/catalog.md "
                                                          "describes each)")


def test_s3_source_typos_fail_at_load(tmp_path):
    for source, says in (("s3:/bucket/a.gdb", "lacks a slash"), ("s3://bucket", "is not s3://bucket/key")):
        f = tmp_path / "x.yaml"
        f.write_text(ENTRY.replace("a.gpkg", source))
        with pytest.raises(CngInputError, match=f"source: .*{says}"):
            load_dataset_file(f)


def test_times_are_optional_and_an_unquoted_yaml_date_is_read_as_written(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text(ENTRY)
    ds = load_dataset_file(f)
    assert ds.datetime is None and ds.datetime_source is None  # read from the source when STAC is written
    f.write_text(ENTRY + "datetime: 2019-01-01\n")  # YAML makes this a date object
    ds = load_dataset_file(f)
    assert (ds.datetime, ds.datetime_source) == ("2019-01-01", "catalog")


def test_the_cli_and_dagster_say_what_is_wrong_with_an_entry_without_a_traceback_of_ours(tmp_path):
    """The definitions load the catalog on import; a bad entry fails there, before any run, in one sentence."""
    (tmp_path / "x.yaml").write_text(ENTRY + 'datetime: "yesterday"\n')
    env = {**os.environ, "CNG_CATALOG_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "home")}
    done = subprocess.run([str(Path(sys.executable).parent / "cng-assets"), "status"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"error: dataset 'x': catalog file {tmp_path / 'x.yaml'} is invalid: datetime: "
                                  "'yesterday' is not an ISO 8601 date or datetime")
