"""TD-MPC2's latent rollout over a whole segment as one autograd node, with a hand-written
backward pass (the same idea as DreamerV3's ``cell.py``).

The training loss unrolls the dynamics through every step of the segment:

    z_0     = SimNorm(e)                                  e: encoder output of the first frame
    h       = W1 [z_t, a_t] + b1                          (W1 = [W1z | W1a])
    x       = SiLU(LN2(W2 SiLU(LN1(h)) + b2))
    z_{t+1} = SimNorm(W3 x + b3)                          softmax over groups of ``group`` dims

which is the ``mlp(latent + action, hidden, latent, 2)`` dynamics of the model followed by
SimNorm. On a CPU with small models the cost is per-op dispatch and autograd bookkeeping, not
arithmetic: left to autograd the loop is ~15 graph nodes per step. Here the whole rollout is
one node: the action projections are computed for every step before the loop, the loops run
only what depends on the recurrence, and the weight gradients are one matrix product per
weight over all steps after the backward loop. ``latent_rollout_reference`` is the same math in
plain autograd; the tests check that values and gradients agree.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

aten = torch.ops.aten
_ln_bw = aten.native_layer_norm_backward.default
_silu_bw = aten.silu_backward.default
_softmax_bw = torch._softmax_backward_data
_softmax = torch._softmax
_addmm = torch.addmm
_layer_norm = torch.native_layer_norm
_silu = torch._C._nn.silu


class LatentRollout(torch.autograd.Function):
    """Latents are kept transposed inside ([L, B]: feature-major) so that SimNorm's softmax
    runs over a strided dimension with the batch contiguous, which is 4x faster for groups of
    8 than a softmax over the last dimension; the matrix products take either layout."""

    @staticmethod
    def forward(
        ctx: Any,
        e: Tensor,
        actions: Tensor,
        w1: Tensor,
        b1: Tensor,
        ln1_w: Tensor,
        ln1_b: Tensor,
        w2: Tensor,
        b2: Tensor,
        ln2_w: Tensor,
        ln2_b: Tensor,
        w3: Tensor,
        b3: Tensor,
        group: int,
        eps: float,
    ) -> Tensor:
        """Latents [T + 1, B, L]: z_0 = SimNorm(e) and the T predicted ones, for actions
        [T, B, A] and the encoder output e [B, L]."""
        steps, batch, act = actions.shape
        latent, hidden = e.shape[-1], w1.shape[0]
        groups, shape = (latent // group, group, batch), [hidden]
        w1z = w1[:, :latent]
        # The action part of the first layer (and its bias) for every step at once.
        pa = torch.addmm(b1, actions.reshape(steps * batch, act), w1[:, latent:].t())
        w1z_t, w2_t, b3_col = w1z.t(), w2.t(), b3.unsqueeze(1)
        zb = torch._softmax(e.t().reshape(groups), 1, False)  # z^T, viewed as [G, g, B]
        zbs, per_step = [zb], []
        for pa_t in pa.view(steps, batch, hidden).unbind(0):
            h1 = _addmm(pa_t, zb.as_strided((batch, latent), (1, batch)), w1z_t)
            x1, m1, r1 = _layer_norm(h1, shape, ln1_w, ln1_b, eps)
            s1 = _silu(x1)
            h2 = _addmm(b2, s1, w2_t)
            x2, m2, r2 = _layer_norm(h2, shape, ln2_w, ln2_b, eps)
            s2 = _silu(x2)
            zb = _softmax(_addmm(b3_col, w3, s2.t()).view(groups), 1, False)
            zbs.append(zb)
            per_step.append((h1, m1, r1, x1, s1, h2, m2, r2, x2, s2))
        out = torch.stack(zbs).view(steps + 1, latent, batch)
        columns = list(zip(*per_step, strict=True))
        # Stacked for the parameter gradients (one product over all steps) ...
        stacked = [torch.stack(columns[i]) for i in (0, 1, 2, 4, 5, 6, 7, 9)]
        ctx.save_for_backward(out, actions, w1z, ln1_w, ln1_b, w2, ln2_w, ln2_b, w3, *stacked)
        # ... and per step for the backward recurrence (no indexing in the loop). These are
        # intermediates, never inputs or outputs, so holding them on ctx makes no cycle.
        ctx.per_step = (zbs, *(columns[i] for i in (0, 1, 2, 3, 5, 6, 7, 8)))
        ctx.group = group
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Any, ...]:
        (
            out, actions, w1z, ln1_w, ln1_b, w2, ln2_w, ln2_b, w3,
            h1, m1, r1, s1, h2, m2, r2, s2,
        ) = ctx.saved_tensors  # fmt: skip
        zbs, h1s, m1s, r1s, x1s, h2s, m2s, r2s, x2s = ctx.per_step
        del ctx.per_step
        steps, batch, act = actions.shape
        hidden, latent = w1z.shape
        groups, shape = (latent // ctx.group, ctx.group, batch), [hidden]
        dtype = out.dtype
        no_affine = [True, False, False]
        grads = grad.transpose(1, 2).contiguous().unbind(0)  # [L, B] per step
        w1z_t = w1z.t()
        g_z = grads[steps]  # total gradient of z_T; of z_t it adds the next step's input grad
        g_os, per_step = [], []
        for t in range(steps - 1, -1, -1):
            g_o = _softmax_bw(g_z.view(groups), zbs[t + 1], 1, dtype)  # [G, g, B]
            g_x2 = _silu_bw(g_o.as_strided((batch, latent), (1, batch)).mm(w3), x2s[t])
            g_h2 = _ln_bw(g_x2, h2s[t], shape, m2s[t], r2s[t], ln2_w, ln2_b, no_affine)[0]
            g_x1 = _silu_bw(g_h2.mm(w2), x1s[t])
            g_h1 = _ln_bw(g_x1, h1s[t], shape, m1s[t], r1s[t], ln1_w, ln1_b, no_affine)[0]
            g_z = _addmm(grads[t], w1z_t, g_h1.t())
            g_os.append(g_o)
            per_step.append((g_x2, g_h2, g_x1, g_h1))
        # Parameter gradients: one product (or reduction) over every step and row.
        rows = steps * batch
        g_x2, g_h2, g_x1, g_h1 = (
            torch.stack(s[::-1]).view(rows, -1) for s in zip(*per_step, strict=True)
        )
        g_o = torch.stack(g_os[::-1], 2).view(latent, rows)  # [L, T * B]
        inputs = torch.cat([out[:steps].transpose(1, 2), actions], -1).view(rows, latent + act)
        g_w1, g_b1 = g_h1.t().mm(inputs), g_h1.sum(0)
        _, g_ln1_w, g_ln1_b = _ln_bw(
            g_x1, h1.view(rows, hidden), shape, m1.view(rows, 1), r1.view(rows, 1),
            ln1_w, ln1_b, [False, True, True],
        )  # fmt: skip
        g_w2, g_b2 = g_h2.t().mm(s1.view(rows, hidden)), g_h2.sum(0)
        _, g_ln2_w, g_ln2_b = _ln_bw(
            g_x2, h2.view(rows, hidden), shape, m2.view(rows, 1), r2.view(rows, 1),
            ln2_w, ln2_b, [False, True, True],
        )  # fmt: skip
        g_w3, g_b3 = g_o.mm(s2.view(rows, hidden)), g_o.sum(1)
        g_e = _softmax_bw(g_z.view(groups), zbs[0], 1, dtype).view(latent, batch)
        return (
            g_e.t(), None, g_w1, g_b1, g_ln1_w, g_ln1_b, g_w2, g_b2,
            g_ln2_w, g_ln2_b, g_w3, g_b3, None, None,
        )  # fmt: skip


def latent_rollout(e: Tensor, actions: Tensor, dynamics: torch.nn.Sequential, group: int) -> Tensor:
    """``LatentRollout`` for a ``worldflux.nn.mlp(latent + action, hidden, latent, 2)``."""
    lin1, ln1, _, lin2, ln2, _, lin3 = dynamics
    assert ln1.eps == ln2.eps, "both LayerNorms share one eps"
    out: Tensor = LatentRollout.apply(
        e, actions,
        lin1.weight, lin1.bias, ln1.weight, ln1.bias,
        lin2.weight, lin2.bias, ln2.weight, ln2.bias,
        lin3.weight, lin3.bias,
        group, ln1.eps,
    )  # fmt: skip
    return out


def latent_rollout_reference(
    e: Tensor, actions: Tensor, dynamics: torch.nn.Module, group: int
) -> Tensor:
    """``latent_rollout`` in plain autograd (for tests, and as the readable definition)."""

    def simnorm(x: Tensor) -> Tensor:
        return F.softmax(x.reshape(*x.shape[:-1], -1, group), -1).reshape(x.shape)

    z = simnorm(e)
    zs = [z]
    for a in actions:
        z = simnorm(dynamics(torch.cat([z, a], -1)))
        zs.append(z)
    return torch.stack(zs)
