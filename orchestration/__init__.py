"""Dagster wiring: the code location (definitions, jobs, schedules, sensors), settings from the
environment, and the CLI (``python -m orchestration``). No release logic lives here."""
