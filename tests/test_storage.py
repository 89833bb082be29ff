import signal
import subprocess
import sys

import pytest

from cng_assets.storage import LocalStorage


def product_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".staging" not in p.parts)


def test_publish_moves_into_place_and_replaces(tmp_path):
    storage = LocalStorage(root=str(tmp_path))
    for text in ("one", "two"):
        with storage.publish("bucket", "ds/layer.parquet") as tmp:
            tmp.write_text(text)
            assert not storage.exists("bucket", "ds/layer.parquet") or storage.path("bucket", "ds/layer.parquet").read_text() == "one"
    assert storage.path("bucket", "ds/layer.parquet").read_text() == "two"
    assert product_files(tmp_path) == ["bucket/ds/layer.parquet"]
    assert not any((tmp_path / ".staging").iterdir())


def test_failed_write_leaves_previous_product_untouched(tmp_path):
    storage = LocalStorage(root=str(tmp_path))
    with storage.publish(None, "ds/a.parquet") as tmp:
        tmp.write_text("good")
    with pytest.raises(ValueError), storage.publish(None, "ds/a.parquet") as tmp:
        tmp.write_text("half")
        raise ValueError("boom")
    assert storage.path(None, "ds/a.parquet").read_text() == "good"
    assert product_files(tmp_path) == ["ds/a.parquet"]


def test_process_killed_mid_write_leaves_nothing_visible(tmp_path):
    script = f"""
import os, signal
from cng_assets.storage import LocalStorage
with LocalStorage(root={str(tmp_path)!r}).publish("b", "ds/big.parquet") as tmp:
    tmp.write_bytes(b"x" * 1_000_000)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert product_files(tmp_path) == []
