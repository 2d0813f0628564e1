"""The diffusion family: contract shapes, learning on real data, exact save/load, and the
pieces that could silently be wrong (schedule, sampler math, RNG-free evaluation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

import worldflux
from tests.worldflux.conftest import assert_most_seeds_learn, make_model, train_seeds
from worldflux import ConfigError
from worldflux.core.types import State
from worldflux.data import TrajectoryDataset
from worldflux.models.diffusion import DiffusionConfig, DiffusionWorldModel
from worldflux.models.diffusion.model import make_betas
from worldflux.training import TrainerConfig


def diffusion(data: TrajectoryDataset, **overrides: object) -> DiffusionWorldModel:
    model = make_model("diffusion", data, **overrides)
    assert isinstance(model, DiffusionWorldModel)
    return model


@pytest.mark.parametrize("dataset", ["cartpole", "pendulum"])
def test_contract_shapes(dataset: str, request: pytest.FixtureRequest) -> None:
    data: TrajectoryDataset = request.getfixturevalue(dataset)
    model = diffusion(data)
    batch = data.fixed_batches(1, 3, 6, seed=0)[0]
    obs_shape, size = data.spec.obs_shape, 3
    with torch.no_grad():
        state = model.encode(batch.obs[:, 0])
        nxt = model.transition(state, batch.action[:, 1])
        post = model.update(state, batch.action[:, 1], batch.obs[:, 1])
        out = model.decode(nxt)
        traj = model.rollout(state, batch.action[:, 1:].transpose(0, 1))
    assert nxt.tensors.keys() == post.tensors.keys() == state.tensors.keys()
    assert out.observation is not None
    assert out.observation.shape == (size, *obs_shape)
    assert out.reward is not None
    assert out.reward.shape == (size,)
    assert traj.states["obs"].shape == (6, size, *obs_shape)
    assert traj.rewards is not None
    assert traj.rewards.shape == (5, size)
    assert torch.equal(model.decode(post).observation, batch.obs[:, 1])  # type: ignore[arg-type]
    loss = model.loss(batch)
    assert loss.loss.ndim == 0
    assert set(loss.components) == {"denoise", "reward"}
    assert loss.metrics["world_model_loss"] >= 0


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The ci network is tiny: a second thread only adds contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_held_out_denoising_error_drops_for_most_seeds(pendulum: TrajectoryDataset) -> None:
    config = TrainerConfig(steps=100, batch_size=16, seq_len=16, device="cpu")
    assert_most_seeds_learn(train_seeds(lambda: diffusion(pendulum), pendulum, config, range(5)))


def test_round_trip_is_exact(cartpole: TrajectoryDataset, tmp_path: Path) -> None:
    model = diffusion(cartpole).eval()
    assert {"betas", "alphas_cumprod"} <= set(model.state_dict())  # persistent buffers
    batch = cartpole.fixed_batches(1, 4, 8, seed=1)[0]
    model.save_pretrained(tmp_path)
    again = worldflux.from_pretrained(tmp_path).eval()
    actions = batch.action[:, 1:].transpose(0, 1)
    with torch.no_grad():
        assert torch.equal(model.loss(batch).loss, again.loss(batch).loss)
        ra = model.rollout(model.encode(batch.obs[:, 0]), actions)
        rb = again.rollout(again.encode(batch.obs[:, 0]), actions)
        da, db = model.diagnostics(batch), again.diagnostics(batch)
    for key in ra.states.tensors:
        assert torch.equal(ra.states[key], rb.states[key])
    assert ra.rewards is not None
    assert rb.rewards is not None
    assert torch.equal(ra.rewards, rb.rewards)
    assert da.keys() == db.keys()
    assert all(torch.equal(da[k], db[k]) for k in da)


def test_listed_as_experimental() -> None:
    entry = next(m for m in worldflux.list_models() if m["family"] == "diffusion")
    assert entry["maturity"] == "experimental"
    assert {"ci", "small", "ddpm_t1000"} <= set(entry["presets"])


def test_eval_is_deterministic_and_consumes_no_global_rng(pendulum: TrajectoryDataset) -> None:
    model = diffusion(pendulum).eval()
    batch = pendulum.fixed_batches(1, 4, 8, seed=2)[0]
    state = model.encode(batch.obs[:, 0])
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    with torch.no_grad():
        first = model.loss(batch).metrics["world_model_loss"]
        second = model.loss(batch).metrics["world_model_loss"]
        a = model.transition(state, batch.action[:, 1])["obs"]
        b = model.transition(state, batch.action[:, 1])["obs"]
        model.diagnostics(batch)
    assert first == second
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(1), expected)  # the global RNG was not touched
    # Training draws timesteps and noise at random, so two training losses differ.
    model.train()
    assert model.loss(batch).loss.item() != model.loss(batch).loss.item()


def test_schedules() -> None:
    # Ho et al.'s linear schedule is reproduced exactly at T = 1000.
    linear = make_betas(DiffusionConfig(num_timesteps=1000, schedule="linear"))
    assert linear[0].item() == pytest.approx(1e-4)
    assert linear[-1].item() == pytest.approx(0.02)
    for schedule in ("cosine", "linear"):
        betas = make_betas(DiffusionConfig(num_timesteps=20, schedule=schedule))
        abar = torch.cumprod(1 - betas, 0)
        assert bool(((betas > 0) & (betas < 1)).all())
        assert bool((abar[1:] < abar[:-1]).all())  # noise only ever increases
        assert abar[-1].item() < 0.05  # x_T is (nearly) pure noise


def _oracle(model: DiffusionWorldModel, x0: Tensor) -> None:
    """Replace the network by the exact epsilon for a known clean sample ``x0``."""

    def eps(x: Tensor, k: int, temb: Tensor, cond: Tensor) -> Tensor:
        abar = model.alphas_cumprod[k]
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    model._eps_at = eps  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"sampler": "ddim"}, {"sampler": "ddim", "sample_steps": 7, "schedule": "linear"}],
)
def test_sampler_follows_the_forward_marginals(
    pendulum: TrajectoryDataset, overrides: dict[str, object]
) -> None:
    """With the exact epsilon, every intermediate x_k of the sampler is distributed as
    q(x_k | x_0) = N(sqrt(abar_k) x_0, 1 - abar_k), and the sample is x_0: this pins the DDPM
    posterior coefficients and the DDIM update."""
    model = diffusion(pendulum, clip_x0=0.0, **overrides).eval()
    n = 20000
    x0 = torch.tensor([0.5, -1.0, 2.0]).expand(n, 3)
    _oracle(model, x0)
    gen = torch.Generator().manual_seed(0)
    sample, path = model.sample(torch.zeros(n, 4), gen, keep=True)
    assert torch.allclose(sample, x0, atol=1e-4)
    timesteps = model._timesteps()
    for i, k in enumerate(timesteps[1:], start=1):  # path[i] is x at timesteps[i]
        abar = model.alphas_cumprod[k]
        assert torch.allclose(path[i].mean(0), abar.sqrt() * x0[0], atol=0.03)
        assert torch.allclose(path[i].var(0), (1 - abar).expand(3), atol=0.03, rtol=0.05)


def test_diagnostics_expose_finite_scheduler_states(cartpole: TrajectoryDataset) -> None:
    model = diffusion(cartpole)
    batch = cartpole.fixed_batches(1, 4, 8, seed=0)[0]
    diag = model.diagnostics(batch)
    assert diag
    assert all(key.startswith("scheduler.") for key in diag)
    assert diag["scheduler.sampled_x"].shape[1:] == (4, 4)
    assert all(bool(torch.isfinite(v).all()) for v in diag.values())


def test_predict_delta_reconstructs_the_observation(pendulum: TrajectoryDataset) -> None:
    """A zero change in normalized space keeps the observation; with predict_delta off the
    sample is the observation itself."""
    obs = pendulum.fixed_batches(1, 4, 2, seed=0)[0].obs[:, 0]
    delta = diffusion(pendulum)
    absolute = diffusion(pendulum, predict_delta=False)
    assert torch.allclose(delta._next_obs(obs, torch.zeros(4, 3)), obs, atol=1e-6)
    from worldflux.nn import symlog

    assert torch.allclose(absolute._next_obs(obs, symlog(obs)), obs, atol=1e-6)


def test_transition_in_eval_mode_is_a_function_of_state_and_action(
    cartpole: TrajectoryDataset,
) -> None:
    model = diffusion(cartpole).eval()
    obs = cartpole.fixed_batches(1, 2, 2, seed=0)[0].obs[:, 0]
    left, right = torch.tensor([[1.0, 0.0]] * 2), torch.tensor([[0.0, 1.0]] * 2)
    state = State({"obs": obs, "reward": torch.zeros(2)})
    with torch.no_grad():
        assert not torch.equal(
            model.transition(state, left)["obs"], model.transition(state, right)["obs"]
        )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"schedule": "quadratic"}, "schedule"),
        ({"sampler": "euler"}, "sampler"),
        ({"sample_steps": 5}, "ancestral DDPM"),
        ({"sampler": "ddim", "sample_steps": 99}, "sample_steps"),
        ({"time_dim": 15}, "even"),
    ],
)
def test_invalid_configs_are_refused(
    cartpole: TrajectoryDataset, overrides: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        diffusion(cartpole, **overrides)
