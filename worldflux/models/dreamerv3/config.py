"""DreamerV3 hyper-parameters and presets (Hafner et al. 2023, "Mastering Diverse Domains
through World Models", Table of model sizes): ``PRESETS`` for vector observations (family
``dreamerv3``), ``PIXEL_PRESETS`` with a CNN for frames (family ``dreamerv3_pixels``)."""

from __future__ import annotations

from dataclasses import dataclass

from worldflux.core.errors import ConfigError


@dataclass(frozen=True)
class DreamerV3Config:
    deter: int = 64  # GRU (deterministic) state size
    stoch: int = 4  # number of categorical latents
    classes: int = 4  # classes per categorical latent
    hidden: int = 32  # MLP width, also the observation embedding size
    layers: int = 1  # hidden layers of encoder, decoder and heads
    unimix: float = 0.01  # mix 1% uniform into categoricals so no class has zero probability
    free_nats: float = 1.0  # free bits: KL below this is not penalized
    kl_dyn_scale: float = 0.5  # beta_dyn: trains the prior toward the posterior
    kl_rep_scale: float = 0.1  # beta_rep: keeps the posterior predictable
    reward_bins: int = 255  # two-hot bins over symlog(reward) in [-20, 20]
    # Weight of the reconstruction term. The paper's 1.0 assumes observations with many
    # unit-scale dimensions; with a few small-range ones (CartPole: 4 dims, pole angle std 0.05)
    # the symlog MSE is ~0.03 and the KL and reward terms outweigh it, so the posterior is
    # squeezed toward the prior and drops the state (docs/worldflux.md, DreamerV3 diagnosis).
    recon_scale: float = 1.0
    # Channels of the image encoder's first convolution (doubling per stage, vision.py); 0 for
    # vector observations, which go through MLPs.
    cnn_depth: int = 0
    # Frames only: in training, each sequence is shifted by up to this many pixels (vision.py,
    # random_shift); 0 turns it off. A CNN that saw the cart only where the training episodes
    # took it does not recognise it 2 px further out (docs/worldflux.md, "DreamerV3 on frames").
    shift_pixels: int = 0

    def validate(self) -> None:
        for name in ("deter", "stoch", "classes", "hidden", "reward_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dreamerv3: {name} must be >= 1, got {getattr(self, name)}")
        if self.cnn_depth < 0:
            raise ConfigError(f"dreamerv3: cnn_depth must be >= 0, got {self.cnn_depth}")
        if self.shift_pixels < 0 or (self.shift_pixels and not self.cnn_depth):
            raise ConfigError(
                f"dreamerv3: shift_pixels must be >= 0 and needs frames (cnn_depth > 0), got "
                f"{self.shift_pixels} with cnn_depth {self.cnn_depth}"
            )
        if self.classes < 2:
            raise ConfigError("dreamerv3: classes must be >= 2 for a categorical latent")
        if not self.recon_scale > 0.0:
            raise ConfigError(f"dreamerv3: recon_scale must be > 0, got {self.recon_scale}")
        if not 0.0 <= self.unimix < 1.0:
            raise ConfigError(f"dreamerv3: unimix must be in [0, 1), got {self.unimix}")


PRESETS = {
    # Same sizes as WorldFlux's `ci` preset, for side-by-side benchmarks. Free bits scale with
    # the latent's capacity: 1 nat is for 32x32 categoricals (up to 111 nats); 4x4 ones carry
    # at most 5.5 nats, and their KL stays under 1 nat, so with 1 free nat the prior would
    # never be trained and imagination would be noise. Its 4-dim vector tasks need the
    # reconstruction weighted up (issue 10: CartPole skill -0.49 -> see docs/worldflux.md).
    "ci": DreamerV3Config(free_nats=0.1, recon_scale=100.0),
    # ci with 8x8 categoricals: with evaluation on the latents' expectation, the wider posterior
    # keeps more of the state (CartPole, 3,000 steps: reconstruction 0.007 -> 0.004, 10-step
    # NMSE 0.043 -> 0.012); the nightly policy uses it, benchmarks compare ci with WorldFlux.
    "ci-8x8": DreamerV3Config(stoch=8, classes=8, free_nats=0.1, recon_scale=100.0),
    "small": DreamerV3Config(deter=256, stoch=16, classes=16, hidden=128, layers=2),
    # The paper's sizes (XS..XL): GRU units, MLP units x layers; 32 latents x 32 classes.
    "xs": DreamerV3Config(deter=256, stoch=32, classes=32, hidden=256, layers=1),
    "s": DreamerV3Config(deter=512, stoch=32, classes=32, hidden=512, layers=2),
    "m": DreamerV3Config(deter=1024, stoch=32, classes=32, hidden=640, layers=3),
    "l": DreamerV3Config(deter=2048, stoch=32, classes=32, hidden=768, layers=4),
    "xl": DreamerV3Config(deter=4096, stoch=32, classes=32, hidden=1024, layers=5),
}


PIXEL_PRESETS = {
    # WorldFlux's `ci` image configuration, for side-by-side benchmarks: CNN depth 8, GRU 64,
    # 4x4 categoricals, hidden 32. Free bits as in `ci` (4x4 latents); the reconstruction is
    # summed over thousands of pixels, so it needs no extra weight.
    "ci": DreamerV3Config(cnn_depth=8, free_nats=0.1),
    # Below the paper's XS: sizes and loss weights with which DreamerV3 learns CartPole's motion
    # from frames on every seed measured (docs/worldflux.md, "DreamerV3 on frames").
    # Velocity is not in a frame, so the GRU must infer it from consecutive latents, and it
    # learns that only through the dynamics KL. Hence the dynamics KL weighted 10x the paper's
    # (5.0), 8x8 categoricals and 128-unit layers (on positions-only CartPole vectors these took
    # 5-step skill from 0.2 to 0.8), and the reconstruction weighted 10x: a sub-pixel shift of
    # the cart costs less summed pixel error than the KL the posterior pays to encode it, so it
    # was dropped. The paper's 1 free nat (8x8 categoricals carry up to 16.6 nats; with 0.1 the
    # held-out reconstruction degraded from 0.03 to 0.11 NMSE between 2,000 and 3,000 steps).
    # Each training sequence shifted by up to 2 px: held-out episodes take the cart ~2 px
    # further out than any training episode, and there an unshifted CNN's reconstruction error
    # was ~1000x that of the other segments. A 256-unit GRU: with 64 and a constant lr one seed
    # learned the motion and lost it again; with 256 and the policy's cosine lr every seed
    # keeps it.
    "xxs": DreamerV3Config(
        cnn_depth=16,
        deter=256,
        stoch=8,
        classes=8,
        hidden=128,
        recon_scale=10.0,
        kl_dyn_scale=5.0,
        shift_pixels=2,
    ),
    "small": DreamerV3Config(cnn_depth=16, deter=256, stoch=16, classes=16, hidden=128, layers=2),
}
