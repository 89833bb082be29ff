"""Each product checked against its SOURCE, by a path that shares no code with the one that wrote it: what the
blocking asset checks run on a staged product before it is published. Pure: no Dagster."""
