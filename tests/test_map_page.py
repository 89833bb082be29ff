"""map.html in a real browser (Debian's Chromium through Playwright): served from a copy of the product folder
on loopback with Range requests, MapLibre and pmtiles routed to local npm copies (no internet). Every layer
draws features, a polygon's click shows its attributes as text, the layer list lists and toggles the layers."""

from __future__ import annotations

import json
import re
import shutil

from cng_assets.transforms.describe.map_page import cdn_url
from tests.browser import LAYERS, NORTH_FIELD, require_tools, run_script, serve


def test_map_page_draws_every_layer_and_shows_attributes(browser_products, tmp_path):
    require_tools()
    folder = browser_products["folder"]
    page = (folder / "map.html").read_text()
    assert str(folder) not in page and "file://" not in page  # hrefs relative to the page
    assert cdn_url("maplibre-gl", "dist/maplibre-gl.js") in page and cdn_url("pmtiles", "dist/pmtiles.js") in page
    assert "Parcels & <lots>" not in page and "<b>field" not in page  # names only as escaped JSON data
    assert "[map.html](map.html)" in (folder / "README.md").read_text()  # the README links it, relatively
    inventory = json.loads((folder / "inventory.json").read_text())
    slugs = {x["name"]: x["slug"] for x in inventory["layers"]}
    assert set(slugs) == set(LAYERS)

    moved = tmp_path / "served" / "somewhere else"  # the folder works wherever it is served
    shutil.copytree(folder, moved)
    shot = tmp_path / "map.png"
    with serve(tmp_path / "served") as base:
        result = run_script("map_check.cjs", {"url": base + "somewhere%20else/map.html", "slugs": list(slugs.values()),
                                              "click": NORTH_FIELD, "screenshot": str(shot)})
    print(f"screenshot: {shot}")
    assert result["refused"] == [], result["refused"]  # nothing from the internet
    assert not [m for m in result["log"] if m.startswith(("error", "pageerror"))], result["log"]
    assert all(result["counts"][s] > 0 for s in slugs.values()), result["counts"]
    assert [re.split(r"\s", t.strip())[0] for t in result["layerList"]] == ["Parcels", "wells", "roads"]
    assert any(t.startswith("Parcels & <lots>") for t in result["layerList"]), result["layerList"]
    assert result["target"] == "CANVAS"  # the click hit the map, not the panel
    assert "Parcels & <lots>" in result["popupText"] and "North <b>field</b>" in result["popupText"]
    assert "Ada" in result["popupText"] and "<b>" not in result["popupHtml"]  # attributes as text, not markup
    hidden = slugs["Parcels & <lots>"]
    assert result["afterHiding"][hidden] == 0 and all(result["afterHiding"][s] > 0 for s in slugs.values() if s != hidden)


def test_map_page_says_what_failed_when_its_scripts_cannot_load(browser_products, tmp_path):
    """Offline (or the CDN blocked): not a blank box, but the layer list and which scripts did not load."""
    require_tools()
    shot = tmp_path / "map-offline.png"
    with serve(browser_products["data"]) as base:
        result = run_script("map_offline_check.cjs", {"url": base + "fields/map.html", "offline": True,
                                                      "screenshot": str(shot)})
    print(f"screenshot: {shot}")
    scripts = {cdn_url("maplibre-gl", "dist/maplibre-gl.js"), cdn_url("pmtiles", "dist/pmtiles.js")}
    assert set(result["refused"]) >= scripts, result["refused"]
    assert "cannot be drawn" in result["status"] and cdn_url("pmtiles", "dist/pmtiles.js") in result["status"]
    assert [re.split(r"\s", t.strip())[0] for t in result["layerList"]] == ["Parcels", "wells", "roads"]
    assert not [m for m in result["log"] if m.startswith("pageerror")], result["log"]
