"""Dagster assets and checks of the lineage (dataset -> checkpoint, repeatability_runs ->
gate_report -> released_weights) and the thin resources they use. Asset bodies call release/,
quality/ and worldflux/ and record metadata."""
