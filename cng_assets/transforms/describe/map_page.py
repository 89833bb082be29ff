"""The dataset's map.html: every vector layer's PMTiles on a MapLibre GL JS map, one style per geometry type,
a layer list to toggle and a popup of the clicked feature's attributes. Pure: facts in, HTML text out.

The page loads MapLibre and pmtiles from their published npm builds (pinned below; nothing third-party in the
repository) and reads each archive by a path relative to the page, so the folder works wherever it is served
over HTTP with Range requests (a local `http.server` does not do ranges; S3 and most web servers do). No
basemap: the products are the map, and the page needs nothing else from the internet.
"""

from __future__ import annotations

import html
import json

from cng_assets.transforms.facts import DatasetFacts, LayerFacts, union_bbox

MAPLIBRE_VERSION = "5.24.1"  # 6.x ships ES modules only; 5.x still has the build a plain <script> tag loads
PMTILES_VERSION = "4.5.0"
SCRIPTS = {"maplibre-gl": (MAPLIBRE_VERSION, ["dist/maplibre-gl.js", "dist/maplibre-gl.css"]),
           "pmtiles": (PMTILES_VERSION, ["dist/pmtiles.js"])}
CDN = "https://unpkg.com"
COLOURS = ["#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4"]
WEB_MERCATOR_LAT = 85.05  # fitting to ±90° would ask MapLibre for an infinite zoom-out


def cdn_url(package: str, path: str) -> str:
    return f"{CDN}/{package}@{SCRIPTS[package][0]}/{path}"


def _kinds(x: LayerFacts) -> list[str]:
    """MapLibre layer types for the layer's geometry types; all three when the product does not say."""
    types = x.geometry_type or ""
    kinds = [k for k, word in (("fill", "Polygon"), ("line", "LineString"), ("circle", "Point")) if word in types]
    return kinds or ["fill", "line", "circle"]


def map_layers(facts: DatasetFacts) -> list[dict]:
    """What the page shows of each spatial layer (in inventory order); `pmtiles` is relative to the dataset
    folder, where the page is, or None for a layer without tiles (listed, not drawn)."""
    return [{"slug": x.slug, "name": x.name, "geometry": x.geometry_type, "features": x.rows,
             "pmtiles": x.files["pmtiles"].key if "pmtiles" in x.files else None, "kinds": _kinds(x),
             "colour": COLOURS[i % len(COLOURS)]} for i, x in enumerate(facts.layers)]


def map_page(facts: DatasetFacts) -> str | None:
    """The page's HTML, or None when no layer has vector tiles (nothing to draw)."""
    if not facts.has_map():
        return None
    layers = map_layers(facts)
    w, s, e, n = union_bbox([x.bbox[:4] for x in facts.layers if x.bbox and "pmtiles" in x.files])
    clamp = lambda lat: max(-WEB_MERCATOR_LAT, min(WEB_MERCATOR_LAT, lat))  # noqa: E731
    data = {"title": facts.dataset.title, "layers": layers, "bounds": [[w, clamp(s)], [e, clamp(n)]]}
    return (_PAGE.replace("__TITLE__", html.escape(facts.dataset.title))
            .replace("__CSS__", html.escape(cdn_url("maplibre-gl", "dist/maplibre-gl.css")))
            .replace("__MAPLIBRE__", html.escape(cdn_url("maplibre-gl", "dist/maplibre-gl.js")))
            .replace("__PMTILES__", html.escape(cdn_url("pmtiles", "dist/pmtiles.js")))
            .replace("__DATA__", _script_json(data)))


