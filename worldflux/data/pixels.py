"""Image observations derived from a bundled data set: CartPole frames rendered from the true
state, registered in ``RENDERINGS`` (one entry per derived data set).

``cartpole_pixels`` keeps the actions, rewards, episode ends and episode ids of ``cartpole``
(all 50 episodes: 20 MB of frames, rendered in ~2 s; a CNN trained on the first 20
learned the training episodes and not the held-out ones, docs/worldflux.md) and replaces each
observation (x, x_dot, theta, theta_dot) with a 1 x 32 x 32 frame of bytes (models see them
divided by 255, in [0, 1]):

    cart   a filled 7 x 5 px rectangle centred at column 16 + x * 13 / 2.4, row 24
    pole   a 2 px thick segment of 14 px from the cart's top edge, at angle theta from vertical

``cartpole_rgb`` is the same scene at twice the resolution in colour, 3 x 64 x 64 (the image
size of DreamerV3's and WorldFlux's image configurations), also over all 50 episodes (240 MB,
rendered in ~5 s): a blue cart on a grey track, an orange pole, a pale background.

Edges are anti-aliased by pixel-centre distance (coverage = clip(half_width + 0.5 - d, 0, 1)),
colours are blended by coverage. The geometry is computed in float64 and stored as bytes
(255 levels), as a camera would store it: a last-bit difference in a platform's ``sin`` then cannot
change a stored pixel, so the sha256 of the frames identifies the rendering, not the machine.
Velocities are not visible in one frame; a model has to infer them from consecutive frames or
the action.

Nothing is stored on disk: ``derived.json`` (next to ``manifest.json``) records the renderer
and its version, the source data set and its file sha256, the image size, the episodes used and
the sha256 of the rendered observation bytes, and ``load_derived`` re-renders and checks all of
it, so any change of the renderer fails loudly instead of silently training on other frames.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from worldflux.core.errors import DatasetError
from worldflux.data.dataset import TrajectoryDataset
from worldflux.data.schema import FRAME_PEAK, DatasetSpec

DERIVED_NAME = "derived.json"
# Rows rendered at once: bounds the float64 scratch memory of the 64 x 64 colour frames.
_CHUNK = 512

States = npt.NDArray[np.floating[Any]]
Frames = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class CartPoleScene:
    """Where the cart and the pole are drawn, in pixels of a ``size`` x ``size`` frame."""

    size: int
    px_per_unit: float  # maps the track's +-2.4 to +-(size * 13 / 32) px
    cart_row: float
    cart_half: tuple[float, float]  # half width, half height
    pole_length: float
    pole_half_thickness: float
    # Rows the pole can touch: from the pole length plus its anti-aliased half thickness above
    # the cart's top edge down to that edge plus the same margin (CartPole ends at ~0.21 rad,
    # the pole never goes below horizontal); only those rows are computed, ~40% less work.
    pole_rows: tuple[int, int]

    def coverage(self, state: States) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Cart coverage [N, H, W] and pole coverage [N, rows, W] in [0, 1] for states [N, 4]."""
        centre = np.arange(self.size, dtype=np.float64) + 0.5  # pixel centres
        cx = self.size / 2 + state[:, 0] * self.px_per_unit  # [N]
        theta = state[:, 2]
        # Cart: a box is the max of its two axis distances, so it separates into [N, W] and [H].
        dx = np.abs(centre[None, :] - cx[:, None]) - self.cart_half[0]  # [N, W]
        dy = np.abs(centre - self.cart_row) - self.cart_half[1]  # [H]
        cart = np.clip(0.5 - np.maximum(dx[:, None, :], dy[None, :, None]), 0.0, 1.0)
        # Pole: distance from each pixel centre to the segment a -> a + u * length.
        ay = self.cart_row - self.cart_half[1]
        ux, uy = np.sin(theta)[:, None, None], -np.cos(theta)[:, None, None]  # rows go down
        px = centre[None, None, :] - cx[:, None, None]  # [N, 1, W]
        py = (centre[self.pole_rows[0] : self.pole_rows[1]] - ay)[None, :, None]  # [1, H', 1]
        along = np.clip(px * ux + py * uy, 0.0, self.pole_length)
        ex, ey = px - along * ux, py - along * uy
        pole = np.clip(self.pole_half_thickness + 0.5 - np.sqrt(ex * ex + ey * ey), 0.0, 1.0)
        return cart, pole


GRAY_SCENE = CartPoleScene(
    size=32,
    px_per_unit=13.0 / 2.4,
    cart_row=24.0,
    cart_half=(3.5, 2.5),
    pole_length=14.0,
    pole_half_thickness=1.0,
    pole_rows=(5, 24),
)
RGB_SCENE = CartPoleScene(
    size=64,
    px_per_unit=26.0 / 2.4,
    cart_row=46.0,
    cart_half=(7.0, 5.0),
    pole_length=28.0,
    pole_half_thickness=1.5,
    pole_rows=(10, 44),
)
# Colours (RGB in [0, 1]) of the colour frames, drawn back to front.
BACKGROUND = (0.93, 0.95, 0.98)
TRACK = (0.40, 0.40, 0.42)
TRACK_ROWS = (51, 53)  # under the cart, the whole width
CART = (0.15, 0.35, 0.75)
POLE = (0.85, 0.55, 0.20)


def _states(state: States) -> npt.NDArray[np.float64]:
    states = np.asarray(state, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] != 4:
        raise DatasetError(f"CartPole frames are rendered from states [N, 4], got {states.shape}")
    return states


