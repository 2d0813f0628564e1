"""Image observations derived from a bundled data set: CartPole frames rendered from the true state.

``cartpole_pixels`` keeps the actions, rewards, episode ends and episode ids of ``cartpole``
(its first ``EPISODES`` episodes, which keeps the frames at ~32 MB and rendering well under a
second) and replaces each observation (x, x_dot, theta, theta_dot) with a 1 x 32 x 32 float32
frame in [0, 1]:

    cart   a filled 7 x 5 px rectangle centred at column 16 + x * 13 / 2.4, row 24
    pole   a 2 px thick segment of 14 px from the cart's top edge, at angle theta from vertical

Edges are anti-aliased by pixel-centre distance (coverage = clip(half_width + 0.5 - d, 0, 1)).
The geometry is computed in float64 and quantized to 255 levels, as a camera would store it:
a last-bit difference in a platform's ``sin`` then cannot change a stored pixel, so the sha256
of the frames identifies the rendering, not the machine. Velocities are not visible in one
frame; a model has to infer them from consecutive frames or the action.

Nothing is stored on disk: ``derived.json`` (next to ``manifest.json``) records the renderer
version, the source data set and its file sha256, the image size, the episodes used and the
sha256 of the rendered observation bytes, and ``load_derived`` re-renders and checks all of it,
so any change of the renderer fails loudly instead of silently training on other frames.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt

from worldflux.core.errors import DatasetError
from worldflux.data.dataset import TrajectoryDataset
from worldflux.data.schema import DatasetSpec

RENDERER_VERSION = 1
IMAGE_SIZE = 32
EPISODES = 20
NAME = "cartpole_pixels"
SOURCE = "cartpole"
DERIVED_NAME = "derived.json"

# Geometry in pixels (see the module docstring). 13 / 2.4 maps the track's +-2.4 to +-13 px.
_PX_PER_UNIT = 13.0 / 2.4
_CART_ROW = 24.0
_CART_HALF = (3.5, 2.5)  # half width, half height
_POLE_LENGTH = 14.0
_POLE_HALF_THICKNESS = 1.0
_LEVELS = 255.0
# Rows the pole can touch: from the pole length plus its anti-aliased half thickness above the
# cart's top edge (row 21.5) down to that edge plus the same margin.
_POLE_ROWS = (5, 24)


def render_cartpole(state: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """Frames [N, 1, 32, 32] in [0, 1] from CartPole states [N, 4]; vectorized over rows."""
    state = np.asarray(state, dtype=np.float64)
    if state.ndim != 2 or state.shape[1] != 4:
        raise DatasetError(f"render_cartpole needs states of shape [N, 4], got {state.shape}")
    centre = np.arange(IMAGE_SIZE, dtype=np.float64) + 0.5  # pixel centres
    cx = IMAGE_SIZE / 2 + state[:, 0] * _PX_PER_UNIT  # [N]
    theta = state[:, 2]

    # Cart: a box is the max of its two axis distances, so it separates into [N, W] and [H].
    dx = np.abs(centre[None, :] - cx[:, None]) - _CART_HALF[0]  # [N, W]
    dy = np.abs(centre - _CART_ROW) - _CART_HALF[1]  # [H]
    cart = np.clip(0.5 - np.maximum(dx[:, None, :], dy[None, :, None]), 0.0, 1.0)

    # Pole: distance from each pixel centre to the segment a -> a + u * length. The pole stays
    # between rows _POLE_ROWS for any angle up to horizontal (CartPole ends at ~0.21 rad), so
    # only those rows are computed: ~40% less work.
    ay = _CART_ROW - _CART_HALF[1]
    ux, uy = np.sin(theta)[:, None, None], -np.cos(theta)[:, None, None]  # rows grow downward
    px = centre[None, None, :] - cx[:, None, None]  # [N, 1, W]
    py = (centre[_POLE_ROWS[0] : _POLE_ROWS[1]] - ay)[None, :, None]  # [1, H', 1]
    along = np.clip(px * ux + py * uy, 0.0, _POLE_LENGTH)
    ex, ey = px - along * ux, py - along * uy
    pole = np.clip(_POLE_HALF_THICKNESS + 0.5 - np.sqrt(ex * ex + ey * ey), 0.0, 1.0)
    rows = slice(*_POLE_ROWS)
    cart[:, rows] = np.maximum(cart[:, rows], pole)

    frames = np.round(cart * _LEVELS) / _LEVELS
    return frames.astype(np.float32)[:, None]


def observation_sha256(observation: npt.NDArray[np.float32]) -> str:
    """sha256 of the frames' little-endian float32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(observation, dtype="<f4").tobytes()).hexdigest()


