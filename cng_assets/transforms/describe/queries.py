"""DuckDB example queries built from the real column names and real values of the products."""

from __future__ import annotations

import functools
import math
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import duckdb
import h3

from cng_assets.transforms.describe.common import BBOX, FID, OWN_COLUMNS, Profile
from cng_assets.transforms.facts import DatasetFacts, FileFacts, LayerFacts
from cng_assets.transforms.hex.readers import DUCKDB_HIVE_TYPES
from cng_assets.transforms.layers import DOMAIN_KEY_PREFIX
from cng_assets.transforms.sql import ident, literal


@functools.cache
def _reserved() -> set[str]:
    """DuckDB's reserved words: identifiers that must be quoted in the example queries."""
    with duckdb.connect() as con:
        return {r[0] for r in con.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'").fetchall()}


def _ident(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.lower() not in _reserved():
        return name  # left bare where it can be: the examples read better
    return ident(name)


def _literal(v) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    if isinstance(v, str):
        return literal(v)
    return None


def _read(base: str, key: str) -> str:
    return f"read_parquet({literal(base + key)})"


def _read_hex(base: str, key: str) -> str:
    return f"read_parquet({literal(base + key + '*/*.parquet')}, {DUCKDB_HIVE_TYPES})"


def _type_is_text(t: str) -> bool:
    return t in ("string", "large_string", "utf8", "large_utf8") or t.startswith("dictionary<values=string")


def _domain_join(col: str, col_type: str, alias_t: str, alias_d: str) -> str:
    c = f"{alias_t}.{_ident(col)}"
    if _type_is_text(col_type):
        return f"{alias_d}.code = {c}"
    if re.fullmatch(r"u?int(8|16|32|64)", col_type):
        return f"TRY_CAST({alias_d}.code AS BIGINT) = {c}"
    if col_type in ("double", "float", "halffloat") or col_type.startswith("decimal"):
        return f"TRY_CAST({alias_d}.code AS DOUBLE) = {c}"
    return f"{alias_d}.code = CAST({c} AS VARCHAR)"


def _domain_tables(facts: DatasetFacts) -> dict[str, LayerFacts]:
    """Coded-value domain name -> its table's facts."""
    return {t.name: t for t in facts.tables if t.slug.startswith(DOMAIN_KEY_PREFIX) and "table" in t.files}


def _first(profile: Profile, col: str):
    examples = profile.get(col, ([], None))[0]
    return examples[0] if examples else None


def _filter_column(x: LayerFacts, profile: Profile, domains: dict[str, LayerFacts]) -> str | None:
    """A text or coded column with a value in the reference row: coded first, then documented ones."""
    usable = []
    for i, c in enumerate(x.columns):
        if c.name in OWN_COLUMNS or not (_type_is_text(c.type) or (c.domain in domains)):
            continue
        value = _first(profile, c.name)
        if profile and (_literal(value) is None or (isinstance(value, str) and not value.strip())):
            continue
        usable.append((c.domain not in domains, not c.description, i, c.name))
    return min(usable)[3] if usable else None


def _shown_columns(x: LayerFacts, first: str | None, available: list[str] | None = None, n: int = 3) -> list[str]:
    names = [c.name for c in x.columns if c.name not in OWN_COLUMNS and c.name != first
             and (available is None or c.name in available)]
    documented = [c.name for c in x.columns if c.description and c.name in names]
    chosen = (documented + [c for c in names if c not in documented])[:n]
    return ([first] if first else []) + [c for c in names if c in chosen]


def _window(profile: Profile, layer_bbox: list[float] | None) -> tuple[list[str], bool, Decimal] | None:
    """A lon/lat window around the reference feature's bbox (else the layer's: the bool says which), rounded
    outward in decimal arithmetic so that the rounded literals never cut into the box; a point gets one step
    around it."""
    ref = _first(profile, BBOX)
    if isinstance(ref, dict) and all(isinstance(ref.get(k), (int, float)) for k in ("xmin", "ymin", "xmax", "ymax")):
        b, feature = [ref["xmin"], ref["ymin"], ref["xmax"], ref["ymax"]], True
    elif layer_bbox:
        b, feature = list(layer_bbox[:4]), False
    else:
        return None
    step = Decimal("0.1") if max(b[2] - b[0], b[3] - b[1]) >= 1 else Decimal("0.01")
    lo = [Decimal(repr(float(v))).quantize(step, rounding=ROUND_FLOOR) for v in b[:2]]
    hi = [Decimal(repr(float(v))).quantize(step, rounding=ROUND_CEILING) for v in b[2:]]
    for i in (0, 1):
        if lo[i] == hi[i]:
            lo[i], hi[i] = lo[i] - step, hi[i] + step
    lo = [max(lo[0], Decimal(-180)), max(lo[1], Decimal(-90))]
    hi = [min(hi[0], Decimal(180)), min(hi[1], Decimal(90))]
    return [str(v) for v in (*lo, *hi)], feature, step


def _label(x: LayerFacts, profile: Profile, first: str | None) -> str:
    """The reference feature's text values, e.g. "name 'Chile', continent 'South America'"."""
    names = [c.name for c in x.columns if c.name not in OWN_COLUMNS and _type_is_text(c.type)]
    names = sorted(names, key=lambda n: (n != first, "name" not in n.lower(), names.index(n)))
    parts = [f"{n} {_first(profile, n)!r}" for n in names
             if isinstance(_first(profile, n), str) and _first(profile, n).strip()][:2]
    return ", ".join(parts)


def _area_km2(res: int) -> float:
    return h3.average_hexagon_area(res, unit="km^2")


def example_queries(facts: DatasetFacts, base: str, profiles: dict[str, Profile] | None = None) -> list[tuple[str, str]]:
    """(title, SQL) pairs for DuckDB, reading products from `base` + key (a URL prefix or a folder ending in '/',
    or '' for paths relative to the dataset folder). Literals (attribute values, a window, a feature id, a cell)
    come from `profiles` (profile_products); without them, scalar subqueries pick real values instead."""
    profiles = profiles or {}
    domains = _domain_tables(facts)
    queries: list[tuple[str, str]] = []
    for x in facts.layers:
        gp = x.files.get("geoparquet")
        if gp is None or not x.rows:
            continue
        prof = profiles.get(gp.key, {})
        src = _read(base, gp.key)
        col = _filter_column(x, prof, domains)
        shown = _shown_columns(x, col)
        types = {c.name: c.type for c in x.columns}
        where, notes = [], []
        if col is not None:
            value = _literal(_first(prof, col)) if prof else None
            if value is None:
                value = f"(SELECT {_ident(col)} FROM {src} WHERE {_ident(col)} IS NOT NULL LIMIT 1)"
            where.append(f"{_ident(col)} = {value}")
        window = _window(prof, x.bbox)
        fid = _first(prof, FID)
        label = _label(x, prof, col)
        if window is not None:
            (w0, s0, e0, n0), feature, step = window
            where += [f"bbox.xmin <= {e0} AND bbox.xmax >= {w0}", f"bbox.ymin <= {n0} AND bbox.ymax >= {s0}"]
            if feature and isinstance(fid, int):
                notes.append(f"-- window ({w0}, {s0}) to ({e0}, {n0}): around the bounding box of _cng_fid {fid}"
                             + (f" ({label})" if label else "") + f", rounded outward to {step}°")
            else:
                notes.append(f"-- window ({w0}, {s0}) to ({e0}, {n0}): the layer's bounding box, rounded outward")
            notes.append("-- bbox tests are coarse (boxes, not shapes); row groups whose bbox statistics miss the "
                         "window are skipped")
        about = f"{col} = {_literal(_first(prof, col))}" if col and prof and _literal(_first(prof, col)) else ""
        title = f"{x.name}: features" + (f" with {about}" if about else "") + " in a lon/lat window (`bbox` column)"
        queries.append((title, "\n".join([
            *notes,
            f"SELECT {', '.join(_ident(c) for c in [FID, *shown])}",
            f"FROM {src}",
            *([f"WHERE {where[0]}"] + [f"  AND {w}" for w in where[1:]] if where else []),
            f"ORDER BY {FID}",
            "LIMIT 100",
        ])))
        queries += _domain_queries(x, gp, base, domains, types)
        if x.hex is not None and "hex" in x.files:
            queries += _hex_queries(x, base, profiles, col, fid, prof, domains, types, facts.dataset.h3.attributes)
    queries += _raster_queries(facts, base)
    for t in facts.tables:
        if t.slug.startswith(DOMAIN_KEY_PREFIX) or "table" not in t.files or not t.rows:
            continue
        queries.append((f"{t.name}: the first rows of the table",
                        f"SELECT *\nFROM {_read(base, t.files['table'].key)}\nLIMIT 10"))
        queries += _domain_queries(t, t.files["table"], base, domains, {c.name: c.type for c in t.columns})
    return queries


def _domain_queries(x: LayerFacts, f: FileFacts, base: str, domains: dict[str, LayerFacts],
                    types: dict[str, str]) -> list[tuple[str, str]]:
    coded = [c for c in x.columns if c.domain in domains and domains[c.domain].rows][:3]
    if not coded:
        return []
    select = [f"t.{FID}"] if any(c.name == FID for c in x.columns) else []
    joins = []
    for i, c in enumerate(coded, 1):
        select += [f"t.{_ident(c.name)}", f"d{i}.label AS {_ident(c.name + '_label')}"]
        joins.append(f"LEFT JOIN {_read(base, domains[c.domain].files['table'].key)} AS d{i}\n"
                     f"  ON {_domain_join(c.name, types[c.name], 't', f'd{i}')}")
    names = ", ".join(c.name for c in coded)
    return [(f"{x.name}: labels of the coded columns {names} (FileGDB coded-value domains)",
             "\n".join(["SELECT " + ",\n       ".join(select), f"FROM {_read(base, f.key)} AS t", *joins, "LIMIT 10"]))]


def _hex_queries(x: LayerFacts, base: str, profiles: dict[str, Profile], col: str | None, fid, prof: Profile,
                 domains: dict[str, LayerFacts], types: dict[str, str], setting: str | list[str]) -> list[tuple[str, str]]:
    hx, key = x.hex, x.files["hex"].key
    hprof = profiles.get(key, {})
    src = _read_hex(base, key)
    cell = f"h{hx.resolution}"
    attributes = _hex_attributes(x, hprof, setting)
    area = _area_km2(hx.resolution)
    digits = max(1, math.ceil(-math.log10(area)) + 1)
    out = []
    # cells and area per attribute value (join-free: hex rows carry the attributes)
    group = col if col in attributes else next((c for c in attributes if _type_is_text(types.get(c, ""))), None)
    area_note = (f"-- {area:.6g} km² is the average area of a resolution-{hx.resolution} cell; cells of overlapping "
                 "features count once per group")
    if group is not None:
        column = next(c for c in x.columns if c.name == group)
        if column.domain in domains and domains[column.domain].rows:
            d = domains[column.domain].files["table"].key
            sql = "\n".join([
                area_note,
                f"SELECT h.{_ident(group)}, d.label, count(DISTINCT h.{cell}) AS cells,",
                f"       round(count(DISTINCT h.{cell}) * {area:.6g}, {digits}) AS approx_km2",
                f"FROM {src} AS h",
                f"LEFT JOIN {_read(base, d)} AS d ON {_domain_join(group, types[group], 'h', 'd')}",
                "GROUP BY ALL",
                "ORDER BY cells DESC",
            ])
        else:
            sql = "\n".join([
                area_note,
                f"SELECT {_ident(group)}, count(DISTINCT {cell}) AS cells,",
                f"       round(count(DISTINCT {cell}) * {area:.6g}, {digits}) AS approx_km2",
                f"FROM {src}",
                f"GROUP BY {_ident(group)}",
                "ORDER BY cells DESC",
            ])
        out.append((f"{x.name}: H3 cells and approximate area per {group}", sql))
    else:
        out.append((f"{x.name}: the features with the most H3 cells", "\n".join([
            area_note.split(";")[0],
            f"SELECT {FID}, count(*) AS cells, round(count(*) * {area:.6g}, {digits}) AS approx_km2",
            f"FROM {src}",
            f"GROUP BY {FID}",
            "ORDER BY cells DESC",
            "LIMIT 10",
        ])))
    # the cells of one feature
    if isinstance(fid, int):
        label = _label(x, prof, col)
        note = [f"-- _cng_fid {fid}: {label}"] if label else []
        fid_sql = str(fid)
    else:
        note, fid_sql = [], f"(SELECT min({FID}) FROM {_read(base, x.files['geoparquet'].key)})"
    out.append((f"{x.name}: the H3 cells of one feature", "\n".join([
        *note,
        f"SELECT {', '.join(_ident(c) for c in hx.columns)}",
        f"FROM {src}",
        f"WHERE {FID} = {fid_sql}",
        f"ORDER BY {cell}",
    ])))
    # which features cover a place's cell
    shown = _shown_columns(x, None, attributes)
    value = _first(hprof, cell)
    if isinstance(value, int):
        h0 = h3.str_to_int(h3.cell_to_parent(h3.int_to_str(value), 0))  # the h0= folder (h0 comes from the path)
        lat, lng = h3.cell_to_latlng(h3.int_to_str(value))
        note = [f"-- {value} (H3 {h3.int_to_str(value)}): the resolution-{hx.resolution} cell whose centre is "
                f"{abs(lat):.4f}°{'N' if lat >= 0 else 'S'}, {abs(lng):.4f}°{'E' if lng >= 0 else 'W'}",
                f"-- h0 = {h0}, its resolution-0 parent: DuckDB reads only that h0= folder"]
        where = f"WHERE h0 = {h0} AND {cell} = {value}"
    else:
        note, where = [], f"WHERE {cell} = (SELECT min({cell}) FROM {src})"
    out.append((f"{x.name}: which features cover a place (its resolution-{hx.resolution} cell)", "\n".join([
        *note,
        f"SELECT {', '.join(_ident(c) for c in [FID, *shown])}",
        f"FROM {src}",
        where,
    ])))
    return out


def _hex_attributes(x: LayerFacts, hprof: Profile, setting: str | list[str]) -> list[str]:
    """Attribute columns in the hex files: from their schema when profiled, else from the catalog's setting."""
    if hprof:
        cells = set(x.hex.columns) | {FID} if x.hex else {FID}
        return [c for c in hprof if c not in cells]
    names = [c.name for c in x.columns if c.name not in OWN_COLUMNS]
    return names if setting == "all" else [] if setting == "none" else [c for c in names if c in setting]


# ------------------------------------------------------------------------------------------------------- README



def _raster_queries(facts: DatasetFacts, base: str) -> list[tuple[str, str]]:
    """Raster hex joined to a polygon layer's hex on the finest cell column both have (a raster's cells follow its
    pixel size, usually coarser than a vector layer's): a per-feature summary of the raster."""
    polygons = [x for x in facts.layers if x.hex is not None and "hex" in x.files]
    out = []
    for r in facts.rasters:
        if "hex" not in r.files or not polygons:
            continue
        x = polygons[0]
        shared = [c for c in x.hex.columns if c in r.hex_columns and c != "h0"]  # each finest first
        value = next((c for c in r.hex_columns if c.startswith("b1_") and c != "b1_count"), None)
        if value is None or not shared:
            continue
        cell = max(shared, key=lambda c: int(c[1:]))
        how = "avg" if value.endswith(("_mean", "_sum", "_min", "_max")) else "min"
        out.append((f"{r.name} summarised per {x.name} feature (raster hex joined to vector hex on {cell})", "\n".join([
            f"SELECT v.{FID}, {how}(r.{value}) AS {value}, sum(r.b1_count) AS pixels",
            f"FROM {_read_hex(base, x.files['hex'].key)} AS v",
            f"JOIN {_read_hex(base, r.files['hex'].key)} AS r USING ({cell})",
            f"GROUP BY v.{FID}",
            "ORDER BY pixels DESC",
            "LIMIT 10",
        ])))
    return out