def _quantize(frames: npt.NDArray[np.float64]) -> Frames:
    return np.round(frames * FRAME_PEAK).astype(np.uint8)


def render_cartpole(state: States) -> Frames:
    """Grey frames [N, 1, 32, 32] of bytes from CartPole states [N, 4]; white on black."""
    scene = GRAY_SCENE
    cart, pole = scene.coverage(_states(state))
    rows = slice(*scene.pole_rows)
    cart[:, rows] = np.maximum(cart[:, rows], pole)
    return _quantize(cart)[:, None]


def render_cartpole_rgb(state: States) -> Frames:
    """Colour frames [N, 3, 64, 64] of bytes from CartPole states [N, 4]."""
    state = _states(state)
    scene = RGB_SCENE
    out = np.empty((len(state), 3, scene.size, scene.size), dtype=np.uint8)
    for start in range(0, len(state), _CHUNK):
        cart, pole = scene.coverage(state[start : start + _CHUNK])
        image = np.empty((len(cart), scene.size, scene.size, 3))
        image[:] = BACKGROUND
        image[:, slice(*TRACK_ROWS)] = TRACK
        for colour, alpha, rows in (
            (CART, cart, slice(None)),
            (POLE, pole, slice(*scene.pole_rows)),
        ):
            a = alpha[..., None]
            image[:, rows] = image[:, rows] * (1.0 - a) + np.asarray(colour) * a
        out[start : start + len(cart)] = _quantize(image).transpose(0, 3, 1, 2)
    return out


@dataclass(frozen=True)
class Rendering:
    """A derived image data set: which bundled source, drawn by which renderer, how many of
    its episodes. ``version`` changes whenever the renderer's output does."""

    name: str
    source: str
    render: Callable[[States], Frames]
    obs_shape: tuple[int, int, int]
    episodes: int
    version: int

    @property
    def renderer(self) -> str:
        return f"{self.render.__module__}.{self.render.__name__}"

    def build(self, source: TrajectoryDataset, episodes: int | None = None) -> TrajectoryDataset:
        """The first ``episodes`` (default: this rendering's) of ``source``, with rendered
        frames as observations."""
        if source.spec.obs_shape != (4,) or not source.spec.discrete:
            raise DatasetError(f"{self.name} renders CartPole states, got spec {source.spec}")
        col = source.columns()
        keep = col["episode"] < (self.episodes if episodes is None else episodes)
        spec = DatasetSpec(
            obs_shape=self.obs_shape,
            action_dim=source.spec.action_dim,
            discrete=True,
            action_low=source.spec.action_low,
            action_high=source.spec.action_high,
        )
        parts = {key: value[keep] for key, value in col.items() if key != "observation"}
        return TrajectoryDataset(
            name=self.name, spec=spec, observation=self.render(col["observation"][keep]), **parts
        )


RENDERINGS = {
    r.name: r
    for r in (
        Rendering("cartpole_pixels", "cartpole", render_cartpole, (1, 32, 32), 50, 1),
        Rendering("cartpole_rgb", "cartpole", render_cartpole_rgb, (3, 64, 64), 50, 1),
    )
}


def observation_sha256(observation: Frames) -> str:
    """sha256 of the frames' bytes."""
    return hashlib.sha256(np.ascontiguousarray(observation, dtype=np.uint8).tobytes()).hexdigest()


def derived_entry(dataset: TrajectoryDataset, source_sha256: str) -> dict[str, Any]:
    """The ``derived.json`` record of ``dataset`` (what ``load_derived`` verifies)."""
    rendering = RENDERINGS[dataset.name]
    return {
        "name": rendering.name,
        "derived": True,
        "source": rendering.source,
        "source_sha256": source_sha256,
        "renderer": rendering.renderer,
        "renderer_version": rendering.version,
        "image_size": rendering.obs_shape[-1],
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
    rendering = RENDERINGS.get(str(entry.get("name")))
    if rendering is None or entry.get("source") != rendering.source:
        raise DatasetError(
            f"unknown derived data set entry {entry.get('name')!r} (from "
            f"{entry.get('source')!r}); this code renders {sorted(RENDERINGS)}"
        )
    name, size = rendering.name, rendering.obs_shape[-1]
    if entry.get("renderer_version") != rendering.version or entry.get("image_size") != size:
        raise DatasetError(
            f"{name}: derived.json records renderer version {entry.get('renderer_version')} and "
            f"image size {entry.get('image_size')}; this code renders version "
            f"{rendering.version} at {size} px: regenerate the entry "
            "(worldflux.data.pixels.derived_entry)"
        )
    if entry.get("source_sha256") != source_sha256:
        raise DatasetError(
            f"{name}: derived from {rendering.source} with sha256 {entry.get('source_sha256')}, "
            f"but the bundled {rendering.source} has sha256 {source_sha256}"
        )
    dataset = rendering.build(source, int(entry["episodes_used"]))
    actual = derived_entry(dataset, source_sha256)
    changed = sorted(k for k in actual if actual[k] != entry.get(k))
    if changed:
        raise DatasetError(
            f"{name}: the rendered data set differs from derived.json in {changed} (e.g. "
            f"observation_sha256 {actual['observation_sha256']}, recorded "
            f"{entry.get('observation_sha256')}): the renderer changed; bump its version in "
            "RENDERINGS and regenerate the entry"
        )
    return dataset
