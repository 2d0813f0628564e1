"""Flat trajectory data sets: one row per observation, episodes stored back to back.

Row t of an episode holds observation t, the action that led to it (zeros, or index 0 for
discrete actions, at the episode's first row), the reward received on arriving at it (0 at the
first row) and whether the episode ended there: ``terminated`` (a true end) or ``truncated``
(a time limit). An episode of T environment steps therefore has T+1 rows. This is the layout the
world models train on (the Dreamer convention), so sampling is a plain gather of row windows.

Observations are float32, or, for frames [C, H, W], uint8 intensities k standing for k / 255 (as
a camera stores them, and as DreamerV3 keeps its replay: a quarter of the memory; 50 episodes of
3 x 64 x 64 CartPole frames take 240 MB instead of 960 MB). Models always see float32:
``observations`` and ``batch_at`` divide uint8 frames by 255, which gives exactly the float32
values of frames quantized to 255 levels.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import safetensors.numpy
import torch

from worldflux.core.errors import DatasetError
from worldflux.core.files import atomic_write_bytes, canonical_json
from worldflux.core.types import Batch
from worldflux.data.schema import (
    COLUMN_DTYPES,
    FRAME_DTYPE,
    FRAME_PEAK,
    DatasetSpec,
    is_int,
    validate_columns,
)

Array = npt.NDArray[Any]

__all__ = ["DatasetSpec", "TrajectoryDataset", "frames_to_bytes", "frames_to_float"]

# Bool columns go to disk as uint8: safetensors' bool support varies between readers.
BOOL_COLUMNS = ("terminated", "truncated")
# The one metadata key. A single key holding sorted-key JSON keeps the header byte-stable.
METADATA_KEY = "worldflux.dataset"
FORMAT_VERSION = 1
_DIGEST_ROWS = 1024  # frames stored as bytes are hashed as float32 this many rows at a time


class TrajectoryDataset:
    """Validated, read-only trajectory columns plus the precomputed tables sampling needs."""

    def __init__(
        self,
        *,
        name: str,
        spec: DatasetSpec,
        observation: Array,
        action: Array,
        reward: Array,
        terminated: Array,
        truncated: Array,
        episode: Array,
        step: Array,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise DatasetError(f"data set name must be a non-empty string, got {name!r}")
        self.name = name
        self.spec = spec
        columns = {
            "observation": observation,
            "action": action,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "episode": episode,
            "step": step,
        }
        # Private read-only copies: cached tables below stay valid and callers cannot mutate us.
        self._columns: dict[str, Array] = {}
        for key, value in columns.items():
            array = np.array(value, copy=True, order="C")
            array.setflags(write=False)
            self._columns[key] = array
        validate_columns(self._columns, spec)

        col = self._columns
        self._lengths = np.bincount(col["episode"]).astype(np.int64)
        self._lengths.setflags(write=False)
        is_first = col["step"] == 0
        # Float tables of the actions and flags, gathered directly by ``sample``. Frames stored
        # as bytes are converted per batch instead: a float copy would undo the saving.
        self._action_f = _action_features(col["action"], is_first, spec)
        self._terminated_f = col["terminated"].astype(np.float32)
        self._truncated_f = col["truncated"].astype(np.float32)
        self._is_first_f = is_first.astype(np.float32)
        self._starts: dict[int, npt.NDArray[np.int64]] = {}
        self._digest: str | None = None

    # ----------------------------------------------------------------------------- shape
    def __len__(self) -> int:
        return int(self._columns["step"].shape[0])

    def __repr__(self) -> str:
        return (
            f"TrajectoryDataset(name={self.name!r}, rows={len(self)}, "
            f"episodes={self.num_episodes}, spec={self.spec})"
        )

    @property
    def num_episodes(self) -> int:
        return int(self._lengths.shape[0])

    @property
    def episode_lengths(self) -> npt.NDArray[np.int64]:
        """Rows per episode (environment steps + 1)."""
        return self._lengths

    @property
    def num_terminated(self) -> int:
        return int(self._columns["terminated"].sum())

    @property
    def num_truncated(self) -> int:
        return int(self._columns["truncated"].sum())

    def columns(self) -> dict[str, Array]:
        """The stored columns (read-only numpy arrays), keyed by name. The observation column
        is as stored (uint8 frames included); ``observations`` gives what models see."""
        return dict(self._columns)

    @property
    def frames_as_bytes(self) -> bool:
        """Whether observations are stored as uint8 frames (models see them divided by 255)."""
        return self._columns["observation"].dtype == FRAME_DTYPE

    def observations(self, rows: Array | slice | None = None) -> npt.NDArray[np.float32]:
        """The observations of ``rows`` (all by default) as float32, as models see them."""
        stored = self._columns["observation"]
        part = stored if rows is None else stored[rows]
        return frames_to_float(part) if self.frames_as_bytes else part

    def observation_bounds(
        self, axis: int | tuple[int, ...] = 0
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The lowest and highest observation over ``axis`` of the stored column, as models see
        them (taken on the stored values: the conversion of frames is monotonic, so no float
        copy of them is needed)."""
        stored = self._columns["observation"]
        low, high = stored.min(axis=axis), stored.max(axis=axis)
        if self.frames_as_bytes:
            return frames_to_float(low), frames_to_float(high)
        return low, high

    def to_table_columns(self) -> dict[str, Array]:
        """1-D columns for table tools: ``obs_i`` per flattened observation entry, ``action``
        (discrete index) or ``action_i``, then the scalar columns."""
        col = self._columns
        rows = len(self)
        table: dict[str, Array] = {}
        flat_obs = self.observations().reshape(rows, -1)
        for i in range(flat_obs.shape[1]):
            table[f"obs_{i}"] = flat_obs[:, i]
        if self.spec.discrete:
            table["action"] = col["action"]
        else:
            for i in range(self.spec.action_dim):
                table[f"action_{i}"] = col["action"][:, i]
        for key in ("reward", "terminated", "truncated", "episode", "step"):
            table[key] = col[key]
        return table

    @property
    def digest(self) -> str:
        """sha256 of the columns' canonical bytes (name, little-endian dtype, shape, data).

        Independent of the file format, of ``name`` and of how frames are stored (observations
        are hashed as the float32 models see), so it identifies the data itself.
        """
        if self._digest is None:
            hasher = hashlib.sha256()
            for key in sorted(self._columns):
                array = self._columns[key]
                if key == "observation" and self.frames_as_bytes:
                    hasher.update(f"{key}:<f4:{list(array.shape)}\n".encode())
                    for start in range(0, len(array), _DIGEST_ROWS):  # no float copy of all
                        rows = self.observations(slice(start, start + _DIGEST_ROWS))
                        hasher.update(np.ascontiguousarray(rows, dtype="<f4").tobytes())
                    continue
                array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
                hasher.update(f"{key}:{array.dtype.str}:{list(array.shape)}\n".encode())
                hasher.update(array.tobytes())
            self._digest = hasher.hexdigest()
        return self._digest

    # ----------------------------------------------------------------------------- split
    def split(
        self, held_out_fraction: float, seed: int
    ) -> tuple[TrajectoryDataset, TrajectoryDataset]:
        """Split by whole episodes into (train, held_out); deterministic given ``seed``.

        ``round(held_out_fraction * episodes)`` random episodes are held out; both parts keep
        the original episode order and are renumbered from 0.
        """
        if not 0.0 < held_out_fraction < 1.0:
            raise DatasetError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
        total = self.num_episodes
        held = round(held_out_fraction * total)
        if held < 1 or held > total - 1:
            raise DatasetError(
                f"cannot split {self.name!r}: held_out_fraction={held_out_fraction} of "
                f"{total} episodes holds out {held}; each side needs at least one episode"
            )
        order = np.random.default_rng(seed).permutation(total)
        held_ids = np.sort(order[:held])
        train_ids = np.sort(order[held:])
        return (
            self._subset(train_ids, f"{self.name}:train"),
            self._subset(held_ids, f"{self.name}:held_out"),
        )

    def _subset(self, episode_ids: npt.NDArray[np.int64], name: str) -> TrajectoryDataset:
        col = self._columns
        mask = np.isin(col["episode"], episode_ids)
        renumber = np.full(self.num_episodes, -1, dtype=np.int64)
        renumber[episode_ids] = np.arange(episode_ids.shape[0], dtype=np.int64)
        parts = {key: value[mask] for key, value in col.items()}
        parts["episode"] = renumber[parts["episode"]]
        return TrajectoryDataset(name=name, spec=self.spec, **parts)

    # ---------------------------------------------------------------------------- sample
    def valid_starts(self, seq_len: int) -> npt.NDArray[np.int64]:
        """Global row indices where a ``seq_len`` window fits inside its episode (cached)."""
        if not is_int(seq_len) or seq_len < 1:
            raise DatasetError(f"seq_len must be an int >= 1, got {seq_len!r}")
        starts = self._starts.get(seq_len)
        if starts is None:
            col = self._columns
            fits = col["step"] + seq_len <= self._lengths[col["episode"]]
            starts = np.flatnonzero(fits).astype(np.int64)
            if starts.shape[0] == 0:
                raise DatasetError(
                    f"no episode of {self.name!r} has seq_len={seq_len} rows; the longest has "
                    f"{int(self._lengths.max())}"
                )
            starts.setflags(write=False)
            self._starts[seq_len] = starts
        return starts

    def sample_indices(
        self, rng: np.random.Generator, batch_size: int, seq_len: int
    ) -> npt.NDArray[np.int64]:
        """[batch_size, seq_len] row indices; every row is a window inside one episode, its
        start uniform over all valid starts. Only ``rng`` is consumed."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        if not is_int(batch_size) or batch_size < 1:
            raise DatasetError(f"batch_size must be an int >= 1, got {batch_size!r}")
        starts = self.valid_starts(seq_len)
        picked = starts[rng.integers(0, starts.shape[0], size=batch_size)]
        return picked[:, None] + np.arange(seq_len, dtype=np.int64)

    def batch_at(self, index: npt.NDArray[np.int64]) -> Batch:
        """Gather the rows of an index matrix into a Batch (discrete actions one-hot)."""
        return Batch(
            obs=torch.from_numpy(self.observations(index)),
            action=torch.from_numpy(self._action_f[index]),
            reward=torch.from_numpy(self._columns["reward"][index]),
            terminated=torch.from_numpy(self._terminated_f[index]),
            truncated=torch.from_numpy(self._truncated_f[index]),
            is_first=torch.from_numpy(self._is_first_f[index]),
        )

    def sample(self, rng: np.random.Generator, batch_size: int, seq_len: int) -> Batch:
        """A random Batch of shape [batch_size, seq_len, ...] drawn with ``rng`` only."""
        return self.batch_at(self.sample_indices(rng, batch_size, seq_len))

    def fixed_batches(
        self, num_batches: int, batch_size: int, seq_len: int, seed: int
    ) -> list[Batch]:
        """Deterministic evaluation batches: the same arguments give the same batches."""
        if not is_int(num_batches) or num_batches < 1:
            raise DatasetError(f"num_batches must be an int >= 1, got {num_batches!r}")
        rng = np.random.default_rng(seed)
        return [self.sample(rng, batch_size, seq_len) for _ in range(num_batches)]

    # --------------------------------------------------------------------------- storage
    def to_bytes(self) -> bytes:
        """The safetensors serialization (deterministic: same data, same bytes)."""
        tensors = {
            key: value.astype(np.uint8) if key in BOOL_COLUMNS else value
            for key, value in self._columns.items()
        }
        meta = {"format": FORMAT_VERSION, "name": self.name, "spec": self.spec.to_json_dict()}
        metadata = {METADATA_KEY: canonical_json(meta)}
        return safetensors.numpy.save(tensors, metadata=metadata)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write a safetensors file atomically (readers never see half a file); return its
        sha256."""
        data = self.to_bytes()
        atomic_write_bytes(Path(path), data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], expected_sha256: str | None = None
    ) -> TrajectoryDataset:
        """Read a file written by ``save``. With ``expected_sha256`` the bytes are verified
        before anything is parsed. Every problem raises DatasetError naming the file."""
        source = Path(path)
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read data set file {source}: {exc}") from exc
        if expected_sha256 is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected_sha256:
                raise DatasetError(
                    f"data set file {source} is corrupted or was changed: sha256 {actual}, "
                    f"expected {expected_sha256}; regenerate it (scripts/generate_datasets.py)"
                )
        try:
            return cls.from_bytes(data)
        except DatasetError as exc:
            raise DatasetError(f"data set file {source}: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> TrajectoryDataset:
        meta = _read_metadata(data)
        try:
            tensors = safetensors.numpy.load(data)
        except Exception as exc:  # the Rust reader raises its own error types
            raise DatasetError(f"unreadable safetensors payload ({exc})") from exc
        if set(tensors) != set(COLUMN_DTYPES):
            raise DatasetError(
                f"columns {sorted(tensors)} do not match the expected {sorted(COLUMN_DTYPES)}"
            )
        for key in BOOL_COLUMNS:
            raw = tensors[key]
            if raw.dtype != np.uint8 or not np.isin(raw, (0, 1)).all():
                raise DatasetError(f"column {key!r} must be stored as uint8 0/1")
            tensors[key] = raw.astype(np.bool_)
        return cls(name=meta["name"], spec=DatasetSpec.from_json_dict(meta["spec"]), **tensors)


def _read_metadata(data: bytes) -> dict[str, Any]:
    """Parse our metadata from the safetensors header (8-byte little-endian length + JSON)."""
    try:
        size = int.from_bytes(data[:8], "little")
        if len(data) < 8 or size > len(data) - 8:
            raise ValueError("header length exceeds the file")
        header = json.loads(data[8 : 8 + size])
        meta = json.loads(header["__metadata__"][METADATA_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"unreadable safetensors header or metadata ({exc!r})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise DatasetError(f"unsupported metadata {meta!r}; expected format {FORMAT_VERSION}")
    if not isinstance(meta.get("name"), str) or "spec" not in meta:
        raise DatasetError(f"metadata needs 'name' and 'spec', got {sorted(meta)}")
    return meta


def frames_to_float(frames: Array) -> npt.NDArray[np.float32]:
    """uint8 intensities -> float32 in [0, 1]. Division by 255 in float32 is correctly rounded,
    so it equals float32(k / 255): the values of frames quantized to 255 levels and stored as
    float32 (tests/worldflux/test_pixels.py checks all 256)."""
    out = np.asarray(frames, dtype=np.float32)
    out /= np.float32(FRAME_PEAK)
    return out


def frames_to_bytes(frames: Array, chunk: int = 1024) -> npt.NDArray[np.uint8] | None:
    """The uint8 frames whose ``frames_to_float`` is bit for bit ``frames`` (float32 frames
    quantized to 255 levels, as rendered or as a camera stores them), or None when any value is
    not such a level; converted ``chunk`` frames at a time."""
    if frames.dtype != np.float32:
        return None
    out = np.empty(frames.shape, dtype=np.uint8)
    for start in range(0, len(frames), chunk):
        part = frames[start : start + chunk]
        levels = np.rint(part * np.float32(FRAME_PEAK))
        if not ((levels >= 0) & (levels <= FRAME_PEAK)).all():
            return None
        out[start : start + chunk] = levels
        # Bit patterns, not values: -0.0 would pass a value comparison and change the digest.
        back = frames_to_float(out[start : start + chunk])
        if not np.array_equal(back.view(np.uint32), np.ascontiguousarray(part).view(np.uint32)):
            return None
    return out


def _action_features(
    action: Array, is_first: npt.NDArray[np.bool_], spec: DatasetSpec
) -> npt.NDArray[np.float32]:
    """The float32 [N, A] actions models see: one-hot for discrete; continuous actions scaled
    from [action_low, action_high] to [-1, 1] (tanh policies and planners work there); zero
    at episode starts in both cases."""
    if spec.discrete:
        features = np.eye(spec.action_dim, dtype=np.float32)[action]
    else:
        scale = np.float32(spec.action_high - spec.action_low)
        features = (2 * (action.astype(np.float32) - spec.action_low) / scale - 1).astype(
            np.float32
        )
    features[is_first] = 0.0
    return np.ascontiguousarray(features)
