"""The image installs only from requirements.lock, and the lock matches pyproject.toml (no Docker engine here to
build it: these are the parts that can be checked)."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO


def locked() -> dict[str, str]:
    text = (REPO / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)", text, re.MULTILINE))
    return {canonicalize_name(name.split("[")[0]): version for name, version in pins.items()}


def test_every_dependency_is_pinned_in_the_lock_within_its_range():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = locked()
    for dep in deps:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req.specifier}"


def test_every_lock_entry_is_exact_and_hashed():
    text = (REPO / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text)
    entries = [e for e in entries if re.match(r"^[A-Za-z0-9]", e)]
    assert len(entries) > 50
    for e in entries:
        assert "==" in e.splitlines()[0] and "--hash=sha256:" in e, e.splitlines()[0]


def test_dockerfile_installs_only_from_the_lock_and_runs_as_non_root():
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    installs = [line for line in lines if "pip install" in line]
    assert installs, "no pip install in the Dockerfile"
    for line in installs:
        assert ("-r requirements.lock" in line and "--require-hashes" in line and "--no-deps" in line) or \
            re.search(r"pip install --no-deps --no-build-isolation \.( |$)", line), line
    assert any(re.match(r"USER\s+(?!0\b|root\b)\S+", line) for line in lines)
    assert lines[-1].startswith("CMD") and "cng_assets.definitions" in lines[-1]
    assert re.search(r"^FROM python:3\.11", (REPO / "Dockerfile").read_text(), re.MULTILINE)
