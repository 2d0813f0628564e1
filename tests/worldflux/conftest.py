from __future__ import annotations

import pytest
import torch

import worldflux
from worldflux.core.model import WorldModel
from worldflux.data import TrajectoryDataset, load_bundled


@pytest.fixture(scope="session")
def cartpole() -> TrajectoryDataset:
    return load_bundled("cartpole")


@pytest.fixture(scope="session")
def pendulum() -> TrajectoryDataset:
    return load_bundled("pendulum")


def make_model(family: str, data: TrajectoryDataset, **overrides: object) -> WorldModel:
    torch.manual_seed(0)
    return worldflux.create_world_model_for(f"{family}:ci", data.spec, **overrides)
