"""Token world model: a causal transformer over tokenized observations and actions (IRIS-style).

Tokens. Each observation x_t (D values) becomes D tokens o_t^1..o_t^D (``BinTokenizer``: symlog,
then V uniform bins). The action taken at step t (row t+1 of a batch, the action that led to
x_{t+1}) is one continuous input a_t, embedded linearly (one-hot rows for discrete actions).

Sequence. Per time step, D observation tokens then the action:

    o_0^1 .. o_0^D  a_0  o_1^1 .. o_1^D  a_1  ...     embedding of a token =
        E_tok[d, o] + W_val c(o) + E_type[slot] + E_time[t]   (c(o): bin centre)

The value feature W_val c(o) tells the model that neighbouring bins are close, which a lookup
table would have to learn bin by bin. A GPT stack (pre-LayerNorm causal self-attention + MLP
blocks) reads it; the output at each action position predicts the next step's tokens, one
linear head per dimension (logits over that dimension's V bins):

    p(o_{t+1}^d | o_{<=t}, a_{<=t}),  d = 1..D,   from the position of a_t

The D tokens of a step are predicted in parallel (IRIS generates them one by one): for vector
observations this costs one transformer pass per imagined step instead of D, which keeps a
15-step rollout inside the latency budget, at the price of treating a step's dimensions as
independent given the history.

Loss. Teacher-forced cross-entropy of every next-observation token,
CE = -mean log p(o_{t+1}^d), t = 0..L-2, d = 1..D; perplexity = exp(CE). CE is non-negative
and deterministic (no sampling), and it is the gate metric (``world_model_loss``). Sequences
longer than the ``context`` window are cut into windows overlapping by one step, so every
transition is predicted once with at most ``context`` steps of history.

State. A left-aligned window of the last ``context`` steps: ``tokens`` [B, K, D], ``actions``
[B, K, A] (the action taken after each step) and ``valid`` [B, K]. ``transition`` writes the
action, slides the window when full and generates the next step's D tokens (argmax in eval
mode, sampled in training mode); ``update`` appends the observed tokens;
``decode`` returns the bin centres of the newest step. Left alignment with a causal mask means
empty slots always come after real ones, so they never influence a prediction, and time
positions match training (the oldest step in the window is position 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldflux.core.model import Capability, Maturity, ModelSpec, WorldModel
from worldflux.core.registry import register_family
from worldflux.core.types import Batch, LossOutput, ModelOutput, State
from worldflux.models.token.config import PRESETS, TokenConfig
from worldflux.models.token.tokenizer import BinTokenizer


def _shift(x: Tensor) -> Tensor:
    """Drop the oldest step (slot 0) and leave an empty last slot: [B, K, ...]."""
    return torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], 1)


class CausalSelfAttention(nn.Module):
    def __init__(self, embed: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(embed, 3 * embed)
        self.proj = nn.Linear(embed, embed)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        # Position i may attend to positions j <= i only: the model cannot look ahead.
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.proj(y.transpose(1, 2).reshape(b, n, e))


class Block(nn.Module):
    """nanoGPT block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, c: TokenConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.embed)
        self.attn = CausalSelfAttention(c.embed, c.heads, c.dropout)
        self.ln2 = nn.LayerNorm(c.embed)
        self.mlp = nn.Sequential(
            nn.Linear(c.embed, c.mlp_ratio * c.embed),
            nn.GELU(),
            nn.Linear(c.mlp_ratio * c.embed, c.embed),
            nn.Dropout(c.dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


@register_family(
    "token",
    presets=PRESETS,
    maturity=Maturity.EXPERIMENTAL,
    description="Token world model: binned observation tokens and actions through a causal "
    "transformer (IRIS-style), next-token cross-entropy",
)
class TokenWorldModel(WorldModel):
    capabilities = frozenset({Capability.OBSERVATION_DECODER})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c: TokenConfig = spec.config
        self.obs_dim = math.prod(spec.obs_shape)
        d, v, e = self.obs_dim, c.vocab_size, c.embed
        self.tokenizer = BinTokenizer(v, c.value_range)
        self.token_emb = nn.Embedding(d * v, e)  # one table per dimension: ids offset by d * V
        self.value_emb = nn.Linear(1, e)
        self.action_emb = nn.Linear(spec.action_dim, e)
        self.type_emb = nn.Parameter(torch.zeros(d + 1, e))  # which slot of a step
        self.time_emb = nn.Parameter(torch.zeros(c.context, e))
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c.layers)])
        self.ln_f = nn.LayerNorm(e)
        self.head_weight = nn.Parameter(torch.empty(d, e, v))
        self.head_bias = nn.Parameter(torch.zeros(d, v))
        for p in (self.type_emb, self.time_emb, self.head_weight):
            nn.init.normal_(p, std=0.02)
        # The mask is rebuilt per call from the sequence length, so no buffer depends on it.

    # --- the transformer --------------------------------------------------------------------
    def _hidden(self, tokens: Tensor, actions: Tensor) -> Tensor:
        """tokens [B, n, D] (int64), actions [B, n, A] -> hidden [B, n, D + 1, E]."""
        b, n, d = tokens.shape
        offset = torch.arange(d, device=tokens.device) * self.config.vocab_size
        obs = self.token_emb(tokens + offset)
        obs = obs + self.value_emb(self.tokenizer.centre(tokens).unsqueeze(-1))
        x = torch.cat([obs, self.action_emb(actions).unsqueeze(2)], 2)
        x = x + self.type_emb + self.time_emb[:n, None]
        x = self.drop(x.reshape(b, n * (d + 1), -1))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x).reshape(b, n, d + 1, -1)

    def _logits(self, tokens: Tensor, actions: Tensor) -> Tensor:
        """Logits of the tokens of steps 1..n-1: [B, n - 1, D, V], all from the position of the
        action before each step, one head per dimension."""
        h = self._hidden(tokens, actions)[:, :-1, self.obs_dim]
        return torch.einsum("bse,dev->bsdv", h, self.head_weight) + self.head_bias

    # --- helpers ----------------------------------------------------------------------------
    def _tokenize(self, obs: Tensor) -> Tensor:
        return self.tokenizer.encode(obs.flatten(-len(self.spec.obs_shape)))

    def _windows(self, length: int) -> list[tuple[int, int]]:
        """Windows of at most ``context`` steps overlapping by one, covering every transition."""
        k = self.config.context
        return [(s, min(s + k, length)) for s in range(0, length - 1, k - 1)]

    def _sequence(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Tokens [B, L, D] and the action taken after each step [B, L, A] (zeros after the
        last step: nothing is predicted from it)."""
        tokens = self._tokenize(batch.obs)
        actions = torch.cat([batch.action[:, 1:], torch.zeros_like(batch.action[:, :1])], 1)
        return tokens, actions

    # --- contract ---------------------------------------------------------------------------
    def encode(self, obs: Tensor) -> State:
        b, k = obs.shape[0], self.config.context
        tokens = torch.zeros(b, k, self.obs_dim, dtype=torch.long, device=obs.device)
        tokens[:, 0] = self._tokenize(obs)
        valid = torch.zeros(b, k, device=obs.device)
        valid[:, 0] = 1.0
        actions = torch.zeros(b, k, self.spec.action_dim, device=obs.device)
        return State({"tokens": tokens, "actions": actions, "valid": valid})

    def _act(self, state: State, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Record ``action`` after the newest step and free a slot for the next one (sliding the
        window left when it is full). Returns tokens, actions, valid."""
        tokens, actions, valid = state["tokens"], state["actions"], state["valid"]
        k = valid.shape[1]
        newest = F.one_hot(valid.sum(1).long() - 1, k).bool()  # [B, K]
        actions = torch.where(newest.unsqueeze(-1), action.unsqueeze(1), actions)
        full = valid[:, -1:].bool()  # left-aligned: full iff the last slot is used
        tokens = torch.where(full.unsqueeze(-1), _shift(tokens), tokens)
        actions = torch.where(full.unsqueeze(-1), _shift(actions), actions)
        valid = torch.where(full, _shift(valid), valid)
        return tokens, actions, valid

    @staticmethod
    def _append(state: tuple[Tensor, Tensor, Tensor], new: Tensor) -> State:
        tokens, actions, valid = state
        free = F.one_hot(valid.sum(1).long(), valid.shape[1]).bool()
        tokens = torch.where(free.unsqueeze(-1), new.unsqueeze(1), tokens)
        actions = torch.where(free.unsqueeze(-1), torch.zeros_like(actions), actions)
        return State({"tokens": tokens, "actions": actions, "valid": valid + free.float()})

    def transition(self, state: State, action: Tensor) -> State:
        tokens, actions, valid = self._act(state, action)
        slot = valid.sum(1).long()  # the free slot: the step being generated
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        # Causality: nothing from the generated slot on matters, so the window is cut there.
        n = int(slot.max())
        h = self._hidden(tokens[:, :n], actions[:, :n])[rows, slot - 1, self.obs_dim]
        logits = torch.einsum("be,dev->bdv", h, self.head_weight) + self.head_bias
        if self.training:
            new = torch.distributions.Categorical(logits=logits).sample()
        else:
            new = logits.argmax(-1)
        return self._append((tokens, actions, valid), new)

    def update(self, state: State, action: Tensor, obs: Tensor) -> State:
        return self._append(self._act(state, action), self._tokenize(obs))

    def decode(self, state: State) -> ModelOutput:
        tokens, valid = state["tokens"], state["valid"]
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        newest = tokens[rows, valid.sum(1).long() - 1]
        obs = self.tokenizer.decode(newest).reshape(-1, *self.spec.obs_shape)
        return ModelOutput(observation=obs)

    def loss(self, batch: Batch) -> LossOutput:
        tokens, actions = self._sequence(batch)
        total = torch.zeros((), device=tokens.device)
        correct = torch.zeros((), device=tokens.device)
        count = 0
        for start, end in self._windows(batch.seq_len):
            logits = self._logits(tokens[:, start:end], actions[:, start:end])
            target = tokens[:, start + 1 : end]
            total = total + F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="sum")
            correct = correct + (logits.argmax(-1) == target).sum()
            count += target.numel()
        ce = total / count
        return LossOutput(
            loss=ce,
            components={"cross_entropy": ce},
            metrics={
                "world_model_loss": ce.item(),
                "perplexity": math.exp(ce.item()),
                "token_accuracy": correct.item() / count,
            },
        )

    def diagnostics(self, batch: Batch) -> dict[str, Tensor]:
        """Next-token logits of the first window and its perplexity (health gates check them
        for NaN/Inf)."""
        tokens, actions = self._sequence(batch)
        start, end = self._windows(batch.seq_len)[0]
        logits = self._logits(tokens[:, start:end], actions[:, start:end])
        ce = F.cross_entropy(logits.flatten(0, 2), tokens[:, start + 1 : end].flatten())
        return {"logits": logits, "logits_perplexity": ce.exp().reshape(1)}
