"""DDPM machinery shared by the diffusion-policy agents DAC and QSM (ALGORITHMS §11).

Conventions: integer diffusion steps t = 0 … T, t = 0 is the data (a flat action chunk a), t = T is (almost) pure
noise; forward noising x_t = sqrt(ᾱ_t)·a + sqrt(1 − ᾱ_t)·ε, ε ~ N(0, I). A *noise function* is any callable
`noise_fn(observations, x, times)` → ε̂ of the shape of x, with `times` the integer step as a float of shape
(*batch, 1), e.g. `train_state.select('actor')`.

* `vp_schedule`: the VP β schedule with β_0 = 0, α_t, ᾱ_t and the DDPM posterior-mean coefficients (§11.1).
* `mish`, `MishMLP`, `FourierFeatures`, `NoisePredictor`: the noise-prediction network ε_θ(s, x, t) (§11.2).
* `step_times`, `forward_noising`: t ~ U{1, …, T}, ε ~ N(0, I) and x_t (§11.4).
* `ensemble_mean_action_gradient`: g = ∇_x mean_k Q_k(s, x), a constant (§11.4).
* `noise_prediction_loss`: (1/B) Σ_b w_b (1/D) Σ_d (target − ε̂)², invalid rows multiplied by 0 (§11.4, §11.7).
* `ddpm_sample`: the DDPM sampler with the `clip_sampler_before` (DAC) / `clip_sampler_after` (QSM) options (§11.5).
"""

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from utils.networks import default_init


# ------------------------------------------------------------------------------------------- schedule
class DiffusionSchedule(NamedTuple):
    """Per-step constants, each a float32 array of shape (T + 1,) indexed by the step t = 0 … T."""

    betas: np.ndarray  # β_t, β_0 = 0
    alphas: np.ndarray  # α_t = 1 − β_t
    alpha_bars: np.ndarray  # ᾱ_t = Π_{j≤t} α_j, ᾱ_0 = 1
    posterior_x0_coefs: np.ndarray  # sqrt(ᾱ_{t−1})·β_t/(1 − ᾱ_t), t ≥ 1 (entry 0 unused, set to 0)
    posterior_xt_coefs: np.ndarray  # sqrt(α_t)·(1 − ᾱ_{t−1})/(1 − ᾱ_t), t ≥ 1 (entry 0 unused, set to 0)


def vp_schedule(num_steps):
    """VP schedule: β_t = 1 − exp(−0.1/T − 0.5·(10 − 0.1)·(2t − 1)/T²) for t = 1 … T, prepended β_0 = 0.

    Computed in float64 and rounded once to float32, so the last DDPM step's posterior mean is exactly x̂0
    (coefficients 1 and 0)."""
    t = np.arange(1, num_steps + 1, dtype=np.float64)
    betas = np.concatenate([[0.0], 1.0 - np.exp(-0.1 / num_steps - 0.5 * (10.0 - 0.1) * (2 * t - 1) / num_steps**2)])
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    x0_coefs, xt_coefs = np.zeros(num_steps + 1), np.zeros(num_steps + 1)
    x0_coefs[1:] = np.sqrt(alpha_bars[:-1]) * betas[1:] / (1.0 - alpha_bars[1:])
    xt_coefs[1:] = np.sqrt(alphas[1:]) * (1.0 - alpha_bars[:-1]) / (1.0 - alpha_bars[1:])
    return DiffusionSchedule(*(x.astype(np.float32) for x in (betas, alphas, alpha_bars, x0_coefs, xt_coefs)))


# ------------------------------------------------------------------------------------------- networks
def mish(x):
    """Mish(x) = x·tanh(softplus(x))."""
    return x * jnp.tanh(jax.nn.softplus(x))


class MishMLP(nn.Module):
    """Dense → Mish → LayerNorm (if enabled, post-activation, eps 1e-6) per layer; the last layer is linear
    unless `activate_final`. `hidden_dims` lists every width, the output width last. Xavier-uniform kernels,
    zero biases."""

    hidden_dims: Sequence[int]
    activate_final: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=default_init(), bias_init=nn.initializers.zeros)(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = mish(x)
                if self.layer_norm:
                    x = nn.LayerNorm(epsilon=1e-6)(x)
        return x


class FourierFeatures(nn.Module):
    """Learnable Fourier features of the time input: W ∈ R^{(output_size/2)×1} ~ N(0, 0.2²), f = 2π·t·Wᵀ,
    features [cos f, sin f] of width `output_size`. times: (*batch, 1)."""

    output_size: int = 64

    @nn.compact
    def __call__(self, times):
        kernel = self.param('kernel', nn.initializers.normal(0.2), (self.output_size // 2, times.shape[-1]),
                            jnp.float32)
        f = 2.0 * np.pi * times @ kernel.T
        return jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)


class NoisePredictor(nn.Module):
    """ε_θ(s, x, t) → (*batch, D): time features → condition MLP(hidden_dims) (Mish, last layer linear), then the
    reverse MLP(hidden_dims + (D,)) (Mish, LayerNorm if `layer_norm`) on concat(x, s, condition)."""

    hidden_dims: Sequence[int]
    action_dim: int
    time_dim: int = 64
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations, x, times):
        condition = MishMLP(self.hidden_dims, name='condition_mlp')(FourierFeatures(self.time_dim, name='time')(times))
        inputs = jnp.concatenate([x, observations, condition], axis=-1)
        return MishMLP((*self.hidden_dims, self.action_dim), layer_norm=self.layer_norm, name='reverse_mlp')(inputs)


