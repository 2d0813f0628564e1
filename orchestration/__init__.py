"""The Dagster code location (definitions, jobs, schedules, sensor), settings from the
environment, resources, and the CLI (``python -m orchestration``)."""
