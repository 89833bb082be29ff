"""Follow-on work by Dagster's declarative automation, evaluated by the daemon: a layer's consolidated hex once
its chunks are in, the dataset's STAC and README after its products change, the root catalog after any STAC,
the mirror after STAC and docs. No sensor keeps "pending" state for these."""

from __future__ import annotations

import dagster as dg

from cng_assets.defs.environment import sensor_interval

AC = dg.AutomationCondition

# An input updated since this asset was last requested. (Dagster's `since_last_handled` also resets when the asset
# itself updates: an input that finishes in the same tick as this asset's own run would then be lost, leaving it
# stale for good.)
UPDATED = AC.any_deps_updated().since(AC.newly_requested() | AC.initial_evaluation()).with_label("inputs_updated")

# hex and raster_hex: every chunk partition of the layer present (the plan's real ones and the recorded empty
# ones), none in progress, and no chunk's latest run failed (a failed chunk is retried by the failure sensor first).
AFTER_CHUNKS = (UPDATED & ~AC.any_deps_missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()
                & ~AC.any_deps_match(AC.execution_failed())).with_label("after_chunks")

# STAC, README, catalog, mirror: describe what exists, so a layer that failed (its product missing) does not
# hold back the others; wait while anything upstream is still running or part of a running backfill.
AFTER_PRODUCTS = (UPDATED & ~AC.any_deps_in_progress() & ~AC.in_progress()).with_label("after_products")


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "cng_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=sensor_interval(),
        description="hex after its chunks; STAC, README, the root catalog and the mirror after their inputs.")
