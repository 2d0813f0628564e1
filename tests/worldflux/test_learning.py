"""The reference families learn real dynamics from the bundled data: the held-out world-model
loss after a few hundred steps is at least 10% below its value before training, for at least
4 of 5 seeds."""

from __future__ import annotations

import pytest

from tests.worldflux.conftest import assert_most_seeds_learn, make_model, train_seeds
from worldflux.data import TrajectoryDataset
from worldflux.training import Trainer, TrainerConfig

SEEDS = range(5)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "dataset"), [("dreamerv3", "cartpole"), ("tdmpc2", "pendulum")])
def test_held_out_loss_drops_for_most_seeds(
    family: str, dataset: str, request: pytest.FixtureRequest
) -> None:
    data: TrajectoryDataset = request.getfixturevalue(dataset)
    config = TrainerConfig(steps=150, batch_size=16, seq_len=16, device="cpu")
    assert_most_seeds_learn(train_seeds(lambda: make_model(family, data), data, config, SEEDS))


def test_an_untrained_model_does_not_pass_by_accident(cartpole: TrajectoryDataset) -> None:
    """The same measurement on a model that is not trained shows no drop, so the test above
    can fail."""
    train, held_out = cartpole.split(0.2, seed=0)
    model = make_model("dreamerv3", cartpole)
    trainer = Trainer(model, train, TrainerConfig(steps=0, device="cpu"), eval_data=held_out)
    before = trainer.evaluate()[model.gate_metric]
    trainer.fit()
    assert trainer.evaluate()[model.gate_metric] == before
