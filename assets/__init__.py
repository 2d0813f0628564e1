"""Dagster assets and checks of the lineage: dataset -> checkpoint, repeatability_runs ->
gate_report -> released_weights. Asset bodies call quality/ and worldflux/ and record metadata."""
