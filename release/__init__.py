"""The release domain without Dagster: object store, report ledger, lineage records,
gate-report storage, MLflow tracking and registry access, promotion and rollback. Usable from
a script or a test."""
