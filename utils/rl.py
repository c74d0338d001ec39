"""RL machinery shared by every agent: TD target and critic loss (ALGORITHMS §1.4), tanh-Gaussian sampling,
log-probabilities and entropy temperature (§1.7), Polyak targets (§1.8), optimizer (§1.9), and
`TrainState`, the multi-network train state that every agent holds as `network`.

TrainState in one paragraph: `params` is ONE dict holding every network of an agent by name, e.g.
{'critic': ..., 'target_critic': ..., 'behavior_flow': ...}. Targets are declared as
{target name: online name}; a target shares its online network's module, starts as an exact copy of its
parameters, and is never seen by the optimizer: the single optax optimizer (and `trainable_params`)
covers only the non-target names. `apply(name, *inputs, params=None)` calls a network with the given
parameters (pass the ones being differentiated, `grad_params[name]`) or, by default, with the stored
ones (a fixed call: the stored parameters are constants of the loss). `apply_gradients(grads)` takes a
dict of gradients by name (entries for targets, if any, are ignored) and returns (new state, true global
gradient norm before clipping); `update_targets(tau)` applies the Polyak update to every target.

    state = TrainState.create({'critic': critic_def}, {'critic': critic_params}, make_optimizer(),
                              targets={'target_critic': 'critic'})
    grads, info = jax.grad(loss_fn, has_aux=True)(state.trainable_params)
    state, grad_norm = state.apply_gradients(grads)
    state = state.update_targets(tau)
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax


# ---------------------------------------------------------------------------------------- TD learning
def ensemble_std(q):
    """Population std (ddof = 0) over the ensemble axis 0, with gradient 0 where every member agrees.

    `jnp.std`'s gradient there is 0·∞ = NaN. With ten critics all ten must agree, which is vanishingly rare; two agree
    now and then in float32: ReBRAC with 2 critics on scene met a tied sample at update 7,012 and every parameter of
    its actor became NaN. The value is `jnp.std`'s everywhere; only the gradient at an exact tie changes, from NaN
    to 0 (|q1 − q2| has a kink there)."""
    variance = jnp.var(q, axis=0)
    tied = variance <= 0.0
    return jnp.where(tied, 0.0, jnp.sqrt(jnp.where(tied, 1.0, variance)))


def pessimistic_value(q, rho):
    """mean_k q − ρ·std_k q over the ensemble axis 0, population std (ddof = 0). q: (K, *batch)."""
    return jnp.mean(q, axis=0) - rho * ensemble_std(q)


def td_target(target_next_q, rewards, masks, discount, horizon_length, rho):
    """y = r + γ^H · m · (mean_k Q' − ρ·std_k Q'); target_next_q (K, B), rewards and masks (B,)."""
    return rewards + discount**horizon_length * masks * pessimistic_value(target_next_q, rho)


def critic_loss(q, targets, valid):
    """(1/(K·B)) Σ_k Σ_b w_b (Q_k(s_b, a_b) − y_b)²: rows with w = 0 count in the denominator.

    q (K, B), targets y (B,) (treated as given; stop their gradient before calling), valid w (B,)."""
    return jnp.mean(valid[None] * (q - targets[None]) ** 2)


# ------------------------------------------------------------------------------------- tanh-Gaussian
def log_one_minus_tanh_squared(u):
    """log(1 − tanh(u)²) in the stable form 2·(log 2 − u − softplus(−2u))."""
    return 2.0 * (np.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def tanh_gaussian_log_prob_from_pre_tanh(pre_tanh, means, log_stds):
    """log π(tanh(u)) = Σ_d [log N(u_d; μ_d, exp(ℓ_d)) − log(1 − tanh(u_d)²)], summed over the last axis."""
    z = (pre_tanh - means) * jnp.exp(-log_stds)
    gaussian = -0.5 * z**2 - log_stds - 0.5 * np.log(2.0 * np.pi)
    return jnp.sum(gaussian - log_one_minus_tanh_squared(pre_tanh), axis=-1)


def tanh_gaussian_sample(rng, means, log_stds):
    """Reparameterised sample y = tanh(μ + exp(ℓ)·ε), ε ~ N(0, I); returns (y, log π(y)) with the log-prob
    computed from the pre-tanh sample (never from atanh(y))."""
    pre_tanh = means + jnp.exp(log_stds) * jax.random.normal(rng, means.shape, means.dtype)
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob_from_pre_tanh(pre_tanh, means, log_stds)


def tanh_gaussian_log_prob(means, log_stds, actions, eps=1e-5):
    """log π(y) of given actions y (e.g. dataset actions), via u = atanh(clip(y, −1 + eps, 1 − eps))."""
    pre_tanh = jnp.arctanh(jnp.clip(actions, -1.0 + eps, 1.0 - eps))
    return tanh_gaussian_log_prob_from_pre_tanh(pre_tanh, means, log_stds)


def target_entropy(value, multiplier, action_dim):
    """The entropy target: `value` if set, else −multiplier·D."""
    return float(value) if value is not None else -multiplier * action_dim


def temperature_loss(alpha, log_probs, entropy_target):
    """α · (−(1/B) Σ_b sg(log π_b) − H_target): gradient to the temperature only; multiplies α itself (KEEP)."""
    return alpha * (-jnp.mean(jax.lax.stop_gradient(log_probs)) - entropy_target)


# ------------------------------------------------------------------------------- targets, optimizer
def polyak_update(target_params, online_params, tau):
    """target ← target + λ·(online − target) = (1 − λ)·target + λ·online, with the post-update online params."""
    return jax.tree.map(lambda t, o: t + tau * (o - t), target_params, online_params)


@functools.lru_cache(maxsize=None)
def make_optimizer(lr=3e-4, clip_grad_norm=None):
    """Adam(lr, β = (0.9, 0.999), ε = 1e-8), preceded by global-norm clipping when `clip_grad_norm` is set.

    Cached: agents built with the same settings share one optimizer object, so their static pytree metadata
    is equal and their states can be stacked and vmapped over seeds."""
    adam = optax.adam(learning_rate=lr, b1=0.9, b2=0.999, eps=1e-8)
    if clip_grad_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(clip_grad_norm), adam)


def init_params(module, rng, *example_inputs):
    """Parameters of a linen module initialised on example inputs."""
    return module.init(rng, *example_inputs)['params']


# -------------------------------------------------------------------------------------- train state
class TrainState(flax.struct.PyTreeNode):
    """Every network of one agent: one parameter dict, one optimizer over the trainable (non-target) ones.

    Fields: `step` (int32, optimizer steps taken), `params` {name: parameters} including targets,
    `opt_state` (optax state of the trainable networks), and static `modules` {name: linen module},
    `targets` {target name: online name}, `tx` (the optax transformation)."""

    step: jax.Array
    params: Any
    opt_state: Any
    modules: Any = flax.struct.field(pytree_node=False)
    targets: Any = flax.struct.field(pytree_node=False)
    tx: Any = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, modules, params, tx, targets=None):
        """modules and params: {name: module} and {name: parameters} of the online networks; targets:
        {target name: online name}, each created as an exact copy of its online network."""
        targets = dict(targets or {})
        modules, params = dict(modules), dict(params)
        for target, online in targets.items():
            if target in modules:
                raise ValueError(f'Target {target!r} must not also be given as an online network.')
            modules[target] = modules[online]
            params[target] = jax.tree.map(jnp.array, params[online])  # an exact copy
        trainable = {name: params[name] for name in modules if name not in targets}
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(trainable),
            modules=flax.core.FrozenDict(modules),
            targets=flax.core.FrozenDict(targets),
            tx=tx,
        )

    @property
    def trainable_names(self):
        return tuple(sorted(name for name in self.modules if name not in self.targets))

    @property
    def trainable_params(self):
        """{name: parameters} of the networks the optimizer trains (differentiate the loss w.r.t. these)."""
        return {name: self.params[name] for name in self.trainable_names}

    def apply(self, name, *inputs, params=None, **kwargs):
        """Network `name` on `inputs`, with `params` if given (gradient flows into them), else with the stored
        parameters (a fixed call)."""
        params = self.params[name] if params is None else params
        return self.modules[name].apply({'params': params}, *inputs, **kwargs)

    def select(self, name, params=None):
        """`apply` with the name (and optionally the parameters) bound, e.g. as a velocity function."""
        return functools.partial(self.apply, name, params=params)

    def apply_gradients(self, grads):
        """One optimizer step. grads: {name: gradient} (target entries are ignored). Returns (new state,
        global L2 norm of the trainable gradients before any clipping)."""
        grads = {name: grads[name] for name in self.trainable_names}
        trainable = self.trainable_params
        updates, opt_state = self.tx.update(grads, self.opt_state, trainable)
        new_params = {**self.params, **optax.apply_updates(trainable, updates)}
        new_state = self.replace(step=self.step + 1, params=new_params, opt_state=opt_state)
        return new_state, optax.global_norm(grads)

    def update_targets(self, tau, names=None):
        """Polyak update of the named targets (default: all) towards their online networks' current params."""
        params = dict(self.params)
        for target in self.targets if names is None else names:
            params[target] = polyak_update(params[target], params[self.targets[target]], tau)
        return self.replace(params=params)


