"""What a valid trajectory data set is: the spec, the column dtypes and the row convention.

The checks are vectorized so validating the bundled data sets costs a few milliseconds; each
failure raises DatasetError naming the column, the rule and (where useful) the first bad row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from worldflux.core.errors import DatasetError

Array = npt.NDArray[Any]

# Column name -> dtype as stored in memory. ``action`` is float32 or int64 (see DatasetSpec);
# ``observation`` may also be FRAME_DTYPE when the observations are frames [C, H, W].
COLUMN_DTYPES: dict[str, np.dtype[Any] | None] = {
    "observation": np.dtype(np.float32),
    "action": None,
    "reward": np.dtype(np.float32),
    "terminated": np.dtype(np.bool_),
    "truncated": np.dtype(np.bool_),
    "episode": np.dtype(np.int64),
    "step": np.dtype(np.int64),
}

# Frames may be stored as bytes: intensity k of FRAME_DTYPE stands for k / FRAME_PEAK.
FRAME_DTYPE = np.dtype(np.uint8)
FRAME_PEAK = 255.0


@dataclass(frozen=True)
class DatasetSpec:
    """What the rows contain.

    ``action_dim`` is the number of choices when ``discrete``. ``action_low``/``action_high``
    bound the action vector a model sees: the environment's box for continuous actions, and
    0/1 for discrete ones (they reach models one-hot).
    """

    obs_shape: tuple[int, ...]
    action_dim: int
    discrete: bool
    action_low: float
    action_high: float

    def __post_init__(self) -> None:
        shape = tuple(self.obs_shape)
        if not shape or not all(is_int(d) and d > 0 for d in shape):
            raise DatasetError(f"spec obs_shape must be positive ints, got {self.obs_shape!r}")
        object.__setattr__(self, "obs_shape", tuple(int(d) for d in shape))
        if not is_int(self.action_dim) or self.action_dim < 1:
            raise DatasetError(f"spec action_dim must be an int >= 1, got {self.action_dim!r}")
        if not isinstance(self.discrete, bool):
            raise DatasetError(f"spec discrete must be a bool, got {self.discrete!r}")
        low, high = float(self.action_low), float(self.action_high)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise DatasetError(f"spec needs finite action_low < action_high, got {low}, {high}")
        if self.discrete and (low, high) != (0.0, 1.0):
            raise DatasetError(
                f"a discrete spec has action_low=0 and action_high=1 (one-hot), got {low}, {high}"
            )
        object.__setattr__(self, "action_low", low)
        object.__setattr__(self, "action_high", high)

    def env_action(self, model_action: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """Map an action as models see it (one-hot, or scaled to [-1, 1]) back to the
        environment's action: an index, or a value in [action_low, action_high]."""
        if self.discrete:
            return np.asarray(np.argmax(model_action, axis=-1))
        unit = (np.clip(model_action, -1.0, 1.0) + 1.0) / 2.0
        return (self.action_low + unit * (self.action_high - self.action_low)).astype(np.float32)

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["obs_shape"] = list(self.obs_shape)
        return data

    @classmethod
    def from_json_dict(cls, data: object) -> DatasetSpec:
        keys = {"obs_shape", "action_dim", "discrete", "action_low", "action_high"}
        if not isinstance(data, dict) or set(data) != keys:
            raise DatasetError(f"spec must be an object with keys {sorted(keys)}, got {data!r}")
        if not isinstance(data["obs_shape"], list):
            raise DatasetError(f"spec obs_shape must be a list, got {data['obs_shape']!r}")
        return cls(
            obs_shape=tuple(data["obs_shape"]),
            action_dim=data["action_dim"],
            discrete=data["discrete"],
            action_low=data["action_low"],
            action_high=data["action_high"],
        )


