"""The text check (transforms/verify/text.py): products whose text is the source's pass; mojibake, invalid UTF-8
and a changed value fail, for a table (row order) and a GeoParquet (by _cng_fid, rows ordered by space)."""

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import shapely

from cng_assets.transforms import geoparquet, tables
from cng_assets.transforms.verify.text import check_text

NAMES = ["Zürich", "São Paulo", None, "Ærø"]


def latin1_dbf(folder):
    """A dBase table in Latin-1 without a .cpg (as old exports ship): GDAL must decode it as dBase says."""
    folder.mkdir()
    pyogrio.write_dataframe(pd.DataFrame({"name": NAMES, "code": [1, 2, 3, 4]}), folder / "codes.dbf",
                            driver="ESRI Shapefile", encoding="latin1")
    (folder / "codes.cpg").unlink(missing_ok=True)
    assert "Zürich".encode("latin1") in (folder / "codes.dbf").read_bytes()
    return str(folder / "codes.dbf")


def rewritten(product, out, column, values=None, raw=None):
    """The product with one text column replaced: by other strings, or by raw bytes typed as string."""
    t = pq.read_table(product)
    if raw is not None:
        data = b"".join(raw)
        offsets = pa.array([0, *pa.array([len(b) for b in raw]).to_numpy().cumsum()], pa.int32())
        col = pa.Array.from_buffers(pa.string(), len(raw), [None, offsets.buffers()[1], pa.py_buffer(data)])
    else:
        col = pa.array(values, pa.string())
    pq.write_table(t.set_column(t.schema.get_field_index(column), column, col), out)
    return out


def test_table_text_against_a_latin1_source(tmp_path):
    source = latin1_dbf(tmp_path / "src")
    product = tmp_path / "codes.parquet"
    tables.write_table(source, "codes", product)
    good = check_text(product, source, "codes")
    assert good.passed and good.figures == {"text_columns": 1, "rows_compared": 4, "mismatched_values": 0}, good
    mojibake = check_text(rewritten(product, tmp_path / "m.parquet", "name",
                                    [v and v.encode("utf-8").decode("latin1") for v in NAMES]), source, "codes")
    assert not mojibake.passed and mojibake.figures["mismatched_values"] == 3
    assert "'ZÃ¼rich' where the source has 'Zürich'" in mojibake.problems[0]
    invalid = check_text(rewritten(product, tmp_path / "i.parquet", "name",
                                   raw=[v.encode("latin1") if v else b"" for v in NAMES]), source, "codes")
    assert not invalid.passed and invalid.problems[0].startswith("a reader refuses its text")


def test_geoparquet_text_is_compared_by_fid(tmp_path):
    source = tmp_path / "places.gpkg"
    far = [shapely.box(100 - i * 30, 0, 101 - i * 30, 1) for i in range(4)]  # Hilbert order is not source order
    gpd.GeoDataFrame({"name": NAMES}, geometry=[*far[:2], None, far[3]], crs="EPSG:4326").to_file(source, layer="p")
    product = tmp_path / "p.parquet"
    geoparquet.write_geoparquet(str(source), "p", product, kind="polygon")
    assert pq.read_table(product).column("_cng_fid").to_pylist() != [0, 1, 3]  # reordered, the null one dropped
    assert check_text(product, str(source), "p").passed
    t = pq.read_table(product)
    swapped = [{"Zürich": "São Paulo", "São Paulo": "Zürich"}.get(v, v) for v in t.column("name").to_pylist()]
    bad = check_text(rewritten(product, tmp_path / "s.parquet", "name", swapped), str(source), "p")
    assert not bad.passed and bad.figures["mismatched_values"] == 2
