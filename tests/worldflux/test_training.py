from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

import pytest
import torch

import worldflux
from tests.worldflux.conftest import make_model
from worldflux import ConfigError, TrainingDivergedError
from worldflux.data import TrajectoryDataset
from worldflux.training import History, Trainer, TrainerConfig, latest_checkpoint

CONFIG = TrainerConfig(steps=12, batch_size=4, seq_len=8, eval_batches=2, device="cpu")


def _trainer(family: str, data: TrajectoryDataset, config: TrainerConfig) -> Trainer:
    return Trainer(make_model(family, data), data, config)


@pytest.mark.parametrize(
    ("family", "dataset", "schedule"),
    [("dreamerv3", "cartpole", "constant"), ("tdmpc2", "pendulum", "cosine")],
)
def test_resume_equals_uninterrupted_training(
    family: str, dataset: str, schedule: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    data: TrajectoryDataset = request.getfixturevalue(dataset)
    config = dataclasses.replace(CONFIG, lr_schedule=schedule)
    straight = _trainer(family, data, config)
    straight.fit()

    first = _trainer(family, data, config)
    for _ in range(5):  # interrupted after 5 of the 12 steps
        first.train_step()
    path = first.save_checkpoint(tmp_path / "ckpt")
    # The interrupted process is gone; a new one builds a fresh model and resumes.
    torch.manual_seed(1234)
    resumed = _trainer(family, data, config)
    assert resumed.resume(path)
    assert resumed.step == 5
    resumed.fit()
    assert resumed.step == 12
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_periodic_checkpoints_keep_the_newest(cartpole: TrajectoryDataset, tmp_path: Path) -> None:
    config = TrainerConfig(
        steps=9,
        batch_size=2,
        seq_len=4,
        eval_batches=1,
        device="cpu",
        checkpoint_every=3,
        checkpoint_dir=str(tmp_path),
        keep_checkpoints=2,
    )
    trainer = _trainer("dreamerv3", cartpole, config)
    trainer.fit()
    kept = sorted(p.name for p in tmp_path.glob("step_*"))
    assert kept == ["step_00000006", "step_00000009"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000009"
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 9
    assert not list(tmp_path.glob(".tmp-*"))
    again = _trainer("dreamerv3", cartpole, config)
    assert again.resume()
    assert again.step == 9


def test_corrupted_optimizer_state_is_refused(cartpole: TrajectoryDataset, tmp_path: Path) -> None:
    trainer = _trainer("dreamerv3", cartpole, CONFIG)
    path = trainer.save_checkpoint(tmp_path)
    (path / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(Exception, match=r"optimizer\.safetensors"):
        _trainer("dreamerv3", cartpole, CONFIG).resume(path)


def test_nan_loss_raises_a_typed_error_with_step_and_component(
    pendulum: TrajectoryDataset,
) -> None:
    trainer = _trainer("dreamerv3", pendulum, CONFIG)
    trainer.fit()
    with torch.no_grad():
        trainer.model.decoder[-1].bias.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError) as info:
        trainer.train_step()
    assert info.value.step == 13
    assert info.value.component == "reconstruction"


def test_nan_gradient_names_the_parameter(pendulum: TrajectoryDataset) -> None:
    trainer = _trainer("tdmpc2", pendulum, CONFIG)

    def poison(grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")

    trainer.model.reward_head[0].weight.register_hook(poison)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.train_step()
    assert info.value.kind == "gradient"
    assert info.value.component.startswith("reward_head")


def test_evaluation_is_deterministic_and_consumes_no_rng(cartpole: TrajectoryDataset) -> None:
    trainer = _trainer("dreamerv3", cartpole, CONFIG)
    state = torch.get_rng_state()
    first = trainer.evaluate()
    assert torch.equal(state, torch.get_rng_state())
    assert trainer.evaluate() == first


def test_history_records_every_step(cartpole: TrajectoryDataset) -> None:
    history = History()
    config = CONFIG.__class__(**{**CONFIG.__dict__, "eval_every": 4})
    trainer = Trainer(make_model("dreamerv3", cartpole), cartpole, config, callbacks=[history])
    result = trainer.fit()
    assert history.steps == list(range(1, 13))
    assert len(history.metrics["loss"]) == 12
    assert [step for step, _ in history.evaluations] == [4, 8, 12]
    assert result.samples_per_second > 0
    assert result.sample_seconds < result.train_seconds


def test_trainer_fits_observation_statistics_once(
    cartpole: TrajectoryDataset, pendulum: TrajectoryDataset
) -> None:
    """DreamerV3 standardizes observations with training statistics (the pole angle would
    otherwise weigh ~60x less than the cart position); a fitted model keeps its statistics when
    trained further on other data, so its inputs keep their meaning."""
    train, _ = cartpole.split(0.2, seed=0)
    model = make_model("dreamerv3", cartpole)
    assert int(model.obs_scaler.rows) == 0
    Trainer(model, train, CONFIG)
    observations = torch.from_numpy(train.observations()).double()
    assert int(model.obs_scaler.rows) == len(train)
    assert torch.allclose(model.obs_scaler.loc.double(), observations.mean(0), atol=1e-6)
    expected = observations.std(0, unbiased=False)
    assert torch.allclose(model.obs_scaler.scale.double(), expected, rtol=1e-5)
    assert float(model.obs_scaler.scale[2]) < 0.2 * float(model.obs_scaler.scale[0])  # theta

    fitted = model.obs_scaler.loc.clone(), model.obs_scaler.scale.clone()
    other = cartpole.split(0.5, seed=3)[1]
    Trainer(model, other, CONFIG)
    assert torch.equal(model.obs_scaler.loc, fitted[0])
    assert torch.equal(model.obs_scaler.scale, fitted[1])

    # A family without a scaler is left alone and asks for no statistics.
    tdmpc2 = make_model("tdmpc2", pendulum)
    assert tdmpc2.fit_observation_statistics(lambda: pytest.fail("statistics computed")) is False


def test_observation_statistics_travel_with_the_weights(
    cartpole: TrajectoryDataset, tmp_path: Path
) -> None:
    model = make_model("dreamerv3", cartpole)
    Trainer(model, cartpole, CONFIG)
    model.save_pretrained(tmp_path / "m")
    loaded = worldflux.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.obs_scaler.scale, model.obs_scaler.scale)
    assert int(loaded.obs_scaler.rows) == int(model.obs_scaler.rows) > 0
    batch = cartpole.fixed_batches(1, 4, 2, seed=0)[0]
    with torch.no_grad():
        a = model.eval().decode(model.encode(batch.obs[:, 0])).observation
        b = loaded.eval().decode(loaded.encode(batch.obs[:, 0])).observation
    assert a is not None
    assert b is not None
    assert torch.equal(a, b)


def test_cosine_schedule_falls_from_lr_to_its_floor(pendulum: TrajectoryDataset) -> None:
    config = dataclasses.replace(CONFIG, steps=11, lr=2e-3, lr_schedule="cosine", lr_floor=0.1)
    rates = [config.lr_at(step) for step in range(config.steps)]
    assert rates[0] == pytest.approx(2e-3)
    assert rates[5] == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5))  # half-way down the cosine
    assert rates[-1] == pytest.approx(2e-4)
    assert all(a > b for a, b in itertools.pairwise(rates))
    constant = dataclasses.replace(config, lr_schedule="constant")
    assert {constant.lr_at(step) for step in range(config.steps)} == {2e-3}
    # The optimizer steps with the scheduled rate, not the configured one.
    trainer = _trainer("tdmpc2", pendulum, config)
    for step in range(3):
        trainer.train_step()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(rates[step])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr_schedule": "linear"}, "lr_schedule 'linear' is unknown"),
        ({"lr_schedule": "cosine", "lr_floor": 0.0}, "lr_floor must be in (0, 1]"),
        ({"lr_schedule": "cosine", "lr_floor": 1.5}, "lr_floor must be in (0, 1]"),
    ],
)
def test_bad_schedules_are_refused_by_name(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        dataclasses.replace(CONFIG, **change).validate()
