"""Blocking checks run on the staged product: a failure is recorded as a failed check on its partition (what the
UI shows) and the previous product stays in place, unchanged."""

from __future__ import annotations

import dagster as dg
import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from cng_assets.catalog import Dataset
from cng_assets.definitions import definitions_with
from cng_assets.transforms import geoparquet


def holed_square(i):
    """A square with a hole that shares an edge with it (invalid, as GIS exports draw them)."""
    return shapely.Polygon([(i, 0), (i + 1, 0), (i + 1, 1), (i, 1)], [[(i, 0.25), (i + 0.5, 0.25), (i + 0.5, 0.5), (i, 0.5)]])


def loses_a_row(out):  # a writer bug: one feature silently missing from the file
    pq.write_table(pq.read_table(out).slice(1), out)


def fills_a_hole(out):  # a writer bug: one feature's hole (a notch, as repaired) filled, its row and bbox as they were
    t = pq.read_table(out)
    wkb = t.column("geometry").to_pylist()
    wkb[0] = shapely.to_wkb(shapely.MultiPolygon([shapely.box(*shapely.from_wkb(wkb[0]).bounds)]))
    pq.write_table(t.set_column(t.schema.get_field_index("geometry"), "geometry", pa.array(wkb, pa.binary())), out)


def mangles_text(out):  # a writer bug: text decoded with the wrong encoding (UTF-8 bytes read as Latin-1)
    t = pq.read_table(out)
    names = [v.encode("utf-8").decode("latin1") for v in t.column("name").to_pylist()]
    pq.write_table(t.set_column(t.schema.get_field_index("name"), "name", pa.array(names)), out)


@pytest.mark.parametrize("bug, failed, figure", [
    (loses_a_row, ["counts_reconcile", "matches_source"], ("counts_reconcile", "written_rows", 2)),
    (fills_a_hole, ["matches_source"], ("matches_source", "areas_wrong", 1)),
    (mangles_text, ["text_matches_source"], ("text_matches_source", "mismatched_values", 3)),
])
def test_a_failed_blocking_check_is_recorded_and_keeps_the_previous_product(tmp_path, monkeypatch, bug, failed, figure):
    src = tmp_path / "src.gpkg"
    gpd.GeoDataFrame({"name": ["Zürich", "Ærø", "São Paulo"]}, geometry=[holed_square(i) for i in range(3)],
                     crs="EPSG:4326").to_file(src, layer="squares")
    ds = Dataset(name="chk", title="chk", source=str(src), prefix="chk", datetime="2020-01-01")
    data = tmp_path / "data"
    defs = definitions_with(ds, str(data))
    job = defs.resolve_implicit_global_asset_job_def()
    gp_key, product = dg.AssetKey(["chk", "geoparquet"]), data / "chk" / "squares.parquet"
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["chk", "layers"])]).success
        assert job.execute_in_process(instance=instance, asset_selection=[gp_key], partition_key="squares").success
        before = product.read_bytes()

        real = geoparquet.write_geoparquet

        def buggy(source, layer, out, **kw):
            stats = real(source, layer, out, **kw)
            bug(out)
            return stats

        monkeypatch.setattr(geoparquet, "write_geoparquet", buggy)
        result = job.execute_in_process(instance=instance, asset_selection=[gp_key], partition_key="squares",
                                        raise_on_error=False)
        assert not result.success
        assert product.read_bytes() == before  # the previous version is in place, untouched
        assert len(instance.fetch_materializations(gp_key, limit=10).records) == 1  # no materialization claimed
        evaluations = {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
                       if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        assert sorted(evaluations) == ["counts_reconcile", "matches_source", "text_matches_source"]
        assert sorted(n for n, c in evaluations.items() if not c.passed) == failed
        assert {c.partition for c in evaluations.values()} == {"squares"}
        name, key, value = figure
        assert evaluations[name].metadata[key].value == value


def test_a_pmtiles_archive_missing_a_feature_is_refused_and_the_previous_one_kept(tmp_path, monkeypatch):
    from cng_assets.transforms import pmtiles

    src = tmp_path / "src.gpkg"
    gpd.GeoDataFrame({"name": ["a", "b", "c"]}, geometry=[shapely.box(i, 0, i + 1, 1) for i in range(3)],
                     crs="EPSG:4326").to_file(src, layer="squares")
    ds = Dataset(name="chk", title="chk", source=str(src), prefix="chk", datetime="2020-01-01")
    data = tmp_path / "data"
    job = definitions_with(ds, str(data)).resolve_implicit_global_asset_job_def()
    keys = [dg.AssetKey(["chk", a]) for a in ("geoparquet", "pmtiles")]
    archive = data / "chk" / "squares.pmtiles"
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["chk", "layers"])]).success
        assert job.execute_in_process(instance=instance, asset_selection=keys, partition_key="squares").success
        before = archive.read_bytes()
        real = pmtiles.write_pmtiles

        def loses_a_feature(gp, out, **kw):  # a tiling bug: one feature silently missing from every tile
            fewer = tmp_path / "fewer.parquet"
            pq.write_table(pq.read_table(gp).slice(1), fewer)
            return real(fewer, out, **kw)

        monkeypatch.setattr(pmtiles, "write_pmtiles", loses_a_feature)
        result = job.execute_in_process(instance=instance, asset_selection=keys[1:], partition_key="squares",
                                        raise_on_error=False)
        assert not result.success and archive.read_bytes() == before
        (check,) = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert (check.check_name, check.passed) == ("every_feature_at_max_zoom", False)
        assert check.metadata["missing"].value == [pq.read_table(data / "chk" / "squares.parquet").column("_cng_fid")[0].as_py()]
