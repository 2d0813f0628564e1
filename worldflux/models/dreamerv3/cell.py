"""One RSSM posterior step as a single autograd node, with a hand-written backward pass.

The RSSM runs this step once per time step, forward and backward. On a CPU with small models
the cost is per-op dispatch and autograd bookkeeping, not arithmetic: the step is ~25 ops and,
left to autograd, ~30 graph nodes. Fused into one ``autograd.Function`` the same ops run with
one node. ``posterior_step_reference`` is the same math in plain autograd; the tests check
that values and gradients agree.

    x   = SiLU(LN_img(W_img z + a))                     a: action projection (+ bias)
    r   = sigmoid(W_ir x + b_ir + W_hr h + b_hr)        GRU, as torch.nn.GRUCell
    u   = sigmoid(W_iu x + b_iu + W_hu h + b_hu)
    n   = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h'  = (1 - u) * n + u * h
    l   = W_out SiLU(LN_post(W_post h' + e)) + b_out    e: embedding projection (+ bias)
    z'  = one-hot sample of unimix-softmax(l), straight-through gradients (training);
          unimix-softmax(l) itself, the expected one-hot, when there is no sample (evaluation)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

aten = torch.ops.aten


def straight_through_sample(
    logits: Tensor, race: Tensor | None, classes: int, unimix: float
) -> tuple[Tensor, Tensor]:
    """One-hot samples [.., S*C] and the unmixed softmax [.., S, C] (kept for the backward).

    Sampling is an exponential race: argmax_i p_i / E_i with E_i ~ Exp(1) is distributed as
    Categorical(p) (the Gumbel-max trick without logarithms); ``race`` holds 1/E. With ``race``
    None (evaluation) the latent is the expectation of the one-hot sample, the mixed
    probabilities: deterministic, and on CartPole it imagines 10 steps ahead with a third of the
    mode's error (docs/worldflux.md). Its gradient is the straight-through one exactly.
    """
    probs = F.softmax(logits.reshape(*logits.shape[:-1], -1, classes), dim=-1)
    mixed = (1 - unimix) * probs + unimix / classes
    if race is None:
        return mixed.reshape(logits.shape), probs
    one_hot = torch.zeros_like(mixed).scatter_(-1, (mixed * race).argmax(-1, keepdim=True), 1.0)
    return one_hot.reshape(logits.shape), probs


def straight_through_grad(grad: Tensor, probs: Tensor, unimix: float) -> Tensor:
    """Gradient w.r.t. the logits: through the mixed probabilities (softmax VJP)."""
    g = grad.reshape(probs.shape) * (1 - unimix)
    return (probs * (g - (g * probs).sum(-1, keepdim=True))).reshape(grad.shape)


class StraightThroughCategorical(torch.autograd.Function):
    """A one-hot sample whose gradient passes straight through to the mixed probabilities."""

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, race: Tensor | None, classes: int, unimix: float
    ) -> Tensor:
        sample, probs = straight_through_sample(logits, race, classes, unimix)
        ctx.save_for_backward(probs)
        ctx.unimix = unimix
        return sample

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (probs,) = ctx.saved_tensors
        return straight_through_grad(grad, probs, ctx.unimix), None, None, None


def _gru(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Any:
    gi = torch.addmm(b_ih, x, w_ih.t())
    gh = torch.addmm(b_hh, h, w_hh.t())
    i_r, i_u, i_n = gi.chunk(3, 1)
    h_r, h_u, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    u = torch.sigmoid(i_u + h_u)
    n = torch.tanh(torch.addcmul(i_n, r, h_n))
    return torch.lerp(n, h, u), r, u, n, h_n  # lerp: (1 - u) * n + u * h


class PosteriorStep(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        z: Tensor,
        a: Tensor,
        e: Tensor,
        race: Tensor | None,
        w_img: Tensor,
        ln_img_w: Tensor,
        ln_img_b: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor,
        b_hh: Tensor,
        w_post: Tensor,
        ln_post_w: Tensor,
        ln_post_b: Tensor,
        w_out: Tensor,
        b_out: Tensor,
        classes: int,
        unimix: float,
        eps: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        x0 = torch.addmm(a, z, w_img.t())
        x1, mean1, rstd1 = aten.native_layer_norm(x0, [x0.shape[-1]], ln_img_w, ln_img_b, eps)
        x = F.silu(x1)
        h_new, r, u, n, h_n = _gru(x, h, w_ih, w_hh, b_ih, b_hh)
        p0 = torch.addmm(e, h_new, w_post.t())
        p1, mean2, rstd2 = aten.native_layer_norm(p0, [p0.shape[-1]], ln_post_w, ln_post_b, eps)
        p = F.silu(p1)
        logits = torch.addmm(b_out, p, w_out.t())
        z_new, probs = straight_through_sample(logits, race, classes, unimix)
        ctx.save_for_backward(
            h, z, w_img, ln_img_w, ln_img_b, w_ih, w_hh, w_post, ln_post_w, ln_post_b, w_out,
            x0, mean1, rstd1, x1, x, r, u, n, h_n, h_new, p0, mean2, rstd2, p1, p, probs,
        )  # fmt: skip
        ctx.unimix = unimix
        return h_new, z_new, logits

    @staticmethod
    def backward(ctx: Any, g_h: Tensor, g_z: Tensor, g_logits: Tensor) -> tuple[Any, ...]:
        (
            h, z, w_img, ln_img_w, ln_img_b, w_ih, w_hh, w_post, ln_post_w, ln_post_b, w_out,
            x0, mean1, rstd1, x1, x, r, u, n, h_n, h_new, p0, mean2, rstd2, p1, p, probs,
        ) = ctx.saved_tensors  # fmt: skip
        mask = [True, True, True]
        # logits <- straight-through sample and the direct (KL) gradient
        g_l = g_logits + straight_through_grad(g_z, probs, ctx.unimix)
        g_p = g_l.mm(w_out)
        g_w_out, g_b_out = g_l.t().mm(p), g_l.sum(0)
        g_p1 = aten.silu_backward(g_p, p1)
        g_p0, g_ln_post_w, g_ln_post_b = aten.native_layer_norm_backward(
            g_p1, p0, [p0.shape[-1]], mean2, rstd2, ln_post_w, ln_post_b, mask
        )
        g_e = g_p0
        g_w_post = g_p0.t().mm(h_new)
        g_hn = torch.addmm(g_h, g_p0, w_post)  # h' feeds the next step and the posterior
        # GRU
        d_n = g_hn * (1 - u) * (1 - n * n)
        d_u = g_hn * (h - n) * u * (1 - u)
        d_r = d_n * h_n * r * (1 - r)
        d_gi = torch.cat([d_r, d_u, d_n], 1)
        d_gh = torch.cat([d_r, d_u, d_n * r], 1)
        g_x = d_gi.mm(w_ih)
        g_h_prev = torch.addmm(g_hn * u, d_gh, w_hh)
        g_w_ih, g_w_hh = d_gi.t().mm(x), d_gh.t().mm(h)
        g_b_ih, g_b_hh = d_gi.sum(0), d_gh.sum(0)
        # prior input
        g_x1 = aten.silu_backward(g_x, x1)
        g_x0, g_ln_img_w, g_ln_img_b = aten.native_layer_norm_backward(
            g_x1, x0, [x0.shape[-1]], mean1, rstd1, ln_img_w, ln_img_b, mask
        )
        g_a = g_x0
        g_z_prev = g_x0.mm(w_img)
        g_w_img = g_x0.t().mm(z)
        return (
            g_h_prev, g_z_prev, g_a, g_e, None,
            g_w_img, g_ln_img_w, g_ln_img_b,
            g_w_ih, g_w_hh, g_b_ih, g_b_hh,
            g_w_post, g_ln_post_w, g_ln_post_b, g_w_out, g_b_out,
            None, None, None,
        )  # fmt: skip


def posterior_step_reference(
    h: Tensor, z: Tensor, a: Tensor, e: Tensor, race: Tensor | None, *params: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """``PosteriorStep`` in plain autograd (for tests and as the readable definition)."""
    (w_img, lw1, lb1, w_ih, w_hh, b_ih, b_hh, w_post, lw2, lb2, w_out, b_out, classes, unimix,
     eps) = params  # fmt: skip
    x = F.silu(F.layer_norm(torch.addmm(a, z, w_img.t()), [w_img.shape[0]], lw1, lb1, eps))
    h_new = _gru(x, h, w_ih, w_hh, b_ih, b_hh)[0]
    p = F.silu(F.layer_norm(torch.addmm(e, h_new, w_post.t()), [w_post.shape[0]], lw2, lb2, eps))
    logits = torch.addmm(b_out, p, w_out.t())
    sample, _ = straight_through_sample(logits.detach(), race, classes, unimix)
    probs = F.softmax(logits.reshape(*logits.shape[:-1], -1, classes), -1)
    mixed = ((1 - unimix) * probs + unimix / classes).reshape(logits.shape)
    return h_new, sample + (mixed - mixed.detach()), logits
