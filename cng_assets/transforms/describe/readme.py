"""The dataset's README.md: free text from the catalog entry and facts read from the products."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import h3

from cng_assets.transforms import layout
from cng_assets.transforms.columns import rename_note
from cng_assets.transforms.describe.common import FID, GEOMETRY, PRODUCTS, SAMPLE_ROWS, Profile
from cng_assets.transforms.describe.queries import _domain_tables, _hex_attributes, example_queries
from cng_assets.transforms.facts import DatasetFacts, FileFacts, LayerFacts
from cng_assets.transforms.hex import readers
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX
from cng_assets.transforms.sql import literal

VERSION = "6"  # bump when the README, thumbnails or map page change (6: hex example cell from the first footer)

def dataset_readme(facts: DatasetFacts, profiles: dict[str, Profile] | None, run_id: str | None) -> str:
    """The dataset's README.md. Free text (title, description, citation, column descriptions) comes from the
    catalog entry; everything else from `facts` and `profiles` (profile_products). Links are the facts' hrefs
    (relative when the facts were gathered with href_base ''), and so are the paths in the example queries."""
    ds, profiles = facts.dataset, profiles or {}
    base = facts.href_base
    domains = _domain_tables(facts)
    md: list[str] = [f"# {ds.title}", ""]
    if ds.description.strip():
        md += [" ".join(ds.description.split()), ""]
    md += _about(facts)
    md += _layers_table(facts, domains, profiles)
    for x in facts.layers:
        md += _layer_section(x, profiles, domains, ds.h3.attributes)
    plain = [t for t in facts.tables if not t.slug.startswith(DOMAIN_KEY_PREFIX)]
    for t in plain:
        md += _table_section(t, profiles, domains)
    if domains:
        md += _domains_section(facts, domains)
    if any(x.hex for x in facts.layers):
        md += _h3_section(facts)
    md += _hex_reading_section(facts)
    md += _queries_section(facts, base, profiles)
    md += _provenance(facts, run_id)
    return "\n".join(md).rstrip() + "\n"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _code(text: str) -> str:
    return "`" + str(text).replace("`", "'") + "`"


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"
    if isinstance(v, dict):
        return "(" + ", ".join(_value(x) for x in v.values()) + ")"
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, bytes):
        return "(binary)"
    text = str(v)
    if not text.strip():
        return repr(text)
    return text if len(text) <= 40 else text[:39] + "…"


def _share(s: float | None) -> str:
    if s is None:
        return "—"
    if s == 0:
        return "0%"
    if s == 1:
        return "100%"
    return "<0.1%" if s < 0.001 else ">99.9%" if s > 0.999 else f"{100 * s:.1f}%"


def _link(f: FileFacts | None, text: str) -> str:
    return "" if f is None else f"[{text}]({f.href}) ({_size(f.size)})"


def _about(facts: DatasetFacts) -> list[str]:
    ds = facts.dataset
    rows = [("Source", _code(ds.source)), ("Licence", ds.license)]
    if ds.citation:
        rows.append(("Citation", " ".join(ds.citation.split())))
    if ds.doi:
        rows.append(("DOI", f"[{ds.doi}](https://doi.org/{ds.doi})"))
    when = ds.datetime or (f"{ds.start_datetime or '…'} to {ds.end_datetime or '…'}"
                           if ds.start_datetime or ds.end_datetime else None)
    if when:
        rows.append(("Time", when + ("" if ds.datetime_source in (None, "catalog") else f" ({ds.datetime_source})")))
    if ds.providers:
        rows.append(("Providers", "; ".join(
            (f"[{p.name}]({p.url})" if p.url else p.name) + (f" ({', '.join(p.roles)})" if p.roles else "")
            for p in ds.providers)))
    if ds.keywords:
        rows.append(("Keywords", ", ".join(ds.keywords)))
    if facts.has_map():
        rows.append(("Map", f"[{layout.MAP}]({facts.href_base}{layout.MAP}): every spatial layer's vector tiles in "
                            "the browser, with each feature's attributes on click (serve this folder over HTTP with Range requests, e.g. `npx http-server`; `python -m http.server` has none)"))
    rows.append(("Catalog entry", f"{_code(ds.name)}: the title, description, licence, citation, providers, "
                                  "keywords and column descriptions here come from it; edit them there and "
                                  "regenerate this file"))
    md = ["| | |", "|---|---|", *[f"| {k} | {_cell(v)} |" for k, v in rows], ""]
    if facts.layers:
        md += ["Spatial layers are GeoParquet 1.1 in EPSG:4326 (lon/lat), 2D, with a `_cng_fid` row id (the "
               "feature's 1-based position in the source layer) and a `bbox` covering column, in Hilbert order.", ""]
    return md


def _geometry(x: LayerFacts, profiles: dict[str, Profile]) -> str:
    gp = x.files.get("geoparquet")
    types = profiles.get(gp.key, {}).get(GEOMETRY, ([], None))[0] if gp else []
    return ", ".join(types) if types else (x.geometry_type or "")


def _features(x: LayerFacts) -> str:
    if x.rows == x.source_features:
        return f"{x.rows:,}"
    return (f"{x.rows:,} (of {x.source_features:,} in the source: {x.source_features - x.rows:,} dropped for null, "
            "empty or unrepairable geometry)")


def _layers_table(facts: DatasetFacts, domains: dict[str, LayerFacts], profiles: dict[str, Profile]) -> list[str]:
    md = ["## Layers", ""]
    if facts.layers:
        md += ["| layer | slug | features | geometry | products |", "|---|---|---|---|---|"]
        for x in facts.layers:
            links = [_link(x.files.get(k), t) for k, t in PRODUCTS]
            md.append(f"| {_cell(x.name)} | {_code(x.slug)} | {_features(x)} | {_cell(_geometry(x, profiles))} | "
                      f"{' · '.join(x for x in links if x)} |")
        md.append("")
    if facts.rasters:
        md += ["Raster layers:", "", "| layer | slug | size | bands | CRS | products |", "|---|---|---|---|---|---|"]
        for r in facts.rasters:
            links = [_link(r.files.get(k), t) for k, t in (("cog", "COG"), ("geozarr", "GeoZarr"), ("hex", "H3 cells"))]
            md.append(f"| {_cell(r.name)} | {_code(r.slug)} | {r.shape[1]:,} × {r.shape[0]:,} | "
                      f"{', '.join(b['data_type'] for b in r.bands)} | {r.crs or ''} | {' · '.join(x for x in links if x)} |")
        md.append("")
    plain = [t for t in facts.tables if not t.slug.startswith(DOMAIN_KEY_PREFIX)]
    if plain:
        md += ["Non-spatial tables:", "", "| table | slug | rows | columns | product |", "|---|---|---|---|---|"]
        for t in plain:
            md.append(f"| {_cell(t.name)} | {_code(t.slug)} | {t.rows:,} | {len(t.columns)} | "
                      f"{_link(t.files.get('table'), 'Parquet')} |")
        md.append("")
    if domains:
        md += [f"{len(domains)} FileGDB coded-value domains are lookup tables (`code`, `label`): see "
               "[Coded-value domains](#coded-value-domains).", ""]
    return md


def _dictionary(x: LayerFacts, profile: Profile, domains: dict[str, LayerFacts]) -> list[str]:
    md = ["| column | type | description | examples | nulls |", "|---|---|---|---|---|"]
    for c in x.columns:
        desc = c.description or ""
        if c.domain:
            d = domains.get(c.domain)
            where = f"[{c.domain}]({d.files['table'].href}), {d.rows:,} codes" if d else _code(c.domain)
            desc = (desc + " " if desc else "") + f"Coded values: domain {where}."
        if c.source_name:
            desc = (desc + " " if desc else "") + rename_note(c.source_name)
        examples, share = profile.get(c.name, ([], None))
        ex = ", ".join(_code(_value(v)) for v in examples)
        md.append(f"| {_code(c.name)} | {_cell(_code(c.type))} | {_cell(desc) or '—'} | {_cell(ex) or '—'} | "
                  f"{_share(share) if profile else '—'} |")
    return md


def _sample_note(rows: int, profile: Profile, spatial: bool) -> str:
    if not profile:
        return "Not profiled: no example values or null shares."
    if rows > SAMPLE_ROWS:
        where = "; the file is in Hilbert order, so they come from one region" if spatial else ""
        return (f"Examples: from the first {SAMPLE_ROWS:,} of {rows:,} rows (a sample{where}). "
                "Nulls: share of all rows, from the Parquet footers.")
    if not rows:
        return "No rows."
    return f"Examples: from all {rows:,} rows. Nulls: share of all rows, from the Parquet footers."


def _layer_section(x: LayerFacts, profiles: dict[str, Profile], domains: dict[str, LayerFacts],
                   setting: str | list[str]) -> list[str]:
    gp = x.files.get("geoparquet")
    prof = profiles.get(gp.key, {}) if gp else {}
    md = [f"## {x.name}", ""]
    if "thumbnail" in x.files:
        md += [f"![Map of {x.name}]({x.files['thumbnail'].href})", ""]
    facts_line = [f"{_code(x.slug)}", f"{_features(x)} feature{'' if x.rows == 1 else 's'}",
                  _geometry(x, profiles) or "no geometry type"]
    if x.bbox:
        w, s, e, n = x.bbox[:4]
        facts_line.append(f"extent {w:.4f}, {s:.4f} to {e:.4f}, {n:.4f} (lon, lat)")
    md += [" · ".join(facts_line), ""]
    md += [f"Products: {' · '.join(_link(x.files[k], t) for k, t in PRODUCTS if k in x.files)}", ""]
    md += _dictionary(x, prof, domains) + ["", _sample_note(x.rows, prof, True), ""]
    if x.hex and "hex" in x.files:
        hx, f = x.hex, x.files["hex"]
        attrs = _hex_attributes(x, profiles.get(f.key, {}), setting)
        md += [f"H3 cells: {_link(f, _code(f.key))}: {hx.rows:,} rows (one per feature and cell) in "
               f"{hx.h0_partitions:,} `h0=` partitions, resolution {hx.resolution}; columns "
               f"{', '.join(_code(c) for c in [FID, *hx.columns])}"
               + (f", then the attributes {', '.join(_code(a) for a in attrs)}." if attrs else
                  "; no attributes (join the GeoParquet on `_cng_fid`)."), ""]
    return md


def _table_section(t: LayerFacts, profiles: dict[str, Profile], domains: dict[str, LayerFacts]) -> list[str]:
    f = t.files.get("table")
    prof = profiles.get(f.key, {}) if f else {}
    return [f"## {t.name} (table)", "", f"{_code(t.slug)} · {t.rows:,} rows · {_link(f, 'Parquet')}", "",
            *_dictionary(t, prof, domains), "", _sample_note(t.rows, prof, False), ""]


def _domains_section(facts: DatasetFacts, domains: dict[str, LayerFacts]) -> list[str]:
    used: dict[str, list[str]] = {}
    for x in [*facts.layers, *facts.tables]:
        for c in x.columns:
            if c.domain:
                used.setdefault(c.domain, []).append(f"{x.slug}.{c.name}")
    md = ["## Coded-value domains", "",
          "FileGDB coded-value domains, each a Parquet table of `code` (text) and `label`. Join a coded column to "
          "`code` (cast the code to the column's type).", "",
          "| domain | codes | used by | product |", "|---|---|---|---|"]
    for name, d in sorted(domains.items(), key=lambda kv: kv[0].lower()):
        md.append(f"| {_cell(name)} | {d.rows:,} | {', '.join(_code(u) for u in used.get(name, [])) or '—'} | "
                  f"{_link(d.files['table'], 'Parquet')} |")
    return md + [""]


def _area(res: int) -> str:
    m2 = h3.average_hexagon_area(res, unit="m^2")
    return f"{m2:,.1f} m² ({m2 / 1e6:,.4f} km²)" if m2 < 1e8 else f"{m2:,.0f} m² ({m2 / 1e6:,.1f} km²)"


def _h3_section(facts: DatasetFacts) -> list[str]:
    s = facts.dataset.h3
    res = [s.resolution, *s.parents]
    if s.containment == "center":
        rule = ("**Containment: centre.** A cell belongs to a feature when the cell's centre is inside the feature "
                "(H3's standard rule, the same cells as h3-py's `polygon_to_cells`). **Small parts:** a polygon part "
                "that contains no cell centre still gets one cell, the cell of a point on its surface, unless that "
                "cell's centre is inside another part of the same feature (which then already has it). So every "
                "feature and every part has at least one cell, and a feature smaller than a cell counts as a whole "
                "cell.")
    else:
        rule = ("**Containment: overlap.** A cell belongs to a feature when the cell's hexagon touches the feature, "
                "so every feature has at least one cell and cell counts overstate areas along the edges.")
    md = ["## H3 grid", "", rule, "",
          f"Each hex row is one (feature, cell) pair: `_cng_fid`, the cell `h{s.resolution}`, its parents "
          f"{', '.join(_code(f'h{p}') for p in s.parents)}, then the layer's attributes chosen by "
          f"the catalog's `h3.attributes` ({_cell(_attributes(s.attributes))}). A cell shared by "
          "overlapping features appears once per feature: count `DISTINCT` cells for areas. Cell ids are H3 "
          "indexes as unsigned 64-bit integers (UBIGINT); `h3.int_to_str` gives the usual hex-string form.", "",
          "Files: `hex/<layer>/h0=<resolution-0 cell>/part-<first cell>.parquet`, sorted by cell inside each "
          "folder; see [Reading the H3 cells](#reading-the-h3-cells).", "",
          "| resolution | column | average cell area | average edge length |", "|---|---|---|---|"]
    for r in res:
        md.append(f"| {r} | `h{r}` | {_area(r)} | {h3.average_hexagon_edge_length(r, unit='m'):,.1f} m |")
    md += ["", "Areas are H3's averages at each resolution (`h3.average_hexagon_area`); real cells vary with "
           "their position on the grid.", ""]
    return md


def _hex_reading_section(facts: DatasetFacts) -> list[str]:
    """Working read recipes for the first hex folder, in every reader users use."""
    folders = [(x.files["hex"].key, x.hex.first_h0) for x in facts.layers if x.hex and "hex" in x.files]
    folders += [(r.files["hex"].key, r.hex_first_h0) for r in facts.rasters if "hex" in r.files and r.hex_first_h0]
    if not folders:
        return []
    key, h0 = folders[0]
    return ["## Reading the H3 cells", "",
            "Each hex folder is hive-partitioned by the resolution-0 cell: `h0=<cell>/part-*.parquet`. " + readers.H0_TYPES
            + " A filter on `h0` reads only that folder. From this folder, in Python:", "",
            "```python", readers.python_recipe(key, h0), "```", "",
            f"In DuckDB's own shell: `SELECT * FROM read_parquet({literal(key + '*/*.parquet')}, {readers.DUCKDB_HIVE_TYPES})`. "
            + readers.DUCKDB_MIN_H0_BUG, ""]


def _queries_section(facts: DatasetFacts, base: str, profiles: dict[str, Profile]) -> list[str]:
    queries = example_queries(facts, base, profiles)
    if not queries:
        return []
    md = ["## Example queries (DuckDB)", ""]
    if base.startswith(("http://", "https://")):
        md += [f"The queries read the products from `{base}`. DuckDB reads single files over HTTPS with range "
               "requests (only the columns and row groups a query needs). It cannot list a folder over plain HTTPS, "
               "so the hex queries (`hex/<layer>/*/*.parquet`) need a local copy of the folder or a path DuckDB "
               "can list, such as an `s3://` path through the host's S3 API.", ""]
    elif not base:
        md += ["Paths are relative to this folder: run DuckDB from here.", ""]
    else:
        md += [f"The queries read the products from `{base}`.", ""]
    if any(x.hex for x in facts.layers):
        res = facts.dataset.h3.resolution
        md += ["To query the cell of another place, compute its id in Python with h3:", "", "```python",
               "import h3",
               f"cell = h3.latlng_to_cell(lat, lng, {res})",
               f"print(h3.str_to_int(cell), h3.str_to_int(h3.cell_to_parent(cell, 0)))  # h{res}, h0",
               "```", ""]
    for title, sql in queries:
        md += [f"### {title}", "", "```sql", sql, "```", ""]
    return md


def _attributes(setting: str | list[str]) -> str:
    return setting if isinstance(setting, str) else ", ".join(setting)


def _provenance(facts: DatasetFacts, run_id: str | None) -> list[str]:
    versions = {**facts.code_versions, "describe": VERSION}
    s = facts.dataset.h3
    return ["## Provenance", "", "| | |", "|---|---|",
            f"| Generated | {facts.created} |",
            f"| Run | {_code(run_id) if run_id else '— (not made in a pipeline run)'} |",
            f"| Code versions | {', '.join(f'{k} {_code(v)}' for k, v in sorted(versions.items()))} |",
            f"| H3 settings | resolution {s.resolution}, parents {', '.join(map(str, s.parents))}, "
            f"{s.containment} containment, attributes {_cell(_attributes(s.attributes))} |",
            f"| Catalog entry | {_code(facts.dataset.name)} |",
            ""]
