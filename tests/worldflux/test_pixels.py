"""The derived image data sets ``cartpole_pixels`` (grey 32 x 32) and ``cartpole_rgb`` (colour
64 x 64): what they hold, how they are rendered, and that a change of the renderer or of its
record is detected on load."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from worldflux.core.errors import DatasetError
from worldflux.data import BUNDLED_DIR, TrajectoryDataset, list_bundled, load_bundled, pixels
from worldflux.data.dataset import frames_to_float

GREY = pixels.RENDERINGS["cartpole_pixels"]
RGB = pixels.RENDERINGS["cartpole_rgb"]


@pytest.fixture(scope="module")
def frames() -> TrajectoryDataset:
    return load_bundled("cartpole_pixels")


def test_same_rows_as_cartpole_with_image_observations(
    frames: TrajectoryDataset, cartpole: TrajectoryDataset
) -> None:
    assert frames.name == "cartpole_pixels"
    assert frames.spec.obs_shape == (1, 32, 32)
    assert (frames.spec.action_dim, frames.spec.discrete) == (2, True)
    assert frames.num_episodes == GREY.episodes
    stored = frames.columns()["observation"]
    assert stored.dtype == np.uint8  # a quarter of float32's memory
    assert (stored.min(), stored.max()) == (0, 255)
    obs = frames.observations()
    assert obs.dtype == np.float32
    assert obs.min() == 0.0
    assert obs.max() == 1.0
    source = cartpole.columns()
    keep = source["episode"] < GREY.episodes
    for key in ("action", "reward", "terminated", "truncated", "episode", "step"):
        assert np.array_equal(frames.columns()[key], source[key][keep]), key
    # Both kinds of episode end survive the subset.
    assert frames.num_terminated >= 1
    assert frames.num_truncated >= 1
    batch = frames.fixed_batches(1, 4, 8, seed=0)[0]
    assert tuple(batch.obs.shape) == (4, 8, 1, 32, 32)
    assert batch.obs.dtype == torch.float32
    index = frames.sample_indices(np.random.default_rng(0), 4, 8)
    assert torch.equal(frames.batch_at(index).obs, torch.from_numpy(stored[index] / 255.0).float())
    assert tuple(batch.action.shape) == (4, 8, 2)


def test_listed_as_derived_and_the_file_manifest_is_untouched() -> None:
    entries = {e["name"]: e for e in list_bundled()}
    entry = entries["cartpole_pixels"]
    assert entry["derived"] is True
    assert entry["source"] == "cartpole"
    assert entry["source_sha256"] == entries["cartpole"]["sha256"]
    assert (entry["renderer_version"], entry["image_size"]) == (GREY.version, 32)
    assert (
        "cartpole_pixels" not in json.loads((BUNDLED_DIR / "manifest.json").read_text())["datasets"]
    )


def test_rendering_is_deterministic(cartpole: TrajectoryDataset) -> None:
    states = cartpole.columns()["observation"]
    states = states[cartpole.columns()["episode"] < GREY.episodes]
    outputs = [pixels.render_cartpole(states) for _ in range(2)]
    assert np.array_equal(outputs[0], outputs[1])
    entry = {e["name"]: e for e in list_bundled()}["cartpole_pixels"]
    assert pixels.observation_sha256(outputs[0]) == entry["observation_sha256"]


def test_frames_show_the_cart_position_and_the_pole_angle() -> None:
    states = np.array([[0.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 0, 0.2, 0], [0.0, 0, -0.2, 0]])
    img = pixels.render_cartpole(states)[:, 0]
    cart_rows = slice(22, 27)
    centre_col = [
        (img[i, cart_rows].sum(0) * np.arange(32)).sum() / img[i, cart_rows].sum() for i in range(2)
    ]
    # x = 1 moves the cart 13 / 2.4 ~ 5.4 px to the right.
    assert centre_col[1] - centre_col[0] == pytest.approx(13 / 2.4, abs=0.3)
    top = img[:, 5:10]  # the pole's upper part: left of centre for theta < 0, right for > 0
    mass = [(top[i].sum(0) * (np.arange(32) + 0.5 - 16)).sum() / top[i].sum() for i in range(4)]
    assert abs(mass[0]) < 0.1
    assert mass[2] > 1.5
    assert mass[3] < -1.5
    assert mass[2] == pytest.approx(-mass[3])
    # Only the cart and the pole are drawn: the rest of the frame is black.
    assert img[:, :5].max() == 0.0
    assert img[:, 28:].max() == 0.0


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(BUNDLED_DIR, tmp_path, dirs_exist_ok=True)
    return tmp_path


def _edit(root: Path, **fields: object) -> None:
    path = root / pixels.DERIVED_NAME
    record = json.loads(path.read_text())
    record["datasets"]["cartpole_pixels"].update(fields)
    path.write_text(json.dumps(record))


def test_a_changed_renderer_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(tmp_path)
    assert load_bundled("cartpole_pixels", root).num_episodes == GREY.episodes
    shorter = dataclasses.replace(pixels.GRAY_SCENE, pole_length=13.0)
    monkeypatch.setattr(pixels, "GRAY_SCENE", shorter)
    with pytest.raises(DatasetError, match="observation_sha256"):
        load_bundled("cartpole_pixels", root)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"observation_sha256": "0" * 64}, "observation_sha256"),
        ({"renderer_version": 0}, "renderer version"),
        ({"source_sha256": "0" * 64}, "derived from cartpole"),
        ({"episodes_used": 10}, "episodes"),
    ],
)
def test_an_edited_record_is_detected(
    tmp_path: Path, fields: dict[str, object], match: str
) -> None:
    root = _copy(tmp_path)
    _edit(root, **fields)
    with pytest.raises(DatasetError, match=match):
        load_bundled("cartpole_pixels", root)


def test_unknown_names_list_the_derived_data_set_too() -> None:
    with pytest.raises(DatasetError, match="cartpole_pixels"):
        load_bundled("atari")


@pytest.fixture(scope="module")
def colour() -> TrajectoryDataset:
    return load_bundled("cartpole_rgb")


def test_colour_frames_keep_cartpoles_rows_at_64_px(
    colour: TrajectoryDataset, cartpole: TrajectoryDataset
) -> None:
    assert colour.spec.obs_shape == (3, 64, 64)
    assert colour.num_episodes == RGB.episodes
    source = cartpole.columns()
    keep = source["episode"] < RGB.episodes
    for key in ("action", "reward", "terminated", "episode", "step"):
        assert np.array_equal(colour.columns()[key], source[key][keep]), key
    entry = {e["name"]: e for e in list_bundled()}["cartpole_rgb"]
    assert entry["derived"] is True
    assert entry["source_sha256"] == {e["name"]: e for e in list_bundled()}["cartpole"]["sha256"]
    assert entry["renderer"] == "worldflux.data.pixels.render_cartpole_rgb"


def _quantized(colour: tuple[float, float, float]) -> np.ndarray:
    return np.round(np.asarray(colour) * 255).astype(np.uint8)


def test_colour_frames_draw_the_cart_and_the_pole_in_their_colours() -> None:
    states = np.array([[0.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 0, 0.2, 0], [0.0, 0, -0.2, 0]])
    stored = pixels.render_cartpole_rgb(states)  # [4, 3, 64, 64]
    assert stored.shape == (4, 3, 64, 64)
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored[0, :, 2, 2], _quantized(pixels.BACKGROUND))
    np.testing.assert_array_equal(stored[0, :, 52, 2], _quantized(pixels.TRACK))
    np.testing.assert_array_equal(stored[0, :, 46, 32], _quantized(pixels.CART))
    np.testing.assert_array_equal(stored[0, :, 30, 32], _quantized(pixels.POLE))
    img = stored / 255.0
    # The cart is where its blue is: x = 1 moves it 26 / 2.4 ~ 10.8 px to the right.
    # Blue minus red: 0.6 on the cart, 0.05 on the background, negative on the pole.
    blue = (img[:, 2] - img[:, 0] - 0.1)[:, 42:51].clip(0)
    cols = np.arange(64) + 0.5
    centre = [(blue[i].sum(0) * cols).sum() / blue[i].sum() for i in range(2)]
    assert centre[1] - centre[0] == pytest.approx(26 / 2.4, abs=0.5)
    # The pole leans the way theta says: red minus blue is high on the pole only.
    orange = (img[:, 0] - img[:, 2])[:, 10:20].clip(0)
    lean = [(orange[i].sum(0) * (cols - 32)).sum() / orange[i].sum() for i in range(4)]
    assert abs(lean[0]) < 0.1
    assert lean[2] > 3
    assert lean[3] < -3
    assert lean[2] == pytest.approx(-lean[3])


def test_a_changed_colour_renderer_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _copy(tmp_path)
    monkeypatch.setattr(pixels, "CART", (0.2, 0.35, 0.75))
    with pytest.raises(DatasetError, match=r"cartpole_rgb.*observation_sha256"):
        load_bundled("cartpole_rgb", root)


# ------------------------------------------------------------------------ frames as bytes
def test_bytes_become_exactly_the_floats_of_frames_quantized_to_255_levels() -> None:
    levels = np.arange(256, dtype=np.uint8)
    quantized_floats = (np.round(levels / 255.0 * 255.0) / 255.0).astype(np.float32)
    np.testing.assert_array_equal(frames_to_float(levels), quantized_floats)
    assert frames_to_float(levels).dtype == np.float32


def _as_float_frames(data: TrajectoryDataset) -> TrajectoryDataset:
    columns = data.columns()
    columns["observation"] = data.observations()
    return TrajectoryDataset(name=data.name, spec=data.spec, **columns)


def test_frames_stored_as_bytes_are_the_same_data_as_floats(
    cartpole: TrajectoryDataset, tmp_path: Path
) -> None:
    """Bytes or float32: models get the same batches and the data set the same digest (the
    lineage's data identity does not depend on the storage); bytes survive save and load."""
    stored = RGB.build(cartpole, episodes=2)
    assert stored.frames_as_bytes
    assert stored.columns()["observation"].nbytes == len(stored) * 3 * 64 * 64
    floats = _as_float_frames(stored)
    assert not floats.frames_as_bytes
    assert floats.columns()["observation"].nbytes == 4 * stored.columns()["observation"].nbytes
    assert stored.digest == floats.digest
    for a, b in zip(
        stored.fixed_batches(2, 3, 6, seed=1), floats.fixed_batches(2, 3, 6, seed=1), strict=True
    ):
        assert a.obs.dtype == b.obs.dtype == torch.float32
        assert torch.equal(a.obs, b.obs)
    low, high = stored.observation_bounds(axis=(0, 2, 3))
    np.testing.assert_array_equal(low, floats.observations().min(axis=(0, 2, 3)))
    np.testing.assert_array_equal(high, floats.observations().max(axis=(0, 2, 3)))
    stored.save(tmp_path / "rgb.safetensors")
    loaded = TrajectoryDataset.load(tmp_path / "rgb.safetensors")
    assert loaded.columns()["observation"].dtype == np.uint8
    assert loaded.digest == stored.digest


def test_bytes_are_frames_only(cartpole: TrajectoryDataset) -> None:
    columns = cartpole.columns()
    columns["observation"] = np.zeros(columns["observation"].shape, dtype=np.uint8)
    with pytest.raises(DatasetError, match=r"'observation' must have dtype float32 \(or uint8"):
        TrajectoryDataset(name="bytes", spec=cartpole.spec, **columns)
