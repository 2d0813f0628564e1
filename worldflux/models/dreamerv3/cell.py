"""The RSSM posterior filter over a whole sequence as a single autograd node, with a
hand-written backward pass.

Training filters T steps of B sequences, one posterior step per time step, forward and
backward. On a CPU with small models the cost is per-op dispatch and autograd bookkeeping, not
arithmetic: the step is ~20 ops, and left to autograd each one is also a graph node whose
backward runs separately, plus T gradient accumulations per parameter. ``PosteriorSequence``
runs the steps' forward ops in one loop, and its backward pass runs only what is sequential
(the gradients w.r.t. h and z flowing back in time) step by step: everything else, layer norm
statistics, gate derivatives and every parameter gradient, is computed for all T*B rows at
once. ``posterior_step_reference`` is one step in plain autograd, the readable definition; the
tests check that a loop of it and ``PosteriorSequence`` agree in values and gradients.

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
from torch.autograd.function import once_differentiable

aten = torch.ops.aten


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last dimension, written out (max, exp, sum). For a dimension as short
    as a categorical's classes, PyTorch's CPU softmax kernel is about 4x slower than this on
    many rows. The max is a constant shift (softmax does not depend on it), so no gradient
    flows through it."""
    e = (x - x.amax(-1, keepdim=True).detach()).exp()
    return e / e.sum(-1, keepdim=True)


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
    probs = softmax(logits.reshape(*logits.shape[:-1], -1, classes))
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


