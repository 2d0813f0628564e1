from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import worldflux
from worldflux import ConfigError, Maturity, WorldModel, register_family
from worldflux.core.types import Batch, LossOutput, ModelOutput, State

ROOT = Path(__file__).resolve().parents[2]


def test_list_models_reports_families_presets_and_maturity() -> None:
    entries = {e["family"]: e for e in worldflux.list_models()}
    assert entries["dreamerv3"]["maturity"] == "reference"
    assert entries["tdmpc2"]["maturity"] == "reference"
    for entry in entries.values():
        assert {"ci", "small"} <= set(entry["presets"])
    assert {"xs", "s", "m", "l", "xl"} <= set(entries["dreamerv3"]["presets"])
    assert {"1m", "5m", "19m", "48m", "317m"} <= set(entries["tdmpc2"]["presets"])


def test_alias_resolves_to_the_family() -> None:
    model = worldflux.create_world_model("dreamer:ci", obs_shape=(3,), action_dim=1)
    assert model.family == "dreamerv3"
    assert model.spec.family == "dreamerv3"


@pytest.mark.parametrize(
    ("model_id", "overrides", "expected"),
    [
        ("dreamerv4:ci", {}, "did you mean 'dreamerv3'"),
        ("tdmpc2:smal", {}, "did you mean 'small'"),
        ("tdmpc2", {}, "'<family>:<preset>'"),
        ("dreamerv3:ci", {"hiden": 8}, "did you mean 'hidden'"),
        ("dreamerv3:ci", {"hidden": "wide"}, "must be int"),
        ("tdmpc2:ci", {"latent": 12}, "multiple of simnorm_dim"),
    ],
)
def test_bad_ids_and_overrides_name_the_valid_choices(
    model_id: str, overrides: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        worldflux.create_world_model(model_id, obs_shape=(4,), action_dim=2, **overrides)


def test_unknown_family_lists_valid_families() -> None:
    with pytest.raises(ConfigError) as info:
        worldflux.create_world_model("nope:ci", obs_shape=(4,), action_dim=2)
    assert "dreamerv3" in str(info.value)
    assert "tdmpc2" in str(info.value)


def test_overrides_change_the_architecture() -> None:
    model = worldflux.create_world_model("dreamerv3:ci", obs_shape=(4,), action_dim=2, deter=16)
    assert model.config.deter == 16
    assert model.gru.hidden_size == 16


def test_paper_preset_builds() -> None:
    model = worldflux.create_world_model("tdmpc2:1m", obs_shape=(5,), action_dim=2)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0.5e6 < params < 3e6  # the paper's "1M" size class


@dataclasses.dataclass(frozen=True)
class LinearConfig:
    width: int = 4


class LinearModel(WorldModel):
    """A tiny family defined in a test: nothing else in the library knows it."""

    def __init__(self, spec: worldflux.ModelSpec) -> None:
        super().__init__(spec)
        self.net = torch.nn.Linear(spec.obs_shape[0] + spec.action_dim, spec.obs_shape[0])

    def encode(self, obs: torch.Tensor) -> State:
        return State({"obs": obs})

    def transition(self, state: State, action: torch.Tensor) -> State:
        return State({"obs": self.net(torch.cat([state["obs"], action], -1))})

    def update(self, state: State, action: torch.Tensor, obs: torch.Tensor) -> State:
        return State({"obs": obs})

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput(observation=state["obs"])

    def loss(self, batch: Batch) -> LossOutput:
        pred = self.net(torch.cat([batch.obs[:, :-1], batch.action[:, 1:]], -1))
        mse = (pred - batch.obs[:, 1:]).pow(2).mean()
        return LossOutput(mse, {"mse": mse}, {"world_model_loss": mse.item()})


def test_a_family_defined_outside_the_library_registers_and_round_trips(tmp_path: Path) -> None:
    register_family(
        "test_linear",
        presets={"ci": LinearConfig(), "small": LinearConfig(width=8)},
        maturity=Maturity.EXPERIMENTAL,
        description="test family",
    )(LinearModel)
    model = worldflux.create_world_model("test_linear:ci", obs_shape=(3,), action_dim=2)
    assert "test_linear" in {e["family"] for e in worldflux.list_models()}
    model.save_pretrained(tmp_path)
    again = worldflux.from_pretrained(tmp_path)
    assert isinstance(again, LinearModel)
    assert torch.equal(again.net.weight, model.net.weight)


def test_dropping_one_module_into_models_adds_a_family(tmp_path: Path) -> None:
    """Copy the package, add one file under worldflux/models/, and nothing else."""
    shutil.copytree(ROOT / "worldflux", tmp_path / "worldflux")
    (tmp_path / "worldflux" / "models" / "droppedin.py").write_text(
        textwrap.dedent(
            """
            import dataclasses
            import torch
            from worldflux import Maturity, WorldModel, register_family

            @dataclasses.dataclass(frozen=True)
            class Config:
                width: int = 2

            @register_family("droppedin", presets={"ci": Config(), "small": Config(4)},
                             maturity=Maturity.SKELETON, description="dropped in")
            class DroppedIn(WorldModel):
                def __init__(self, spec):
                    super().__init__(spec)
                    self.w = torch.nn.Linear(spec.config.width, 1)
            """
        )
    )
    code = (
        "import worldflux; m = worldflux.create_world_model('droppedin:small', "
        "obs_shape=(2,), action_dim=1); "
        "print([e['maturity'] for e in worldflux.list_models() if e['family']=='droppedin'][0], "
        "m.w.in_features)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["skeleton", "4"]


def test_create_world_model_for_a_data_set_spec() -> None:
    from worldflux.data import load_bundled

    cartpole = load_bundled("cartpole").spec
    model = worldflux.create_world_model_for("tdmpc2:ci", cartpole)
    assert model.spec.obs_shape == (4,)
    assert model.spec.action_dim == 2
    assert model.config.discrete_actions is True  # taken from the spec
    pendulum = load_bundled("pendulum").spec
    assert worldflux.create_world_model_for("tdmpc2:ci", pendulum).config.discrete_actions is False
    forced = worldflux.create_world_model_for("tdmpc2:ci", cartpole, discrete_actions=False)
    assert forced.config.discrete_actions is False
    dreamer = worldflux.create_world_model_for("dreamer:ci", cartpole)  # no such field: untouched
    assert dreamer.spec.action_dim == 2


def test_a_taken_family_name_cannot_be_registered_by_another_class() -> None:
    class Impostor(LinearModel):
        pass

    with pytest.raises(ConfigError, match="already registered"):
        register_family(
            "dreamerv3",
            presets={"ci": LinearConfig(), "small": LinearConfig()},
            maturity=Maturity.EXPERIMENTAL,
            description="impostor",
        )(Impostor)
    assert worldflux.create_world_model("dreamerv3:ci", obs_shape=(3,), action_dim=1).family == (
        "dreamerv3"
    )
