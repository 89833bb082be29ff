"""The Dagster UI in a real browser: `dg dev` (what `make ui` runs) on the instance and products of a small
catalog dataset, and the geoparquet asset's Overview, whose Columns section (the latest materialization's
`dagster/column_schema`) shows the catalog's column description."""

from __future__ import annotations

import pytest

from tests.browser import require_tools, run_script
from tests.daemon_stack import DaemonStack

pytestmark = pytest.mark.timeout(600)  # a daemon scenario: sensors, backfill loops of 30 s, runs


def test_columns_section_shows_the_catalog_description(browser_products, tmp_path):
    require_tools()
    shot = tmp_path / "ui-columns.png"
    with DaemonStack(browser_products["home"], env=browser_products["env"], dg_dev=True) as stack:
        result = run_script("ui_columns_check.cjs", {
            "url": f"{stack.url}/assets/demo/geoparquet", "text": "Country name", "screenshot": str(shot),
            "viewport": {"width": 1600, "height": 1000}})
    print(f"screenshot: {shot}")
    assert result["visible"], result
    assert result["rowText"].split()[:2] == ["name", "string"], result["rowText"]