def build_cartpole_pixels(source: TrajectoryDataset, episodes: int = EPISODES) -> TrajectoryDataset:
    """The first ``episodes`` episodes of ``source`` with rendered frames as observations."""
    if source.spec.obs_shape != (4,) or not source.spec.discrete:
        raise DatasetError(f"cartpole_pixels renders CartPole states, got spec {source.spec}")
    col = source.columns()
    keep = col["episode"] < episodes
    spec = DatasetSpec(
        obs_shape=(1, IMAGE_SIZE, IMAGE_SIZE),
        action_dim=source.spec.action_dim,
        discrete=True,
        action_low=source.spec.action_low,
        action_high=source.spec.action_high,
    )
    parts = {key: value[keep] for key, value in col.items() if key != "observation"}
    return TrajectoryDataset(
        name=NAME, spec=spec, observation=render_cartpole(col["observation"][keep]), **parts
    )


def derived_entry(dataset: TrajectoryDataset, source_sha256: str) -> dict[str, Any]:
    """The ``derived.json`` record of ``dataset`` (what ``load_derived`` verifies)."""
    return {
        "name": NAME,
        "derived": True,
        "source": SOURCE,
        "source_sha256": source_sha256,
        "renderer": "worldflux.data.pixels.render_cartpole",
        "renderer_version": RENDERER_VERSION,
        "image_size": IMAGE_SIZE,
        "episodes_used": dataset.num_episodes,
        "episodes": dataset.num_episodes,
        "rows": len(dataset),
        "transitions": len(dataset) - dataset.num_episodes,
        "obs_shape": list(dataset.spec.obs_shape),
        "action_dim": dataset.spec.action_dim,
        "discrete": dataset.spec.discrete,
        "action_low": dataset.spec.action_low,
        "action_high": dataset.spec.action_high,
        "observation_sha256": observation_sha256(dataset.columns()["observation"]),
    }


def load_derived(
    entry: dict[str, Any], source: TrajectoryDataset, source_sha256: str
) -> TrajectoryDataset:
    """Re-render ``entry``'s data set from its (already sha-verified) source and check the
    result against every recorded field."""
    if entry.get("name") != NAME or entry.get("source") != SOURCE:
        raise DatasetError(f"unknown derived data set entry {entry.get('name')!r}")
    if entry.get("renderer_version") != RENDERER_VERSION or entry.get("image_size") != IMAGE_SIZE:
        raise DatasetError(
            f"{NAME}: derived.json records renderer version {entry.get('renderer_version')} and "
            f"image size {entry.get('image_size')}; this code renders version {RENDERER_VERSION} "
            f"at {IMAGE_SIZE} px: regenerate the entry (worldflux.data.pixels.derived_entry)"
        )
    if entry.get("source_sha256") != source_sha256:
        raise DatasetError(
            f"{NAME}: derived from {SOURCE} with sha256 {entry.get('source_sha256')}, but the "
            f"bundled {SOURCE} has sha256 {source_sha256}"
        )
    dataset = build_cartpole_pixels(source, int(entry["episodes_used"]))
    actual = derived_entry(dataset, source_sha256)
    changed = sorted(k for k in actual if actual[k] != entry.get(k))
    if changed:
        raise DatasetError(
            f"{NAME}: the rendered data set differs from derived.json in {changed} (e.g. "
            f"observation_sha256 {actual['observation_sha256']}, recorded "
            f"{entry.get('observation_sha256')}): the renderer changed; bump RENDERER_VERSION "
            "and regenerate the entry"
        )
    return dataset
