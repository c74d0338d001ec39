"""Helpers that the agents' tests share: an agent with other parameters or config, parameters moved away from their
initialisation, and the reference computations that several tests write out (the Euler sampler, the BC
flow-matching loss, the pessimistic ensemble value), written once here."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def with_params(agent, name, params):
    """The agent with network module `name`'s parameters replaced."""
    return agent.replace(network=agent.network.replace(params={**agent.network.params, name: params}))


def with_config(agent, **changes):
    """The agent with config entries changed; the agent's own config is never mutated (a FrozenConfigDict's
    as_configdict() is cached, so updating it in place would leak `changes` into every later call)."""
    return agent.replace(config=ml_collections.FrozenConfigDict({**agent.config.to_dict(), **changes}))


def perturbed(params, key, scale=0.3):
    """Every leaf plus scale · N(0, 1) noise, so that a network is far from its initialisation."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def global_norm(tree):
    """The global L2 norm of a pytree, in float64."""
    return np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)))


def to_float64(tree):
    """The pytree's floating leaves as float64 (for finite differences under jax_enable_x64)."""
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def euler_loop(apply_velocity, observations, noises, steps=10):
    """x ← x + v(s, x, i/T)/T for i = 0 … T−1, then clip to [-1, 1]: the spec's flow sampler written out.
    `apply_velocity(observations, x, t)` is a velocity network, e.g. `agent.network.select('behavior_flow')`."""
    x = noises
    for i in range(steps):
        x = x + apply_velocity(observations, x, jnp.full((*x.shape[:-1], 1), i / steps)) / steps
    return jnp.clip(x, -1.0, 1.0)


def bc_loss_direct(apply_velocity, observations, actions, valid, key):
    """The BC flow-matching loss with the agents' documented key split (noise, then time), averaged over the batch
    with invalid chunks weighted 0."""
    noise_key, time_key = jax.random.split(key)
    x0 = jax.random.normal(noise_key, actions.shape)
    t = jax.random.uniform(time_key, (actions.shape[0], 1))
    v = apply_velocity(observations, (1 - t) * x0 + t * actions, t)
    return jnp.sum(valid * jnp.mean((v - (actions - x0)) ** 2, axis=-1)) / actions.shape[0]


def np_pessimistic(q, rho):
    """mean − ρ · std over the ensemble axis 0 (the population std), in float64."""
    q = np.asarray(q, np.float64)
    return q.mean(0) - rho * np.sqrt(np.mean((q - q.mean(0)) ** 2, axis=0))


def adam_first_moment(opt_state):
    """The first-moment tree (mu) of the one Adam state inside an optax state."""
    (adam_state,) = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: hasattr(s, 'mu')) if hasattr(s, 'mu')]
    return adam_state.mu


def two_compiled_updates(agent, batch, next_batch, info_keys):
    """Two calls of a jitted `agent.update`, the second from the first's result. Checks what every agent's update
    must do: one trace and one compilation for both calls, the named infos (and every info finite), and the step
    counter at 2 (int32). Returns (agent after one update, its info, agent after two)."""
    traces = []

    def counted_update(agent, batch):
        traces.append(1)  # a Python side effect: runs only while tracing
        return agent.update(batch)

    update = jax.jit(counted_update)
    new_agent, info = update(agent, batch)
    newer_agent, _ = update(new_agent, next_batch)
    assert len(traces) == 1 and update._cache_size() == 1  # the second call neither retraces nor recompiles
    assert set(info_keys) <= set(info), set(info_keys) - set(info)
    assert all(np.isfinite(np.asarray(value)).all() for value in info.values())
    assert int(newer_agent.network.step) == 2 and newer_agent.network.step.dtype == jnp.int32
    return new_agent, info, newer_agent