def _script_json(value) -> str:
    """JSON that cannot end the <script> element it sits in, whatever the names hold."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# Names reach the page only as JSON data and the DOM only through textContent, never as markup.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<link rel="stylesheet" href="__CSS__">
<script>window.cngFailed = [];</script>
<script src="__MAPLIBRE__" onerror="cngFailed.push(this.src)"></script>
<script src="__PMTILES__" onerror="cngFailed.push(this.src)"></script>
<style>
  html, body { margin: 0; height: 100%; font: 13px/1.4 system-ui, sans-serif; }
  #map { position: absolute; inset: 0; background: #f4f1ea; }
  #panel { position: absolute; top: 10px; left: 10px; max-width: 280px; max-height: calc(100% - 40px);
           overflow: auto; background: #fffe; padding: 8px 10px; border-radius: 4px; box-shadow: 0 1px 4px #0004; }
  #panel h1 { font-size: 14px; margin: 0 0 6px; }
  #panel label { display: block; white-space: nowrap; }
  #panel .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
  #panel .note, #status { color: #666; }
  #status.failed { color: #a40000; white-space: normal; overflow-wrap: anywhere; margin-top: 6px; }
  .attributes td { padding: 0 6px 0 0; vertical-align: top; }
  .attributes td:first-child { font-weight: 600; }
</style>
</head>
<body>
<div id="map"></div>
<div id="panel"><h1 id="title"></h1><div id="layers"></div><div id="status"></div></div>
<script>
const DATA = __DATA__;
const status = document.getElementById("status");
let map = null;  // none when the map's scripts did not load: the panel still lists the layers and says why

document.getElementById("title").textContent = DATA.title;
const ids = Object.fromEntries(DATA.layers.map(l => [l.slug, []]));
const list = document.getElementById("layers");
for (const layer of DATA.layers) {
  const label = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = !!layer.pmtiles;
  box.disabled = !layer.pmtiles;
  box.dataset.slug = layer.slug;
  box.addEventListener("change", () => {
    for (const id of ids[layer.slug]) map && map.setLayoutProperty(id, "visibility", box.checked ? "visible" : "none");
  });
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = layer.colour;
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = " " + (layer.pmtiles ? layer.features.toLocaleString() + " · " + (layer.geometry || "")
                                          : "no vector tiles");
  label.append(box, swatch, layer.name, note);
  list.append(label);
}

if (typeof maplibregl === "undefined" || typeof pmtiles === "undefined") {
  const urls = cngFailed.join(", ") || "MapLibre GL JS and pmtiles";
  status.className = "failed";
  status.textContent = "The map cannot be drawn: its scripts did not load (" + urls + "). The page needs the " +
    "internet for them; the layers' .pmtiles files beside this page open in any PMTiles viewer.";
} else {
  drawMap();
}

function drawMap() {
  const protocol = new pmtiles.Protocol();
  maplibregl.addProtocol("pmtiles", protocol.tile);
  const GEOMETRY = {fill: ["Polygon", "MultiPolygon"], line: ["LineString", "MultiLineString"],
                    circle: ["Point", "MultiPoint"]};
  const PAINT = {
    fill: c => ({"fill-color": c, "fill-opacity": 0.35}),
    line: c => ({"line-color": c, "line-width": 1.5}),
    circle: c => ({"circle-color": c, "circle-radius": 4, "circle-stroke-color": "#fff", "circle-stroke-width": 1}),
  };
  const sources = {}, styleLayers = [];
  for (const layer of DATA.layers) {
    if (!layer.pmtiles) continue;
    // the archive's URL relative to this page, made absolute for the pmtiles protocol
    sources[layer.slug] = {type: "vector", url: "pmtiles://" + new URL(layer.pmtiles, document.baseURI).href};
    const add = (kind, type, paint, geometry) => {
      const id = layer.slug + ":" + kind;
      ids[layer.slug].push(id);
      styleLayers.push({id, type, source: layer.slug, "source-layer": layer.slug, paint,
                        filter: ["match", ["geometry-type"], geometry, true, false]});
    };
    for (const kind of layer.kinds) {
      add(kind, kind, PAINT[kind](layer.colour), GEOMETRY[kind]);
      if (kind === "fill") add("outline", "line", {"line-color": layer.colour, "line-width": 1}, GEOMETRY.fill);
    }
  }

  map = new maplibregl.Map({
    container: "map", bounds: DATA.bounds, fitBoundsOptions: {padding: 30, maxZoom: 14},
    style: {version: 8, sources, layers: [{id: "background", type: "background", paint: {"background-color": "#f4f1ea"}},
                                          ...styleLayers]},
  });
  map.addControl(new maplibregl.NavigationControl());
  window.cngMap = map;
  map.on("error", e => { status.textContent = String((e.error && e.error.message) || e); });

  const names = Object.fromEntries(DATA.layers.map(l => [l.slug, l.name]));
  const drawn = () => Object.values(ids).flat().filter(id => map.getLayoutProperty(id, "visibility") !== "none");
  map.on("click", e => {
    const p = e.point, near = [[p.x - 4, p.y - 4], [p.x + 4, p.y + 4]];  // a little slack for points and lines
    const feature = map.queryRenderedFeatures(near, {layers: drawn()})[0];
    if (!feature) return;
    const box = document.createElement("div");
    const head = document.createElement("strong");
    head.textContent = names[feature.source] || feature.source;
    const table = document.createElement("table");
    table.className = "attributes";
    for (const [key, value] of Object.entries(feature.properties)) {
      const row = table.insertRow();
      row.insertCell().textContent = key;
      row.insertCell().textContent = String(value);
    }
    box.append(head, table);
    new maplibregl.Popup({maxWidth: "360px"}).setLngLat(e.lngLat).setDOMContent(box).addTo(map);
  });
  map.on("mousemove", e => {
    const p = e.point;
    map.getCanvas().style.cursor = map.queryRenderedFeatures([[p.x - 4, p.y - 4], [p.x + 4, p.y + 4]],
                                                             {layers: drawn()}).length ? "pointer" : "";
  });
}
</script>
</body>
</html>
"""
