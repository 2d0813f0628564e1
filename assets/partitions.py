"""Partitions of the lineage. Families come from ``worldflux.list_models()``, each family's data
set from its gate policy; data sets are dynamic partitions: the bundled ones
(``worldflux.data.list_bundled()``) are pre-registered, others are added by
``python -m orchestration dataset add``. A new family or data set needs no code change here."""

from __future__ import annotations

import os

import dagster as dg

import worldflux
from quality.policy import load_policy
from worldflux.data import list_bundled

SEEDS_VARIABLE = "WORLDFLUX_SEEDS"


def seeds_from_env() -> list[int]:
    """Seeds 0..n-1 with n from ``WORLDFLUX_SEEDS`` (default 3: the demo and the nightly)."""
    raw = os.environ.get(SEEDS_VARIABLE, "3")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{SEEDS_VARIABLE} must be a positive number of seeds, got {raw!r}")
    return list(range(int(raw)))


BUNDLED_DATASETS = [entry["name"] for entry in list_bundled()]
FAMILIES = [entry["family"] for entry in worldflux.list_models()]
SEEDS = seeds_from_env()

dataset_partitions = dg.DynamicPartitionsDefinition(name="datasets")
family_partitions = dg.StaticPartitionsDefinition(FAMILIES)
checkpoint_partitions = dg.MultiPartitionsDefinition(
    {"family": family_partitions, "seed": dg.StaticPartitionsDefinition([str(s) for s in SEEDS])}
)


def dataset_of(family: str) -> str:
    return str(load_policy(family).training["dataset"])


def checkpoint_key(family: str, seed: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"family": family, "seed": str(seed)})