def _gru(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """``torch.nn.GRUCell``'s step."""
    i_r, i_u, i_n = torch.addmm(b_ih, x, w_ih.t()).chunk(3, 1)
    h_r, h_u, h_n = torch.addmm(b_hh, h, w_hh.t()).chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    u = torch.sigmoid(i_u + h_u)
    n = torch.tanh(i_n + r * h_n)
    return (1 - u) * n + u * h


class PosteriorSequence(torch.autograd.Function):
    """The posterior filter over T steps of B sequences as one autograd node (module docstring).

    Inputs: the initial state h [B, D], z [B, S*C]; the action and embedding projections a, e
    [T, B, hidden]; sampling noise ``race`` [T, B, S, C] (None: expected latents); ``keep``
    [T, B, 1] or None, which multiplies the state entering each step (an episode start resets
    it); the parameters as ``DreamerV3._cell_params`` lists them; and ``save`` (whether a
    backward pass may follow, so the forward keeps what it needs). Outputs h, z and the
    posterior logits, each [T, B, ...].
    """

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        z: Tensor,
        a: Tensor,
        e: Tensor,
        race: Tensor | None,
        keep: Tensor | None,
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
        save: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch = a.shape[:2]
        deter, latents = h.shape[-1], z.shape[-1] // classes
        norm, gru_split, shape = [a.shape[-1]], [2 * deter, deter], (batch, latents, classes)
        w_img_t, w_ih_t, w_hh_t, w_post_t, w_out_t = (
            w.t() for w in (w_img, w_ih, w_hh, w_post, w_out)
        )
        a_t, e_t = a.unbind(0), e.unbind(0)
        keep_t = None if keep is None else keep.unbind(0)
        if race is None:  # the latent is the mixed probabilities, (1 - unimix) p + unimix / C
            mix = h.new_tensor(1 - unimix), h.new_tensor(unimix / classes)
            z_seq: list[Tensor] = []
        else:  # one-hot argmax of mixed * race = p * race (1 - unimix) + race unimix / C
            race_mix = (race * (1 - unimix)).unbind(0), (race * (unimix / classes)).unbind(0)
            z_buf = a.new_zeros(steps, *shape)
            z_buf_t = z_buf.unbind(0)
        h0, z0 = h, z
        x0_seq, ru_seq, n_seq, hn_seq, h_seq, p0_seq, l_seq = [], [], [], [], [], [], []
        for t in range(steps):
            if keep_t is not None:
                h, z = h * keep_t[t], z * keep_t[t]
            x0 = torch.addmm(a_t[t], z, w_img_t)
            x = F.silu(torch.native_layer_norm(x0, norm, ln_img_w, ln_img_b, eps)[0])
            gi_ru, gi_n = torch.addmm(b_ih, x, w_ih_t).split_with_sizes(gru_split, 1)
            gh_ru, hn = torch.addmm(b_hh, h, w_hh_t).split_with_sizes(gru_split, 1)
            ru = torch.sigmoid(gi_ru + gh_ru)
            r, u = ru.split_with_sizes([deter, deter], 1)
            n = torch.tanh(torch.addcmul(gi_n, r, hn))
            h = torch.lerp(n, h, u)  # (1 - u) * n + u * h
            p0 = torch.addmm(e_t[t], h, w_post_t)
            p = F.silu(torch.native_layer_norm(p0, norm, ln_post_w, ln_post_b, eps)[0])
            logits = torch.addmm(b_out, p, w_out_t)
            probs = torch.softmax(logits.view(shape), -1)  # few rows: the kernel is fine here
            if race is None:
                z = torch.addcmul(mix[1], probs, mix[0]).view(batch, -1)
                z_seq.append(z)
            else:
                pick = torch.addcmul(race_mix[1][t], probs, race_mix[0][t]).argmax(-1, True)
                z = z_buf_t[t].scatter_(-1, pick, 1.0).view(batch, -1)
            x0_seq.append(x0)
            ru_seq.append(ru)
            n_seq.append(n)
            hn_seq.append(hn)
            h_seq.append(h)
            p0_seq.append(p0)
            l_seq.append(logits)
        hs, logits = torch.stack(h_seq), torch.stack(l_seq)
        zs = torch.stack(z_seq) if race is None else z_buf.view(steps, batch, -1)
        if save:
            seq = (torch.stack(s) for s in (x0_seq, ru_seq, n_seq, hn_seq, p0_seq))
            ctx.save_for_backward(
                h0, z0, hs, zs, logits, *seq, keep,
                w_img, ln_img_w, ln_img_b, w_ih, w_hh, w_post, ln_post_w, ln_post_b, w_out,
            )  # fmt: skip
            ctx.hyper = classes, unimix, eps
        return hs, zs, logits

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_hs: Tensor, g_zs: Tensor, g_logits: Tensor) -> tuple[Any, ...]:
        (
            h0, z0, hs, zs, logits, x0, ru, n, hn, p0, keep,
            w_img, ln_img_w, ln_img_b, w_ih, w_hh, w_post, ln_post_w, ln_post_b, w_out,
        ) = ctx.saved_tensors  # fmt: skip
        classes, unimix, eps = ctx.hyper
        steps, batch, deter = hs.shape
        norm, mask, split = [x0.shape[-1]], [True, False, False], [3 * deter, 3 * deter]
        ln_backward = aten.native_layer_norm_backward.default

        # 1. What does not depend on the incoming gradients, for all steps at once.
        hp = torch.cat([h0.unsqueeze(0), hs[:-1]])  # the state entering each step
        zp = torch.cat([z0.unsqueeze(0), zs[:-1]])
        if keep is not None:
            hp, zp = hp * keep, zp * keep
        x1, m1, s1 = torch.native_layer_norm(x0, norm, ln_img_w, ln_img_b, eps)
        p1, m2, s2 = torch.native_layer_norm(p0, norm, ln_post_w, ln_post_b, eps)
        ones = torch.ones_like(x1)
        dsilu_x, dsilu_p = aten.silu_backward(ones, x1), aten.silu_backward(ones, p1)
        # GRU: d h' / d (gate pre-activations), input side [r, u, n], hidden side [r, u, n * r]
        # (the hidden part of n is gated by r).
        r, u = ru.chunk(2, -1)
        a_n = (1 - u) * (1 - n * n)
        a_u = (hp - n) * u * (1 - u)
        a_r = a_n * hn * r * (1 - r)
        gates = torch.stack([a_r, a_u, a_n, a_r, a_u, a_n * r], 2)  # [T, B, 6, D]
        # Straight-through sample: the Jacobian of the mixed probabilities w.r.t. the logits,
        # (1 - unimix) p_i (delta_ij - p_j) per latent (symmetric), and the logits' gradient
        # from the loss's own use of z and of the logits.
        probs = softmax(logits.view(-1, 1, classes))
        eye = torch.eye(classes, dtype=probs.dtype, device=probs.device)
        jac = (probs.transpose(1, 2) * (1 - unimix)) * (eye - probs)
        g_l = torch.baddbmm(g_logits.reshape(-1, classes, 1), jac, g_zs.reshape(-1, classes, 1))

        # 2. Back in time. g_h, g_z: gradients w.r.t. the state leaving step t (the loss's and
        # the later steps'); g_l[t] gets step t+1's share of g_z added in place.
        g_l_t = g_l.view(steps, batch, -1).unbind(0)
        g_l3_t = g_l.view(steps, -1, classes, 1).unbind(0)  # the same memory as g_l_t
        jac_t = jac.view(steps, -1, classes, classes).unbind(0)
        gates_t, u_t, g_hs_t = gates.unbind(0), u.unbind(0), g_hs.unbind(0)
        p0_t, m2_t, s2_t, dsilu_p_t = p0.unbind(0), m2.unbind(0), s2.unbind(0), dsilu_p.unbind(0)
        x0_t, m1_t, s1_t, dsilu_x_t = x0.unbind(0), m1.unbind(0), s1.unbind(0), dsilu_x.unbind(0)
        keep_t = None if keep is None else keep.unbind(0)
        g_p1_seq, g_p0_seq, d_seq, g_x1_seq, g_x0_seq = [], [], [], [], []
        g_h, g_z = g_hs_t[-1], None
        for t in range(steps - 1, -1, -1):
            if g_z is not None:
                g_l3_t[t].baddbmm_(jac_t[t], g_z.view(-1, classes, 1))
            g_p1 = g_l_t[t].mm(w_out).mul_(dsilu_p_t[t])
            g_p0 = ln_backward(g_p1, p0_t[t], norm, m2_t[t], s2_t[t], ln_post_w, None, mask)[0]
            g_hn = torch.addmm(g_h, g_p0, w_post)  # h' feeds the next step and the posterior
            d = (gates_t[t] * g_hn.unsqueeze(1)).view(batch, -1)  # gate pre-activations
            d_gi, d_gh = d.split_with_sizes(split, 1)
            g_x1 = d_gi.mm(w_ih).mul_(dsilu_x_t[t])
            g_x0 = ln_backward(g_x1, x0_t[t], norm, m1_t[t], s1_t[t], ln_img_w, None, mask)[0]
            g_z = g_x0.mm(w_img)
            g_p1_seq.append(g_p1)
            g_p0_seq.append(g_p0)
            d_seq.append(d)
            g_x1_seq.append(g_x1)
            g_x0_seq.append(g_x0)
            if keep_t is None:
                g_h_in = g_hn * u_t[t] if t == 0 else torch.addcmul(g_hs_t[t - 1], g_hn, u_t[t])
                g_h = torch.addmm(g_h_in, d_gh, w_hh)
            else:
                g_h = torch.addmm(g_hn * u_t[t], d_gh, w_hh) * keep_t[t]
                g_z = g_z * keep_t[t]
                if t:
                    g_h = g_h + g_hs_t[t - 1]

        # 3. Parameter gradients: one matmul or sum over all T*B rows each.
        rows = steps * batch
        g_p1, g_p0, d, g_x1, g_x0 = (
            torch.stack(s[::-1]).view(rows, -1)
            for s in (g_p1_seq, g_p0_seq, d_seq, g_x1_seq, g_x0_seq)
        )
        d_gi, d_gh = d.split_with_sizes(split, 1)
        g_l = g_l.view(rows, -1)
        xhat_img, xhat_post = ((x0 - m1) * s1).view(rows, -1), ((p0 - m2) * s2).view(rows, -1)
        x, p, hp, zp = (t.reshape(rows, -1) for t in (F.silu(x1), F.silu(p1), hp, zp))
        return (
            g_h if ctx.needs_input_grad[0] else None,
            g_z if ctx.needs_input_grad[1] else None,
            g_x0.view(steps, batch, -1), g_p0.view(steps, batch, -1), None, None,
            g_x0.t().mm(zp), (g_x1 * xhat_img).sum(0), g_x1.sum(0),
            d_gi.t().mm(x), d_gh.t().mm(hp), d_gi.sum(0), d_gh.sum(0),
            g_p0.t().mm(hs.view(rows, -1)), (g_p1 * xhat_post).sum(0), g_p1.sum(0),
            g_l.t().mm(p), g_l.sum(0),
            None, None, None, None,
        )  # fmt: skip


