"""Real versus imagined, as pictures: what a release manager looks at before trusting a number.

One fixed held-out segment (the first of ``fixed_batches(1, 1, ..., seed=PROBE_SEED)``): the
model filters ``context`` recorded steps, then imagines ``horizon`` steps under the recorded
actions (quality/skill.py's ``imagine``, the same path the skill probe measures). Step 0 is the
last filtered step, decoded (or read out), next to its real observation.

- Frames a family decodes: ``strip_png``, the real frames on the top row and the imagined ones
  below, one column per step; ``rollout_gif``, the two side by side (real left), one step per
  animation frame.
- Vectors (or frames read out of a decoder-free state): ``trajectory_png``, each observation
  dimension over the steps, real solid and imagined dashed.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

import worldflux
from quality.skill import PROBE_SEED, imagine, observation_predictor
from worldflux import WorldModel
from worldflux.data import TrajectoryDataset

DRAWN_SIDE = 64  # smaller frames are enlarged (nearest neighbour) to about this many pixels
GAP = 2  # pixels between frames, in the background colour
GAP_COLOUR = (255, 255, 255)
GIF_STEP_MS = 250
MAX_PLOTTED_DIMS = 8
PICTURE_FILES = ("rollout.png", "rollout.gif")  # what ``pictures`` may return


@dataclass(frozen=True)
class Rollout:
    real: npt.NDArray[np.float32]  # [T + 1, *obs_shape]: the last filtered step, then T more
    imagined: npt.NDArray[np.float32]  # the same shape: decoded / read out of the model's states
    frames: bool  # image observations the family decodes itself

    @property
    def steps(self) -> int:
        return int(self.real.shape[0])


@torch.no_grad()
def imagined_rollout(
    model: WorldModel,
    train: TrajectoryDataset,
    held_out: TrajectoryDataset,
    horizon: int,
    context: int = 5,
) -> Rollout:
    was_training = model.training
    model.eval()
    try:
        batch = held_out.fixed_batches(1, 1, context + horizon, seed=PROBE_SEED)[0]
        batch = batch.to(model.device)
        actions = batch.action[:, context:].transpose(0, 1)
        space, predict = observation_predictor(model, train)
        filtered, imagined = imagine(model, batch, context, actions)
        shape = tuple(train.spec.obs_shape)
        predicted = torch.stack([predict(s)[0] for s in (filtered, *imagined)])
        real = batch.obs[0, context - 1 :]
    finally:
        model.train(was_training)
    frames = space == "decoder" and len(shape) == 3
    return Rollout(
        real=real.reshape(-1, *shape).float().cpu().numpy(),
        imagined=predicted.reshape(-1, *shape).float().cpu().numpy(),
        frames=frames,
    )


def scale_for(side: int) -> int:
    """How many times a frame of ``side`` pixels is enlarged: 32 px twice, 64 px not at all
    (a strip of 64 px colour frames is already ~180 KB, and reports show every seed's)."""
    return max(1, DRAWN_SIDE // side)


def _rgb(frame: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """[C, H, W] in [0, 1] (C = 1 or 3) -> [H * s, W * s, 3] bytes, s = ``scale_for(W)``;
    values outside [0, 1] (an imagined frame may overshoot) are clipped for display only."""
    image = np.clip(frame, 0.0, 1.0).transpose(1, 2, 0)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = np.round(image * 255).astype(np.uint8)
    scale = scale_for(image.shape[1])
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _grid(rows: list[list[npt.NDArray[np.uint8]]]) -> npt.NDArray[np.uint8]:
    height, width = rows[0][0].shape[:2]
    columns = max(len(r) for r in rows)
    canvas = np.empty(
        (len(rows) * (height + GAP) - GAP, columns * (width + GAP) - GAP, 3), dtype=np.uint8
    )
    canvas[:] = GAP_COLOUR
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            top, left = i * (height + GAP), j * (width + GAP)
            canvas[top : top + height, left : left + width] = image
    return canvas


def _png(pixels: npt.NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def strip_png(rollout: Rollout) -> bytes:
    """Real frames on top, imagined below; one column per step."""
    _require_frames(rollout)
    return _png(_grid([[_rgb(f) for f in rollout.real], [_rgb(f) for f in rollout.imagined]]))


def rollout_gif(rollout: Rollout) -> bytes:
    """Real | imagined side by side, one step per animation frame, looping."""
    from PIL import Image

    _require_frames(rollout)
    pictures = [
        Image.fromarray(_grid([[_rgb(real), _rgb(imagined)]]))
        for real, imagined in zip(rollout.real, rollout.imagined, strict=True)
    ]
    buffer = io.BytesIO()
    pictures[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=GIF_STEP_MS,
        loop=0,
    )
    return buffer.getvalue()


def trajectory_png(rollout: Rollout, title: str = "") -> bytes:
    """Each observation dimension (the first ``MAX_PLOTTED_DIMS``) over the steps."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    real = rollout.real.reshape(rollout.steps, -1)[:, :MAX_PLOTTED_DIMS]
    imagined = rollout.imagined.reshape(rollout.steps, -1)[:, :MAX_PLOTTED_DIMS]
    dims = real.shape[1]
    figure, axes = plt.subplots(dims, 1, figsize=(6, 1.3 * dims + 0.6), sharex=True, squeeze=False)
    steps = np.arange(rollout.steps)
    for d, axis in enumerate(axes[:, 0]):
        axis.plot(steps, real[:, d], color="black", linewidth=1.2, label="real")
        axis.plot(steps, imagined[:, d], color="tab:orange", linestyle="--", label="imagined")
        axis.set_ylabel(f"obs[{d}]")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize="small")
    axes[0, 0].set_title(title or "real vs imagined (step 0: last filtered step)", fontsize="small")
    axes[-1, 0].set_xlabel("imagined step")
    figure.subplots_adjust(left=0.14, right=0.98, top=0.93, bottom=0.08, hspace=0.15)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _require_frames(rollout: Rollout) -> None:
    if not rollout.frames:
        raise ValueError("frames are drawn for image families with a decoder; use trajectory_png")


def pictures(rollout: Rollout, title: str = "") -> dict[str, bytes]:
    """The files to publish for a rollout: name -> bytes."""
    if rollout.frames:
        return {"rollout.png": strip_png(rollout), "rollout.gif": rollout_gif(rollout)}
    return {"rollout.png": trajectory_png(rollout, title)}


def of_checkpoint(
    path: str, data: TrajectoryDataset, horizon: int, title: str = ""
) -> dict[str, bytes]:
    """The pictures of a saved checkpoint on its data set's held-out split (the split the
    seed run measured on)."""
    from quality.seed_run import split

    model = worldflux.from_pretrained(path)
    train, held_out = split(data)
    return pictures(imagined_rollout(model, train, held_out, horizon), title)


@dataclass(frozen=True)
class Picture:
    """A stored real-versus-imagined PNG and whether it shows frames (a strip) or a plot."""

    png: bytes
    frames: bool

    @property
    def caption(self) -> str:
        if self.frames:
            return "real (top row) vs imagined (bottom row); step 0 = the last filtered frame"
        return "real (solid) vs imagined (dashed) observations; step 0 = the last filtered step"

    def markdown(self, title: str) -> str:
        """Inline Markdown (a data URI): the report, the model card and the Dagster UI show it
        without fetching anything."""
        encoded = base64.b64encode(self.png).decode("ascii")
        return f"![{title}](data:image/png;base64,{encoded})"
