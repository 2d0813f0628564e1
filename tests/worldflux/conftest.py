from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

import pytest
import torch

import worldflux
from worldflux.core.model import WorldModel
from worldflux.data import TrajectoryDataset, load_bundled
from worldflux.training import Trainer, TrainerConfig


@pytest.fixture(scope="session")
def cartpole() -> TrajectoryDataset:
    return load_bundled("cartpole")


@pytest.fixture(scope="session")
def pendulum() -> TrajectoryDataset:
    return load_bundled("pendulum")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The ci models are tiny: one thread is faster than two contending ones on a shared CPU
    (where two OpenMP threads waiting on each other made a 1,000-step run several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(family: str, data: TrajectoryDataset, **overrides: object) -> WorldModel:
    torch.manual_seed(0)
    return worldflux.create_world_model_for(f"{family}:ci", data.spec, **overrides)


Evaluation = dict[str, float]


def train_seeds(
    build: Callable[[], WorldModel],
    data: TrajectoryDataset,
    config: TrainerConfig,
    seeds: Iterable[int],
) -> list[tuple[Evaluation, Evaluation]]:
    """Per seed: a fresh model from ``build``, trained with ``config`` (its seed replaced) on 80%
    of the episodes; the held-out metrics before and after training."""
    train, held_out = data.split(0.2, seed=0)
    results = []
    for seed in seeds:
        model = build()
        trainer = Trainer(model, train, dataclasses.replace(config, seed=seed), eval_data=held_out)
        before = trainer.evaluate()
        trainer.fit()
        results.append((before, trainer.evaluate()))
    return results


def assert_most_seeds_learn(
    results: list[tuple[Evaluation, Evaluation]], metric: str = "world_model_loss"
) -> None:
    """The release criterion: the held-out metric falls by >= 10% for at least 4 seeds."""
    drops = []
    for before, after in results:
        assert before[metric] > 0
        assert after[metric] >= 0
        drops.append((before[metric] - after[metric]) / before[metric])
    assert sum(d >= 0.10 for d in drops) >= 4, f"held-out drops per seed: {drops}"
