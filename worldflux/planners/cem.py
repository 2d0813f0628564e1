"""Cross-entropy method planning in a world model's imagination.

The planner only uses the capability contract: ``model.rollout`` must return predicted
rewards (Capability.REWARD_PREDICTION); continues and a terminal value are used when the
family provides them. No family is named here, so swapping dynamics needs no change.
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldflux.core.errors import ConfigError, ContractError
from worldflux.core.model import Capability, WorldModel
from worldflux.core.types import ActionPayload, State


class CEMPlanner:
    """Plans ``horizon`` actions from a single state (batch size 1).

    Continuous: a diagonal Gaussian over the action sequence, refit to the elites each
    iteration, clipped to [action_low, action_high]. Discrete: independent categoricals per
    step, refit to the elites' action frequencies.
    """

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        *,
        discrete: bool = False,
        num_samples: int = 256,
        num_elites: int = 32,
        iterations: int = 4,
        discount: float = 0.99,
        action_low: float = -1.0,
        action_high: float = 1.0,
        init_std: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if horizon < 1 or action_dim < 1:
            raise ConfigError(
                f"CEMPlanner needs horizon >= 1 and action_dim >= 1, got {horizon} and {action_dim}"
            )
        if not 1 <= num_elites <= num_samples:
            raise ConfigError(
                f"CEMPlanner needs 1 <= num_elites ({num_elites}) <= num_samples ({num_samples})"
            )
        if action_low >= action_high:
            raise ConfigError("CEMPlanner needs action_low < action_high")
        self.horizon = horizon
        self.action_dim = action_dim
        self.discrete = discrete
        self.num_samples = num_samples
        self.num_elites = num_elites
        self.iterations = iterations
        self.discount = discount
        self.low, self.high = action_low, action_high
        self.init_std = init_std
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)

    def _returns(self, model: WorldModel, state: State, actions: Tensor) -> Tensor:
        trajectory = model.rollout(state, actions)
        if trajectory.rewards is None:
            raise ContractError(f"{model.family}.rollout returned no rewards")
        discounts = self.discount ** torch.arange(
            self.horizon, dtype=actions.dtype, device=actions.device
        )
        alive = torch.ones_like(trajectory.rewards)
        if trajectory.continues is not None:
            # Reward after a predicted termination does not count.
            alive = torch.cumprod(torch.cat([alive[:1], trajectory.continues[:-1]]), dim=0)
        total = (discounts[:, None] * alive * trajectory.rewards).sum(0)
        if trajectory.values is not None:
            total = total + self.discount**self.horizon * alive[-1] * trajectory.values
        return total

    def _sample(self, mean: Tensor, std_or_probs: Tensor) -> Tensor:
        n, h, a = self.num_samples, self.horizon, self.action_dim
        if self.discrete:
            index = torch.multinomial(
                std_or_probs.repeat(n, 1), 1, replacement=True, generator=self.generator
            ).reshape(n, h)
            return torch.nn.functional.one_hot(index, a).float().transpose(0, 1)
        noise = torch.randn(h, n, a, generator=self.generator)
        return (mean[:, None] + std_or_probs[:, None] * noise).clamp(self.low, self.high)

    @torch.no_grad()
    def plan(self, model: WorldModel, state: State) -> ActionPayload:
        model.require(Capability.REWARD_PREDICTION)
        if state.batch_size != 1:
            raise ContractError(f"plan() takes one state (batch size 1), got {state.batch_size}")
        was_training = model.training
        model.eval()
        try:
            device = model.device
            start = state.map(lambda t: t.to(device).expand(self.num_samples, *t.shape[1:]))
            mean = torch.zeros(self.horizon, self.action_dim).clamp(self.low, self.high)
            spread = torch.full((self.horizon, self.action_dim), self.init_std)
            if self.discrete:
                spread = torch.full((self.horizon, self.action_dim), 1.0 / self.action_dim)
            best, best_return = None, -torch.inf
            for _ in range(self.iterations):
                # Samples are drawn on the CPU (seeded generator), imagined on the model's device.
                actions = self._sample(mean, spread)
                returns = self._returns(model, start, actions.to(device)).cpu()
                elite_idx = returns.topk(self.num_elites).indices
                elites = actions[:, elite_idx]
                if returns[elite_idx[0]] > best_return:
                    best_return = float(returns[elite_idx[0]])
                    best = actions[:, elite_idx[0]]
                if self.discrete:
                    # Add-one smoothing keeps every action possible in the next round.
                    counts = elites.sum(1) + 1.0 / self.action_dim
                    spread = counts / counts.sum(-1, keepdim=True)
                else:
                    mean, spread = elites.mean(1), elites.std(1).clamp_min(1e-3)
        finally:
            model.train(was_training)
        assert best is not None
        if self.discrete:
            plan = torch.nn.functional.one_hot(spread.argmax(-1), self.action_dim).float()
        else:
            plan = mean
        return ActionPayload(
            kind="discrete" if self.discrete else "continuous",
            tensor=plan,
            extras={
                "wf.planner.horizon": self.horizon,
                "wf.planner.expected_return": best_return,
                "wf.planner.best_sequence": best,
            },
        )