def posterior_sequence(
    h: Tensor,
    z: Tensor,
    a: Tensor,
    e: Tensor,
    race: Tensor | None,
    keep: Tensor | None,
    *params: Any,
) -> tuple[Tensor, Tensor, Tensor]:
    """``PosteriorSequence``: h, z and posterior logits [T, B, ...] from the initial state
    (h, z), the projections a, e [T, B, hidden], ``race``, ``keep`` and the cell parameters."""
    tensors = (h, z, a, e, *(p for p in params if isinstance(p, Tensor)))
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    out: tuple[Tensor, Tensor, Tensor] = PosteriorSequence.apply(
        h, z, a, e, race, keep, *params, save
    )
    return out


def posterior_step_reference(
    h: Tensor, z: Tensor, a: Tensor, e: Tensor, race: Tensor | None, *params: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of ``PosteriorSequence`` in plain autograd (for tests and as the readable
    definition): h', z' and the posterior logits."""
    (w_img, lw1, lb1, w_ih, w_hh, b_ih, b_hh, w_post, lw2, lb2, w_out, b_out, classes, unimix,
     eps) = params  # fmt: skip
    x = F.silu(F.layer_norm(torch.addmm(a, z, w_img.t()), [w_img.shape[0]], lw1, lb1, eps))
    h_new = _gru(x, h, w_ih, w_hh, b_ih, b_hh)
    p = F.silu(F.layer_norm(torch.addmm(e, h_new, w_post.t()), [w_post.shape[0]], lw2, lb2, eps))
    logits = torch.addmm(b_out, p, w_out.t())
    sample, _ = straight_through_sample(logits.detach(), race, classes, unimix)
    probs = F.softmax(logits.reshape(*logits.shape[:-1], -1, classes), -1)
    mixed = ((1 - unimix) * probs + unimix / classes).reshape(logits.shape)
    return h_new, sample + (mixed - mixed.detach()), logits
