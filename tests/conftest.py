from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NoReturn

import geopandas as gpd
import pyogrio
import pytest
import shapely

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FIXTURES = Path(pyogrio.__file__).parent / "tests" / "fixtures"


def absent(what: str) -> NoReturn:
    """A shared input or tool is absent: skip, saying why; under CI (CI=true) fail instead, since a green run
    must have tested everything."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI fails rather than skips)", pytrace=False)
    pytest.skip(what)


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        absent(f"sample data {path} is absent (it comes from the shared/ folder beside the repository)")
    return path


def write_gdb(path: Path, frames: dict) -> Path:
    """A FileGDB folder written by GDAL's OpenFileGDB driver, one layer per frame (as the lab's raw uploads are)."""
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Integer64 written as Float64, laundered names
        for name, df in frames.items():
            pyogrio.write_dataframe(df, path, layer=name, driver="OpenFileGDB", append=path.exists())
    return path


@pytest.fixture
def fgdb() -> Path:
    return shared("test_fgdb.gdb.zip")


@pytest.fixture
def bad_gpkg(tmp_path) -> Path:
    """A GeoPackage of awkward layers: invalid rings, null geometries only, no CRS, empty, odd names."""
    path = tmp_path / "awkward.gpkg"
    bowtie = shapely.from_wkt("POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))")
    square = shapely.box(2, 2, 3, 3)
    layers = {
        "invalid rings": gpd.GeoDataFrame({"name": ["bowtie", "square", "sliver"]},
                                          geometry=[bowtie, square, shapely.from_wkt("POLYGON((5 5, 6 5, 6 5, 5 5))")],
                                          crs="EPSG:4326"),
        "only_nulls": gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[None, None], crs="EPSG:4326"),
        "no_crs": gpd.GeoDataFrame({"name": ["a"]}, geometry=[square]),
        "Áreas protegidas": gpd.GeoDataFrame({"name": ["a"]}, geometry=[square], crs="EPSG:4326"),
    }
    for name, frame in layers.items():  # (no_crs warns that it has no CRS: that is the point)
        pyogrio.write_dataframe(frame, path, layer=name, geometry_type="Polygon", append=path.exists())
    empty = gpd.GeoDataFrame({"name": []}, geometry=gpd.GeoSeries([], crs="EPSG:4326"))
    pyogrio.write_dataframe(empty, path, layer="empty layer", geometry_type="MultiPolygon", append=True)
    return path


MIXED = {  # name: geometry, of a GeoJSON layer that mixes geometry types (GDAL: "Unknown")
    "square": shapely.box(0, 0, 1, 1),
    "multi": shapely.MultiPolygon([shapely.box(2, 0, 3, 1)]),
    "spike": shapely.from_wkt("POLYGON((4 0, 5 0, 5 1, 4 1, 4 0, 3.5 -0.5, 4 0))"),  # repair: polygon + line
    "point": shapely.Point(5, 5),
    "line": shapely.LineString([(5, 5), (6, 6)]),
    "collection": shapely.GeometryCollection([shapely.box(7, 0, 8, 1), shapely.LineString([(7, 0), (9, 2)])]),
}


@pytest.fixture
def mixed_geojson(tmp_path) -> Path:
    path = tmp_path / "mixed.geojson"
    frame = gpd.GeoDataFrame({"name": list(MIXED)}, geometry=list(MIXED.values()), crs="EPSG:4326")
    pyogrio.write_dataframe(frame, path, layer="mixed")
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on loopback for the whole session."""
    from tests.servers import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch, request):
    """This test's environment in S3 mode, with a fresh default bucket of its own; returns the bucket name."""
    import re

    bucket = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    for name, value in {**s3_server.env(), "CNG_S3_BUCKET": bucket}.items():
        monkeypatch.setenv(name, value)
    return bucket


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian's, run as `postgres`) for the session; skips, saying why, where it is not
    installed (`make test` installs it). Its folder is outside pytest's: another pytest session starting meanwhile
    makes /tmp/pytest-of-<user> 0700 again, after which the `postgres` user can neither checkpoint nor stop."""
    import shutil
    import tempfile

    from tests.servers import Postgres

    folder = Path(tempfile.mkdtemp(prefix="cng-pg-"))
    try:
        server = Postgres(folder).start()
    except RuntimeError as e:
        shutil.rmtree(folder, ignore_errors=True)
        absent(f"PostgreSQL is not installed here ({e}); `make test` installs it (tests/system-packages.sh)")
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder that `build(folder)` makes once per test session and every xdist worker shares, read-only: the
    first to ask builds it under a lock, the others wait for it."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' common folder
    folder = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"shared-{name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            (root / f"shared-{name}.done").touch()
    return folder


def cli_done(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """`cng-assets ARGS` as a user runs it, on its own instance at `home` (with `env` over the test's own): the
    finished process, whatever its exit code (for inputs it must refuse)."""
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "cng-assets"
    env = {**os.environ, "CNG_STORAGE": "local", **(env or {}), "DAGSTER_HOME": str(home)}
    return subprocess.run([str(cli), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def cli_run(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """`cng-assets ARGS` as a user runs it (see cli_done); its output (fails on a non-zero exit)."""
    done = cli_done(home, *args, env=env, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="session")
def demo_products(tmp_path_factory) -> Path:
    """`cng-assets demo` once for the whole session (the demo dataset's folder): for tests that only read it."""
    folder = built_once(tmp_path_factory, "demo", lambda f: cli_run(f / "home", "demo", "--out", str(f / "data")))
    return folder / "data" / "demo"


@pytest.fixture(scope="session")
def browser_products(tmp_path_factory) -> dict:
    """One small dataset built through the CLI, shared by the map page and the UI browser tests."""
    from tests.browser import build_products, products_in

    return products_in(built_once(tmp_path_factory, "browser", build_products))


# -- scheduling on both cores (`make test` runs `pytest -n auto`) --------------------------------------------------
# Each module is one unit of work, so its module-scoped fixtures are built once. The daemon scenarios (the daemon
# and webserver, or `dg dev`, with code servers and run workers) are two units that start first, one per core: the
# lab's end-to-end stack (PostgreSQL, S3) alone, and the laptop's stacks one after another. Each stack has its own
# instance, ports and buckets, and most of their time is waiting for daemon loops, so the other core's tests fill
# it. Then the longest units first (measured with --durations; the rest in file order: --no-loadscope-reorder),
# so the last to end is a short one.
UNITS = {"test_e2e_daemon": "daemon: lab", "test_embedded_default": "daemon: laptop", "test_ui_browser": "daemon: laptop",
         "test_daemon_stack": "daemon: laptop"}
LONGEST_FIRST = ("daemon: lab", "daemon: laptop", "test_s3_faults", "test_definitions", "test_s3", "test_cli", "test_stac",
                 "test_lineage", "test_hex_readers", "test_interrupt")


def _unit(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return UNITS.get(module, module)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_unit(item.nodeid), len(rank)))  # stable: file order within and after


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):  # xdist's loadgroup marks no longer reach its scheduler under pytest 9.2
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ByUnit(config, log)
