"""Trajectory data sets: the row convention, bundled files, storage, splitting and sampling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import torch

from worldflux.core.errors import DatasetError
from worldflux.data import BUNDLED_DIR, DatasetSpec, TrajectoryDataset, list_bundled, load_bundled
from worldflux.data.collect import generate_bundled

DISCRETE = DatasetSpec(obs_shape=(2,), action_dim=3, discrete=True, action_low=0.0, action_high=1.0)


def tiny_columns(lengths: tuple[int, ...] = (4, 3, 5)) -> dict[str, Any]:
    """Discrete columns for episodes of the given row counts; the observation encodes
    (episode, step) so a gathered window reveals where it came from."""
    episode = np.concatenate([np.full(n, e, np.int64) for e, n in enumerate(lengths)])
    step = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
    first = step == 0
    last = np.concatenate([np.arange(n) == n - 1 for n in lengths])
    action = np.where(first, 0, (episode + step) % 3).astype(np.int64)
    return {
        "observation": np.stack([episode, step], axis=1).astype(np.float32),
        "action": action,
        "reward": np.where(first, 0.0, 1.0).astype(np.float32),
        "terminated": last & (episode % 2 == 0),
        "truncated": last & (episode % 2 == 1),
        "episode": episode,
        "step": step,
    }


def tiny(lengths: tuple[int, ...] = (4, 3, 5)) -> TrajectoryDataset:
    return TrajectoryDataset(name="tiny", spec=DISCRETE, **tiny_columns(lengths))


def batch_tensors(batch: Any) -> list[torch.Tensor]:
    return [
        batch.obs,
        batch.action,
        batch.reward,
        batch.terminated,
        batch.truncated,
        batch.is_first,
    ]


# ------------------------------------------------------------------------------ bundled
@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_bundled_loads_with_the_row_convention(name: str) -> None:
    ds = load_bundled(name)
    col = ds.columns()
    rows = len(ds)
    assert col["observation"].dtype == np.float32
    assert col["observation"].shape == (rows, *ds.spec.obs_shape)
    assert col["reward"].dtype == np.float32
    assert col["reward"].shape == (rows,)
    assert col["terminated"].dtype == np.bool_
    assert col["truncated"].dtype == np.bool_
    assert col["episode"].dtype == np.int64
    assert col["step"].dtype == np.int64
    ends = col["terminated"].astype(int) + col["truncated"].astype(int)
    assert np.bincount(col["episode"], weights=ends).tolist() == [1.0] * ds.num_episodes
    last_rows = np.cumsum(ds.episode_lengths) - 1
    assert ends[last_rows].tolist() == [1] * ds.num_episodes
    assert ds.episode_lengths.sum() == rows
    first = col["step"] == 0
    assert (col["reward"][first] == 0).all()
    entry = {e["name"]: e for e in list_bundled()}[name]
    assert (entry["rows"], entry["episodes"]) == (rows, ds.num_episodes)
    assert entry["transitions"] == rows - ds.num_episodes


def test_cartpole_mixes_terminated_and_truncated_episodes() -> None:
    ds = load_bundled("cartpole")
    assert ds.spec.discrete
    assert ds.spec.action_dim == 2
    assert ds.columns()["action"].dtype == np.int64
    assert ds.num_terminated >= 5
    assert ds.num_truncated >= 5
    assert ds.episode_lengths.max() == 501  # the 500-step time limit, plus the reset row


def test_pendulum_actions_stay_in_bounds_and_episodes_are_truncated() -> None:
    ds = load_bundled("pendulum")
    action = ds.columns()["action"]
    assert action.dtype == np.float32
    assert action.shape == (len(ds), 1)
    assert action.min() >= -2.0
    assert action.max() <= 2.0
    assert action.std() > 0.5  # the behaviour policy really explores the torque range
    assert ds.num_truncated == ds.num_episodes
    assert ds.num_terminated == 0
    assert set(ds.episode_lengths.tolist()) == {201}


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    generate_bundled(tmp_path)
    for name in ("cartpole.safetensors", "pendulum.safetensors", "manifest.json", "derived.json"):
        assert (tmp_path / name).read_bytes() == (BUNDLED_DIR / name).read_bytes(), name


def test_unknown_bundled_name_lists_the_choices() -> None:
    with pytest.raises(DatasetError, match=r"unknown bundled data set 'atari'.*cartpole.*pendulum"):
        load_bundled("atari")


def test_corrupted_bundled_file_is_rejected_naming_the_file(tmp_path: Path) -> None:
    shutil.copytree(BUNDLED_DIR, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "pendulum.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one number: it would parse, the sha256 tells
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"pendulum\.safetensors.*sha256"):
        load_bundled("pendulum", root=tmp_path)
    assert len(load_bundled("cartpole", root=tmp_path)) > 0  # the intact neighbour still loads


def test_unreadable_file_is_rejected_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(tiny().to_bytes()[:100])
    with pytest.raises(DatasetError, match=r"broken\.safetensors.*unreadable"):
        TrajectoryDataset.load(path)


def test_wrongly_shaped_file_is_rejected(tmp_path: Path) -> None:
    good = tiny()
    tensors = {
        k: v.astype(np.uint8) if v.dtype == np.bool_ else v for k, v in good.columns().items()
    }
    tensors["observation"] = tensors["observation"][:-1]
    path = tmp_path / "short.safetensors"
    meta = {"format": 1, "name": "tiny", "spec": DISCRETE.to_json_dict()}
    metadata = {"worldflux.dataset": json.dumps(meta, sort_keys=True)}
    safetensors.numpy.save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(DatasetError, match=r"short\.safetensors.*'observation'.*shape"):
        TrajectoryDataset.load(path)


def test_save_load_round_trip_keeps_data_and_digest(tmp_path: Path) -> None:
    ds = tiny()
    sha = ds.save(tmp_path / "tiny.safetensors")
    again = TrajectoryDataset.load(tmp_path / "tiny.safetensors", expected_sha256=sha)
    assert again.name == "tiny"
    assert again.spec == ds.spec
    assert again.digest == ds.digest
    for key, value in ds.columns().items():
        assert np.array_equal(again.columns()[key], value)
        assert again.columns()[key].dtype == value.dtype
    assert ds.to_bytes() == again.to_bytes()


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("column", "row", "value", "message"),
    [
        ("episode", 4, 2, "column 'episode' must number episodes"),
        ("step", 2, 5, "column 'step' must count .* row 2"),
        ("terminated", 1, True, "exactly one must be set .* row 1"),
        ("truncated", 3, True, "'terminated' and 'truncated' are both set at row 3"),
        ("action", 1, 3, r"column 'action' holds indices outside \[0, 3\)"),
        ("action", 0, 1, "column 'action' must be index 0 at each episode's first row"),
        ("reward", 0, 1.0, "column 'reward' must be 0 at each episode's first row"),
        ("observation", (2, 0), np.nan, "column 'observation' holds NaN"),
    ],
)
def test_malformed_columns_are_rejected_naming_the_column(
    column: str, row: Any, value: Any, message: str
) -> None:
    columns = tiny_columns()
    columns[column][row] = value
    with pytest.raises(DatasetError, match=message):
        TrajectoryDataset(name="bad", spec=DISCRETE, **columns)


def test_wrong_dtype_is_rejected_naming_the_column() -> None:
    columns = tiny_columns()
    columns["reward"] = columns["reward"].astype(np.float64)
    with pytest.raises(DatasetError, match="column 'reward' must have dtype float32"):
        TrajectoryDataset(name="bad", spec=DISCRETE, **columns)


def test_continuous_actions_outside_the_box_are_rejected() -> None:
    spec = DatasetSpec(obs_shape=(2,), action_dim=1, discrete=False, action_low=-1, action_high=1)
    columns = tiny_columns()
    action = np.where(columns["step"] == 0, 0.0, 0.5).astype(np.float32)[:, None]
    TrajectoryDataset(name="ok", spec=spec, **{**columns, "action": action})
    action[5, 0] = 1.5
    with pytest.raises(DatasetError, match=r"'action' leaves \[-1.0, 1.0\]"):
        TrajectoryDataset(name="bad", spec=spec, **{**columns, "action": action})


def test_table_columns_are_one_dimensional() -> None:
    table = load_bundled("pendulum").to_table_columns()
    assert list(table)[:4] == ["obs_0", "obs_1", "obs_2", "action_0"]
    assert all(v.ndim == 1 for v in table.values())


# -------------------------------------------------------------------------------- split
def test_split_is_by_whole_episodes_and_deterministic() -> None:
    ds = load_bundled("cartpole")
    train, held = ds.split(0.2, seed=3)
    assert held.num_episodes == 10
    assert train.num_episodes == 40
    assert len(train) + len(held) == len(ds)

    def episode_keys(part: TrajectoryDataset) -> set[bytes]:
        obs = part.columns()["observation"]
        return {obs[i].tobytes() for i in np.flatnonzero(part.columns()["step"] == 0)}

    assert not episode_keys(train) & episode_keys(held)  # no reset observation in both parts
    assert episode_keys(train) | episode_keys(held) == episode_keys(ds)
    again_train, again_held = ds.split(0.2, seed=3)
    assert again_held.digest == held.digest
    assert again_train.digest == train.digest
    assert ds.split(0.2, seed=4)[1].digest != held.digest
    assert held.columns()["episode"][-1] == held.num_episodes - 1  # renumbered from 0


def test_split_needs_an_episode_on_each_side() -> None:
    with pytest.raises(DatasetError, match="each side needs at least one episode"):
        tiny().split(0.1, seed=0)
    with pytest.raises(DatasetError, match="held_out_fraction"):
        tiny().split(1.0, seed=0)


# ------------------------------------------------------------------------------- sample
def test_sample_shapes_and_dtypes() -> None:
    ds = load_bundled("pendulum")
    batch = ds.sample(np.random.default_rng(0), batch_size=16, seq_len=50)
    assert batch.obs.shape == (16, 50, 3)
    assert batch.action.shape == (16, 50, 1)
    for tensor in batch_tensors(batch)[2:]:
        assert tensor.shape == (16, 50)
    assert all(t.dtype == torch.float32 for t in batch_tensors(batch))


def test_windows_never_cross_an_episode_boundary() -> None:
    ds = tiny((4, 3, 5))
    batch = ds.sample(np.random.default_rng(1), batch_size=2000, seq_len=3)
    episode, step = batch.obs[..., 0], batch.obs[..., 1]
    assert (episode == episode[:, :1]).all()  # one episode per window
    assert (step[:, 1:] - step[:, :-1] == 1).all()  # consecutive steps
    assert (batch.is_first[:, 1:] == 0).all()  # a reset can only open a window
    # Every valid start is drawn: episode 0 has 2, episode 1 has 1, episode 2 has 3.
    starts = {(int(e), int(s)) for e, s in zip(episode[:, 0], step[:, 0], strict=True)}
    assert starts == {(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)}
    # Ends land only on the last position a window can reach.
    assert (batch.terminated + batch.truncated)[:, :-1].sum() == 0


def test_discrete_actions_are_one_hot_with_zero_at_episode_start() -> None:
    ds = tiny()
    rng = np.random.default_rng(2)
    index = ds.sample_indices(rng, batch_size=64, seq_len=3)
    batch = ds.batch_at(index)
    action = ds.columns()["action"][index]
    expected = torch.nn.functional.one_hot(torch.from_numpy(action), 3).float()
    expected[batch.is_first.bool()] = 0.0
    assert torch.equal(batch.action, expected)
    assert set(batch.action.sum(-1).flatten().tolist()) == {0.0, 1.0}
    assert (batch.action.sum(-1) == 1 - batch.is_first).all()


def test_same_seed_same_batch_and_different_seeds_differ() -> None:
    ds = load_bundled("cartpole")
    first = ds.sample(np.random.default_rng(7), 16, 50)
    second = ds.sample(np.random.default_rng(7), 16, 50)
    other = ds.sample(np.random.default_rng(8), 16, 50)
    assert all(
        torch.equal(a, b) for a, b in zip(batch_tensors(first), batch_tensors(second), strict=True)
    )
    assert not torch.equal(first.obs, other.obs)


def test_sampling_ignores_global_random_state() -> None:
    ds = load_bundled("cartpole")
    results = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
        results.append(ds.sample(np.random.default_rng(5), 8, 20).obs)
    assert torch.equal(results[0], results[1])


def test_fixed_batches_are_reproducible() -> None:
    ds = load_bundled("pendulum")
    first = ds.fixed_batches(3, 4, 10, seed=11)
    again = ds.fixed_batches(3, 4, 10, seed=11)
    assert len(first) == 3
    assert all(torch.equal(a.obs, b.obs) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0].obs, first[1].obs)


def test_too_long_windows_name_the_longest_episode() -> None:
    with pytest.raises(DatasetError, match=r"seq_len=6.*longest has 5"):
        tiny((4, 3, 5)).sample(np.random.default_rng(0), 2, 6)


def test_continuous_actions_reach_models_in_unit_range_and_map_back() -> None:
    data = load_bundled("pendulum")
    batch = data.fixed_batches(4, 16, 20, seed=3)[0]
    assert batch.action.abs().max() <= 1.0
    assert batch.action.abs().max() > 0.5  # scaled, not squashed to nothing
    index = data.sample_indices(np.random.default_rng(0), 8, 5)
    raw = data.columns()["action"][index]
    env = data.spec.env_action(batch_at_numpy(data, index))
    first = data.columns()["step"][index] == 0
    assert np.allclose(env[~first], raw[~first], atol=1e-5)


def batch_at_numpy(data: TrajectoryDataset, index: np.ndarray) -> np.ndarray:
    return data.batch_at(index).action.numpy()


def test_discrete_env_action_is_the_index() -> None:
    spec = load_bundled("cartpole").spec
    assert spec.env_action(np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)).tolist() == [1, 0]