def is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def validate_columns(col: dict[str, Array], spec: DatasetSpec) -> None:
    """Check dtypes, shapes and the row convention; raise DatasetError naming the column."""
    rows = col["step"].shape[0] if col["step"].ndim >= 1 else 0
    if rows < 2:
        raise DatasetError(
            f"column 'step' must hold at least 2 rows, got shape {col['step'].shape}"
        )
    action_dtype = np.dtype(np.int64) if spec.discrete else np.dtype(np.float32)
    action_shape: tuple[int, ...] = (rows,) if spec.discrete else (rows, spec.action_dim)
    shapes = {
        "observation": (rows, *spec.obs_shape),
        "action": action_shape,
        "reward": (rows,),
        "terminated": (rows,),
        "truncated": (rows,),
        "episode": (rows,),
        "step": (rows,),
    }
    frames = len(spec.obs_shape) == 3
    for key, expected in COLUMN_DTYPES.items():
        dtype = action_dtype if expected is None else expected
        if key == "observation" and frames and col[key].dtype == FRAME_DTYPE:
            dtype = FRAME_DTYPE
        if col[key].dtype != dtype:
            also = f" (or {FRAME_DTYPE} for frames [C, H, W])" if key == "observation" else ""
            raise DatasetError(
                f"column {key!r} must have dtype {dtype}{also}, got {col[key].dtype}"
            )
        if col[key].shape != shapes[key]:
            raise DatasetError(
                f"column {key!r} must have shape {shapes[key]}, got {col[key].shape}"
            )
    for key in ("observation", "reward") + (() if spec.discrete else ("action",)):
        if col[key].dtype.kind == "f" and not np.isfinite(col[key]).all():
            raise DatasetError(f"column {key!r} holds NaN or Inf values")

    episode, step = col["episode"], col["step"]
    jumps = np.diff(episode)
    if episode[0] != 0 or ((jumps != 0) & (jumps != 1)).any():
        raise DatasetError(
            "column 'episode' must number episodes 0, 1, 2, ... in contiguous row blocks"
        )
    first = np.concatenate(([True], jumps == 1))
    last = np.concatenate((jumps == 1, [True]))
    expected_step = np.arange(rows) - np.maximum.accumulate(np.where(first, np.arange(rows), 0))
    if (step != expected_step).any():
        row = int(np.flatnonzero(step != expected_step)[0])
        raise DatasetError(
            f"column 'step' must count 0, 1, 2, ... within each episode; row {row} "
            f"(episode {int(episode[row])}) has {int(step[row])}, expected {expected_step[row]}"
        )
    if (np.bincount(episode) < 2).any():
        raise DatasetError("column 'episode': every episode needs at least 2 rows (1+ steps)")
    terminated, truncated = col["terminated"], col["truncated"]
    if (terminated & truncated).any():
        row = int(np.flatnonzero(terminated & truncated)[0])
        raise DatasetError(f"columns 'terminated' and 'truncated' are both set at row {row}")
    ends = terminated | truncated
    if (ends != last).any():
        row = int(np.flatnonzero(ends != last)[0])
        raise DatasetError(
            "columns 'terminated'/'truncated': exactly one must be set at each episode's last "
            f"row and none elsewhere; row {row} (episode {int(episode[row])}) violates this"
        )
    if (col["reward"][first] != 0).any():
        raise DatasetError("column 'reward' must be 0 at each episode's first row")

    action = col["action"]
    if spec.discrete:
        if ((action < 0) | (action >= spec.action_dim)).any():
            raise DatasetError(
                f"column 'action' holds indices outside [0, {spec.action_dim}): "
                f"min {int(action.min())}, max {int(action.max())}"
            )
        if (action[first] != 0).any():
            raise DatasetError("column 'action' must be index 0 at each episode's first row")
    else:
        # First rows hold the zero placeholder, which need not lie inside the box.
        taken = action[~first]
        if ((taken < spec.action_low) | (taken > spec.action_high)).any():
            raise DatasetError(
                f"column 'action' leaves [{spec.action_low}, {spec.action_high}]: "
                f"min {float(taken.min())}, max {float(taken.max())}"
            )
        if (action[first] != 0).any():
            raise DatasetError("column 'action' must be all zeros at each episode's first row")
