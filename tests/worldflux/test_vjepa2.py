"""The ``vjepa2`` family on ``cartpole_pixels``: contract shapes, masking, the EMA target,
learning on real frames without collapse, exact save/load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import worldflux
from tests.worldflux.conftest import assert_most_seeds_learn, make_model, train_seeds
from worldflux.core.errors import ConfigError
from worldflux.core.model import Capability
from worldflux.data import TrajectoryDataset, load_bundled
from worldflux.models.vjepa2 import VJEPA2
from worldflux.models.vjepa2.vit import multiblock_mask, patchify
from worldflux.training import Trainer, TrainerConfig

SEEDS = range(5)
# Measured (seeds 0-4, batch 16 x 16): held-out drop 0.87 at 40 steps, 0.93 at 150 steps.
# A step costs ~0.07 s on one core, so the test trains 40 steps to stay under ~20 s.
STEPS = 40


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The ci model is tiny: one thread is faster than two contending ones on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frames() -> TrajectoryDataset:
    return load_bundled("cartpole_pixels")


def _model(data: TrajectoryDataset) -> VJEPA2:
    model = make_model("vjepa2", data)
    assert isinstance(model, VJEPA2)
    return model


def _batch(data: TrajectoryDataset, size: int = 4, length: int = 8) -> worldflux.Batch:
    return data.fixed_batches(1, size, length, seed=1)[0]


def test_contract_shapes(frames: TrajectoryDataset) -> None:
    model = _model(frames)
    batch = _batch(frames)
    width = model.config.width
    state = model.encode(batch.obs[:, 0])
    assert state["embedding"].shape == (4, width)
    torch.testing.assert_close(state["embedding"].norm(dim=-1), torch.ones(4))
    nxt = model.transition(state, batch.action[:, 1])
    torch.testing.assert_close(nxt["embedding"].norm(dim=-1), torch.ones(4))
    assert model.update(state, batch.action[:, 1], batch.obs[:, 1])["embedding"].shape == (4, width)
    out = model.decode(state)
    assert out.reward is not None
    assert out.reward.shape == (4,)
    assert out.observation is None  # no pixel decoder
    trajectory = model.rollout(state, batch.action[:, 1:6].transpose(0, 1))
    assert trajectory.states["embedding"].shape == (6, 4, width)
    assert trajectory.rewards is not None
    assert trajectory.rewards.shape == (5, 4)
    assert model.capabilities == frozenset({Capability.REWARD_PREDICTION})
    loss = model.loss(batch)
    assert set(loss.components) == {"masked", "next", "variance", "reward"}
    assert loss.metrics["world_model_loss"] >= 0
    diagnostics = model.diagnostics(batch)
    assert {"context_projection", "target_projection", "mask"} <= set(diagnostics)
    assert diagnostics["target_projection"].shape == (32, 16, width)
    assert diagnostics["mask"].shape == (32, 16)


def test_listed_as_experimental_and_rejects_vector_observations(
    cartpole: TrajectoryDataset,
) -> None:
    entry = next(m for m in worldflux.list_models() if m["family"] == "vjepa2")
    assert entry["maturity"] == "experimental"
    assert {"ci", "small", "large", "huge", "giant"} <= set(entry["presets"])
    with pytest.raises(ConfigError, match="image observations"):
        make_model("vjepa2", cartpole)


def test_patches_are_row_major_squares() -> None:
    image = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32)
    patches = patchify(image, 8)
    assert patches.shape == (1, 16, 64)
    assert torch.equal(patches[0, 1], image[0, 0, :8, 8:16].reshape(-1))
    assert torch.equal(patches[0, 4], image[0, 0, 8:16, :8].reshape(-1))


def test_masks_are_blocks_leave_context_and_follow_the_rng() -> None:
    generator = torch.Generator().manual_seed(0)
    masks = multiblock_mask(500, (4, 4), 2, 2, generator, torch.device("cpu"))
    counts = masks.sum(-1)
    assert int(counts.min()) >= 1
    assert int(counts.max()) <= 8  # two blocks of at most 2 x 2
    assert int((16 - counts).min()) >= 1
    # Masked patches come in rectangles: a single 1x1..2x2 block is one bounding box.
    single = multiblock_mask(200, (4, 4), 1, 2, generator, torch.device("cpu")).reshape(-1, 4, 4)
    for mask in single:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool(box.all())
    # Training masks follow the global RNG (the trainer's seed); eval masks do not touch it.
    torch.manual_seed(5)
    first = multiblock_mask(8, (4, 4), 2, 2, None, torch.device("cpu"))
    torch.manual_seed(5)
    assert torch.equal(first, multiblock_mask(8, (4, 4), 2, 2, None, torch.device("cpu")))


def test_context_encoder_never_sees_masked_patches(frames: TrajectoryDataset) -> None:
    """Changing the pixels of masked patches leaves the context tokens of visible ones as
    they were: the attention mask really hides them."""
    model = _model(frames)
    patches = model._patches(_batch(frames).obs)
    masked = model.eval()._mask(patches.shape[0])
    noisy = torch.where(masked[..., None], torch.rand_like(patches), patches)
    with torch.no_grad():
        clean_ctx, _ = model._predict_masked(patches, masked)
        noisy_ctx, _ = model._predict_masked(noisy, masked)
    visible = ~masked
    torch.testing.assert_close(clean_ctx[visible], noisy_ctx[visible])
    assert not torch.equal(clean_ctx[masked], noisy_ctx[masked])


def test_evaluation_is_deterministic_and_consumes_no_rng(frames: TrajectoryDataset) -> None:
    model = _model(frames).eval()
    batch = _batch(frames)
    torch.manual_seed(123)
    first = model.loss(batch).metrics
    after_first = torch.rand(1)
    torch.manual_seed(123)
    assert model.loss(batch).metrics == first
    assert torch.equal(torch.rand(1), after_first)
    # In training mode the masks (and so the loss) follow the global RNG.
    model.train()
    torch.manual_seed(1)
    a = model.loss(batch).metrics["masked_loss"]
    torch.manual_seed(2)
    assert model.loss(batch).metrics["masked_loss"] != a


def test_target_is_an_ema_of_the_context_encoder_and_gets_no_gradient(
    frames: TrajectoryDataset,
) -> None:
    model = _model(frames)
    train, _ = frames.split(0.2, seed=0)
    trainer = Trainer(model, train, TrainerConfig(steps=3, batch_size=4, seq_len=8, device="cpu"))
    trainer.fit()
    old_target = [p.clone() for p in model.target_encoder.parameters()]
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    assert not any(p is q for p in model.target_encoder.parameters() for q in trainer.params)
    trainer.train_step()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    tau = model.config.tau
    online = list(model.encoder.parameters())
    for new, old, live in zip(model.target_encoder.parameters(), old_target, online, strict=True):
        torch.testing.assert_close(new, (1 - tau) * old + tau * live)
    assert any(k.startswith("target_encoder.") for k in model.state_dict())


@pytest.mark.slow
def test_held_out_loss_drops_without_collapse(frames: TrajectoryDataset) -> None:
    config = TrainerConfig(steps=STEPS, batch_size=16, seq_len=16, eval_batches=4, device="cpu")
    results = train_seeds(lambda: _model(frames), frames, config, SEEDS)
    for before, after in results:
        # Not by collapse: the frame embeddings spread out (they start nearly identical).
        assert after["embedding_std"] > 2 * before["embedding_std"], (before, after)
    assert_most_seeds_learn(results)


def test_save_load_round_trip_is_exact(frames: TrajectoryDataset, tmp_path: Path) -> None:
    model = _model(frames)
    train, _ = frames.split(0.2, seed=0)
    Trainer(model, train, TrainerConfig(steps=3, batch_size=4, seq_len=8, device="cpu")).fit()
    model.eval()
    reloaded = worldflux.from_pretrained(model.save_pretrained(tmp_path / "vjepa2")).eval()
    batch = _batch(frames)
    assert reloaded.loss(batch).metrics == model.loss(batch).metrics
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    state = reloaded.encode(batch.obs[:, 0])
    assert torch.equal(state["embedding"], model.encode(batch.obs[:, 0])["embedding"])
