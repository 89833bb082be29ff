"""Sensor ticks as the daemon evaluates them, for tests that need one tick at a time."""

from __future__ import annotations

import dagster as dg


def tick(defs, instance, name, cursor):
    """One tick as the daemon's code server evaluates it (`evaluate_tick` on a context made from the instance's ref,
    as the code server makes it: the target checks, the run requests
    resolved against the sensor's job), then what the daemon does with the result, in its order: record the
    asset events, add the partitions. Every run request's config is validated against its job."""
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def(name)
    resources = {k: v for k, v in repo.get_top_level_resources().items() if k in sensor.required_resource_keys}
    with dg.SensorEvaluationContext(instance.get_ref(), last_tick_completion_time=None, last_run_key=None, cursor=cursor,
                                    log_key=None, repository_name=repo.name, repository_def=repo, sensor_name=name,
                                    resources=resources, last_sensor_start_time=None, code_location_origin=None) as context:
        data = sensor.evaluate_tick(context)  # as the code server calls it (dagster/_grpc/impl.py)
    for request in data.run_requests or []:
        validate_request(defs, request)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    for request in data.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return data


def validate_request(defs, request: dg.RunRequest) -> None:
    """A backfill names only assets of the graph; a run's config is valid for the job it launches."""
    graph = defs.resolve_asset_graph()
    if request.requires_backfill_daemon():
        assert all(graph.has(k) for k in request.asset_graph_subset.asset_keys)
        return
    job = defs.resolve_job_def(request.job_name) if request.job_name else defs.resolve_implicit_job_def_def_for_assets(
        list(request.asset_selection))
    dg.validate_run_config(job, request.run_config)