# ---------------------------------------------------------------------------------------- training
def step_times(steps):
    """Integer steps (*batch,) → the network's time input, float32 of shape (*batch, 1)."""
    return jnp.asarray(steps, jnp.float32)[..., None]


def forward_noising(rng, actions, num_steps):
    """t ~ U{1, …, T} per sample and ε ~ N(0, I); returns (x_t, t, ε) with x_t = sqrt(ᾱ_t)·a + sqrt(1 − ᾱ_t)·ε.

    actions a: (B, D). Keys: rng → (t, ε). t: int32 (B,)."""
    step_key, noise_key = jax.random.split(rng)
    steps = jax.random.randint(step_key, actions.shape[:-1], 1, num_steps + 1)
    noises = jax.random.normal(noise_key, actions.shape, actions.dtype)
    alpha_bars = jnp.asarray(vp_schedule(num_steps).alpha_bars)[steps][..., None]
    return jnp.sqrt(alpha_bars) * actions + jnp.sqrt(1.0 - alpha_bars) * noises, steps, noises


def ensemble_mean_action_gradient(critic_fn, observations, actions):
    """g = ∇_x [(1/K) Σ_k Q_k(s, x)] at x = actions, per sample, as a constant (stop-gradient).

    critic_fn(observations, actions) → (K, B), called as given (pass stored parameters: a fixed call)."""
    total_q = lambda x: jnp.sum(jnp.mean(critic_fn(observations, x), axis=0))  # noqa: E731 (rows independent)
    return jax.lax.stop_gradient(jax.grad(total_q)(actions))


def noise_prediction_loss(predicted, targets, valid):
    """(1/B) Σ_b w_b · (1/D) Σ_d (targets − predicted)²_{b,d}: invalid rows are multiplied by w = 0 (FIX: not
    raised to the power w) and stay in the denominator. predicted, targets (B, D); valid (B,)."""
    return jnp.mean(valid * jnp.mean((targets - predicted) ** 2, axis=-1))


# -------------------------------------------------------------------------------------------- sampler
def ddpm_sample(noise_fn, observations, rng, action_size, num_steps, clip_before=False, clip_after=False):
    """DDPM sampler (§11.5) for observations (*batch, O) → (*batch, D):

        x_T ~ N(0, I); for t = T … 1:
            x̂0 = (x_t − sqrt(1 − ᾱ_t)·ε̂(s, x_t, t))/sqrt(ᾱ_t)
            clip_before (DAC): μ = [sqrt(ᾱ_{t−1})·β_t·clip(x̂0) + sqrt(α_t)·(1 − ᾱ_{t−1})·x_t]/(1 − ᾱ_t)
            else        (QSM): μ = x̂0                                     (jump to the prediction, KEEP)
            x_{t−1} = μ + 1[t > 1]·sqrt(β_t)·z                             (noise std sqrt(β_t), KEEP)
            clip_after  (QSM): x_{t−1} = clip(x_{t−1})

    With clip_before the last step returns clip(x̂0) exactly. The output is NOT clipped otherwise. Keys: rng →
    (x_T, step keys); the step keys are jax.random.split(·, T), the i-th used by step t = T − i."""
    schedule = jax.tree.map(jnp.asarray, vp_schedule(num_steps))
    noise_key, steps_key = jax.random.split(rng)
    noises = jax.random.normal(noise_key, (*observations.shape[:-1], action_size))

    def step(x, inputs):
        t, key = inputs
        alpha_bar = schedule.alpha_bars[t]
        predicted = noise_fn(observations, x, jnp.full((*x.shape[:-1], 1), t, jnp.float32))
        x0 = (x - jnp.sqrt(1.0 - alpha_bar) * predicted) / jnp.sqrt(alpha_bar)
        if clip_before:
            x = schedule.posterior_x0_coefs[t] * jnp.clip(x0, -1.0, 1.0) + schedule.posterior_xt_coefs[t] * x
        else:
            x = x0
        x = x + (t > 1) * jnp.sqrt(schedule.betas[t]) * jax.random.normal(key, x.shape, x.dtype)
        return (jnp.clip(x, -1.0, 1.0) if clip_after else x), None

    steps = jnp.arange(num_steps, 0, -1)
    x, _ = jax.lax.scan(step, noises, (steps, jax.random.split(steps_key, num_steps)))
    return x
