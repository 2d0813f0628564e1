"""Resumable training checkpoints: model, optimizer, step and every RNG state, no pickle.

Layout of ``<dir>/step_00000100/``: the model as ``save_pretrained`` writes it, the optimizer
tensors as ``optimizer.safetensors``, and ``trainer_state.json`` (step, optimizer hyper-
parameters, Python and NumPy RNG states, the torch RNG state's sha256). A checkpoint is built
in a hidden temporary folder and renamed into place, so a crash never leaves half of one;
``latest.json`` names the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from worldflux.core.errors import CheckpointError
from worldflux.core.files import atomic_write_json, sha256_file
from worldflux.core.model import WorldModel
from worldflux.core.serialization import WEIGHTS_FILE, save_pretrained

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest.json"


@dataclass(frozen=True)
class TrainingState:
    step: int
    data_rng: dict[str, Any]  # numpy bit generator state


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    state = optimizer.state_dict()
    tensors = {
        f"state.{index}.{key}": value.detach().cpu().contiguous()
        for index, slots in state["state"].items()
        for key, value in slots.items()
    }
    return tensors, state["param_groups"]


def save_checkpoint(
    directory: str | Path,
    *,
    model: WorldModel,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    keep: int = 2,
) -> Path:
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state.step:08d}"
    tmp = root / f".tmp-step_{state.step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp)
    tensors, groups = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    safetensors.torch.save_file(tensors, str(tmp / OPTIMIZER_FILE))
    py_version, py_state, py_gauss = random.getstate()
    atomic_write_json(
        tmp / STATE_FILE,
        {
            "step": state.step,
            "param_groups": groups,
            "rng_numpy": state.data_rng,
            "rng_python": [py_version, list(py_state), py_gauss],
            "optimizer_sha256": sha256_file(tmp / OPTIMIZER_FILE),
        },
    )
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_json(root / LATEST_FILE, {"step": state.step, "path": final.name})
    for old in sorted(root.glob("step_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint under ``directory``, or None if there is none."""
    pointer = Path(directory) / LATEST_FILE
    if not pointer.is_file():
        return None
    path = Path(directory) / json.loads(pointer.read_text())["path"]
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {path.name}, which does not exist")
    return path


def load_checkpoint(
    path: str | Path, *, model: WorldModel, optimizer: torch.optim.Optimizer
) -> TrainingState:
    """Restore model, optimizer and RNG states in place; return the step and data RNG."""
    from worldflux.core.serialization import from_pretrained

    root = Path(path)
    saved = from_pretrained(root, device="cpu")  # verifies sha256 and fingerprint
    if saved.spec != model.spec:
        raise CheckpointError(
            f"{root} holds a {saved.spec.family}:{saved.spec.preset} model whose config "
            "differs from the model being trained; resume with the same model config"
        )
    model.load_state_dict(saved.state_dict())
    state_path = root / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{state_path} is missing; the checkpoint is incomplete")
    meta = json.loads(state_path.read_text())
    opt_path = root / OPTIMIZER_FILE
    if not opt_path.is_file() or sha256_file(opt_path) != meta["optimizer_sha256"]:
        raise CheckpointError(f"{opt_path} is missing or does not match its recorded sha256")
    tensors = safetensors.torch.load_file(str(opt_path))
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("state."):
            _, index, key = name.split(".", 2)
            slots.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    version, py_state, gauss = meta["rng_python"]
    random.setstate((version, tuple(py_state), gauss))
    return TrainingState(step=int(meta["step"]), data_rng=meta["rng_numpy"])


def weights_sha256(path: str | Path) -> str:
    """sha256 of the model weights inside a checkpoint or saved-model folder."""
    return sha256_file(Path(path) / WEIGHTS_FILE)
