"""Flax (linen) networks shared by every agent (ALGORITHMS §1.6).

* `MLP`: Dense layers with tanh-approximate GELU, optional post-activation LayerNorm (eps 1e-6),
  Xavier-uniform kernels and zero biases.
* `CriticEnsemble`: K independently initialised Q-networks on concat(inputs), one `nn.vmap`-ed MLP
  (parameters carry a leading axis K); output (K, *batch).
* `ValueNetwork`: one MLP with LayerNorm on the observation → scalar (*batch,).
* `VelocityField`: MLP on concat(s, x, t) → D; called without `times` it is the one-step policy on
  concat(s, z).
* `TanhGaussianPolicy`: trunk MLP (activate_final) and two Dense(D) heads, mean and log-std (clipped to
  [-20, 2]); sampling and log-probabilities live in `utils/rl.py`.
* `LogParam`: one trainable float32 scalar ℓ, value exp(ℓ) (entropy temperatures).
* `DeterministicTanhActor` (ReBRAC, §12): trunk MLP (activate_final) and a Dense(D) mean head with a small
  variance-scaling init; returns tanh(mean).

Every module takes inputs with arbitrary leading batch axes (including none).
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def default_init():
    """Xavier-uniform kernels: uniform on ±sqrt(6 / (fan_in + fan_out))."""
    return nn.initializers.xavier_uniform()


class MLP(nn.Module):
    """Dense → GELU (tanh approximation) → LayerNorm (if enabled) per layer; the last layer is linear unless
    `activate_final`. `hidden_dims` lists every layer width, the output width last."""

    hidden_dims: Sequence[int]
    activate_final: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=default_init(), bias_init=nn.initializers.zeros)(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = nn.gelu(x, approximate=True)
                if self.layer_norm:
                    x = nn.LayerNorm(epsilon=1e-6)(x)
        return x


class _ScalarMLP(nn.Module):
    """MLP(hidden_dims + (1,)) on the concatenated inputs, output squeezed to (*batch,)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, *inputs):
        x = jnp.concatenate(inputs, axis=-1)
        return MLP((*self.hidden_dims, 1), activate_final=False, layer_norm=self.layer_norm)(x)[..., 0]


class CriticEnsemble(nn.Module):
    """K = `num_qs` independent Q-networks on concat(*inputs), e.g. (observations, actions) → (K, *batch).

    The members are one vmapped module: every parameter has a leading axis of size K, and each member is
    initialised from its own split of the init key."""

    hidden_dims: Sequence[int]
    num_qs: int = 10
    layer_norm: bool = True

    @nn.compact
    def __call__(self, *inputs):
        members = nn.vmap(
            _ScalarMLP,
            variable_axes={'params': 0},
            split_rngs={'params': True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_qs,
        )
        return members(self.hidden_dims, self.layer_norm, name='members')(*inputs)


class ValueNetwork(nn.Module):
    """State value V(s): one MLP (LayerNorm by default) on concat(*inputs) → (*batch,)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, *inputs):
        return _ScalarMLP(self.hidden_dims, self.layer_norm, name='value')(*inputs)


class VelocityField(nn.Module):
    """Flow velocity v(s, x, t) → D on concat(s, x, t), time as the raw scalar t of shape (*batch, 1).

    With `times=None` the same network is the one-step policy μ(s, z) on concat(s, z)."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations, actions, times=None):
        inputs = [observations, actions] if times is None else [observations, actions, times]
        x = jnp.concatenate(inputs, axis=-1)
        return MLP((*self.hidden_dims, self.action_dim), activate_final=False, layer_norm=self.layer_norm)(x)


class TanhGaussianPolicy(nn.Module):
    """Tanh-Gaussian head on concat(*inputs): returns (means, log_stds), log-std clipped to [-20, 2].

    The action is tanh(u), u ~ N(means, exp(log_stds)²); see `utils.rl.tanh_gaussian_sample`."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, *inputs):
        x = jnp.concatenate(inputs, axis=-1)
        x = MLP(self.hidden_dims, activate_final=True, layer_norm=self.layer_norm)(x)
        means = nn.Dense(self.action_dim, kernel_init=default_init(), name='mean')(x)
        log_stds = nn.Dense(self.action_dim, kernel_init=default_init(), name='log_std')(x)
        return means, jnp.clip(log_stds, self.log_std_min, self.log_std_max)


class LogParam(nn.Module):
    """A trainable scalar stored as its float32 logarithm; returns exp(log_value)."""

    init_value: float = 1.0

    @nn.compact
    def __call__(self):
        log_value = self.param('log_value', lambda _: jnp.full((), jnp.log(self.init_value), jnp.float32))
        return jnp.exp(log_value)


class DeterministicTanhActor(nn.Module):
    """Deterministic tanh actor of ReBRAC (ALGORITHMS §12): trunk MLP on concat(*inputs) (activate_final), mean
    head Dense(D) with a variance-scaling kernel init (scale `final_fc_init_scale`, fan-average, uniform: limit
    sqrt(3·scale/((fan_in + fan_out)/2))) and a zero bias; returns the action tanh(mean) of shape (*batch, D)."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    final_fc_init_scale: float = 0.01

    @nn.compact
    def __call__(self, *inputs):
        x = jnp.concatenate(inputs, axis=-1)
        x = MLP(self.hidden_dims, activate_final=True, layer_norm=self.layer_norm)(x)
        kernel_init = nn.initializers.variance_scaling(self.final_fc_init_scale, 'fan_avg', 'uniform')
        means = nn.Dense(self.action_dim, kernel_init=kernel_init, bias_init=nn.initializers.zeros, name='mean')(x)
        return jnp.tanh(means)
