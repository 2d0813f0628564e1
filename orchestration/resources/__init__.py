"""Dagster resources: MLflow, object store, report ledger (none imports from assets/)."""
