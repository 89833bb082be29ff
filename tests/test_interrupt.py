"""Interrupting `cng-assets run` as a user does, through the real command in a child process: Ctrl-C (SIGINT) and
SIGTERM stop it within seconds with nothing published after the signal; kill -9 leaves no tippecanoe behind, and
the rerun sweeps the staging the killed run left and makes the same products as a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cng_assets.storage import LocalStorage
from tests.conftest import REPO, shared

CLI = Path(sys.executable).parent / "cng-assets"


@pytest.fixture(scope="module")
def source() -> Path:
    return shared("coutwildrnp") / "coutwildrnp.shp"


@pytest.fixture(scope="module")
def clean(source, tmp_path_factory):
    """The products of an uninterrupted run, made beside the first test (the machine has a second core)."""
    root = tmp_path_factory.mktemp("clean")
    proc = start(source, root)

    def products() -> Path:
        assert proc.wait(timeout=180) == 0, output(root)
        return root / "out"

    yield products
    proc.kill()
    proc.wait()


@pytest.fixture
def slow_tippecanoe(tmp_path) -> Path:
    """A stand-in tippecanoe that says it started (its pid in a file) and then takes its time, so a signal is sure
    to land while the pmtiles step runs."""
    wrapper = tmp_path / "slow-tippecanoe"
    wrapper.write_text(f"#!{sys.executable}\nimport os, time\n"
                       "open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    wrapper.chmod(0o755)
    return wrapper


def start(source: Path, root: Path, tippecanoe: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(root / "home"), "PIDFILE": str(root / "tippecanoe.pid")}
    env.pop("CNG_TIPPECANOE", None)
    if tippecanoe:
        env["CNG_TIPPECANOE"] = str(tippecanoe)
    root.mkdir(exist_ok=True)
    with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
        return subprocess.Popen([str(CLI), "run", "--source", str(source), "--dataset", "wild", "--out", str(root / "out")],
                                cwd=root, env=env, stdout=out, stderr=err)


def run(source: Path, root: Path) -> str:
    proc = start(source, root)
    assert proc.wait(timeout=180) == 0, output(root)
    return output(root)


def assert_same_products(a: Path, b: Path) -> None:
    files = [sorted(p.relative_to(r) for p in r.rglob("*") if p.is_file()) for r in (a, b)]
    assert files[0] == files[1]
    for rel in files[0]:
        if rel.suffix == ".parquet":  # equal by content: the hex writer's bytes differ between clean runs too
            assert pq.read_table(a / rel).equals(pq.read_table(b / rel)), rel
        elif rel.suffix in (".pmtiles", ".png"):  # the README and STAC hold run ids, times and absolute paths
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def output(root: Path) -> str:
    return (root / "stdout").read_text() + (root / "stderr").read_text()


def tippecanoe_started(root: Path, proc: subprocess.Popen) -> int:
    pidfile = root / "tippecanoe.pid"
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, output(root)
        time.sleep(0.05)
    return int(pidfile.read_text())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended: it only waits for whoever reaps it


def staging_leftovers(root: Path) -> list[Path]:
    return list((root / "out" / ".staging").glob("*"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_at_once_and_publishes_nothing_after_it(source, clean, slow_tippecanoe, tmp_path, signum):
    root = tmp_path / "run"
    proc = start(source, root, slow_tippecanoe)
    tippecanoe = tippecanoe_started(root, proc)
    sent = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait(timeout=10) == 128 + signum  # 130 for SIGINT, 143 for SIGTERM
    stopped_within = time.monotonic() - sent
    text = output(root)
    assert f"interrupted ({signum.name}): 3 steps done, pmtiles[coutwildrnp] stopped, nothing after it ran; rerun the same " \
           "command to continue" in text
    assert "Traceback" not in text and "FAILED" not in text
    assert stopped_within < 5 and not alive(tippecanoe)
    products = root / "out" / "wild"
    assert (products / "coutwildrnp.parquet").exists()  # the steps before the signal
    assert not any(p.exists() for p in (products / "coutwildrnp.pmtiles", products / "README.md", products / "stac",
                                        root / "out" / "catalog.json"))
    assert staging_leftovers(root) == []
    if signum == signal.SIGINT:  # the same command again continues where it stopped
        text = run(source, root)
        assert "7 steps succeeded; 3 already fresh" in text
        assert_same_products(clean(), root / "out")


def test_kill_9_leaves_no_tippecanoe_and_the_rerun_sweeps_and_makes_the_same_products(source, clean, slow_tippecanoe,
                                                                                        tmp_path):
    killed = tmp_path / "killed"
    proc = start(source, killed, slow_tippecanoe)
    tippecanoe = tippecanoe_started(killed, proc)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while alive(tippecanoe):  # the kernel sends it SIGKILL when its parent dies (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, "tippecanoe outlived the killed run"
        time.sleep(0.05)
    [left] = staging_leftovers(killed)  # the pmtiles step's staging, tippecanoe's own temporary folder in it
    assert [p.name.startswith("cng-pmtiles-") for p in left.iterdir()] == [True]

    run(source, killed)
    assert staging_leftovers(killed) == []
    assert_same_products(clean(), killed / "out")


def test_sweep_removes_only_dead_staging_older_than_the_run(tmp_path):
    storage = LocalStorage(root=str(tmp_path))
    dead = tmp_path / ".staging" / "dead"
    (dead / "new").mkdir(parents=True)
    os.utime(dead, (time.time() - 60, time.time() - 60))
    with storage.publish_dir(None, "product") as live:
        old = time.time() - 30
        os.utime(live.parent, (old, old))  # old enough, but its owner lives
        young = tmp_path / ".staging" / "young"
        young.mkdir()  # not locked yet, but made after the run started
        assert storage.sweep_staging(before=time.time() - 10) == 1
        assert not dead.exists() and live.exists() and young.exists()