def num_params(params):
    """Total number of parameters in a tree (works on `jax.eval_shape` outputs too)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


# ------------------------------------------------------------------ losses shared by several agents
def expectile_loss(differences, expectile):
    """(1/B) Σ_b |κ − 1[u_b < 0]| · u_b², u = differences (e.g. Q(s, a) − V(s)), κ = `expectile` (IQL, IFQL).

    Weight κ where u ≥ 0 and 1 − κ where u < 0; the mean runs over every entry, without a mask."""
    weights = jnp.where(differences < 0, 1.0 - expectile, expectile)
    return jnp.mean(weights * differences**2)


def entropy_regularised_actor_loss(q_values, log_probs, alpha, entropy_target):
    """SAC-style policy and temperature losses (§1.7), e.g. the edit policies of FEdit and QAM-E:

        (1/B) Σ_b (log π_b · sg(α) − q_b)  +  α · (−(1/B) Σ_b sg(log π_b) − H_target)

    q_values (B,) must carry the gradient into the policy (fixed critic, reparameterised action); log_probs
    (B,) from the same sample. Returns (total loss, temperature loss)."""
    alpha_loss = temperature_loss(alpha, log_probs, entropy_target)
    return jnp.mean(log_probs * jax.lax.stop_gradient(alpha) - q_values) + alpha_loss, alpha_loss
