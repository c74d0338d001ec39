"""A random batch in the sampler's format (utils/datasets.py: the TD target's fields already at the chunk's end),
shared by the agents' loss tests."""

import jax
import jax.numpy as jnp


def random_batch(key, obs_dim, action_dim, horizon, batch_size):
    """Random observations, chunks of actions in [-1, 1], returns and next observations; every 4th row has an
    invalid chunk end (valid 0) and every 3rd row from row 1 reached a terminal state (bootstrap_mask 0), so a
    loss that ignores either weight is caught."""
    keys = jax.random.split(key, 4)
    return dict(
        observations=jax.random.normal(keys[0], (batch_size, obs_dim)),
        actions=jax.random.uniform(keys[1], (batch_size, horizon, action_dim), minval=-1, maxval=1),
        chunk_return=jax.random.normal(keys[2], (batch_size,)),
        bootstrap_mask=jnp.ones(batch_size).at[1::3].set(0.0),
        valid=jnp.ones(batch_size).at[::4].set(0.0),
        next_observation=jax.random.normal(keys[3], (batch_size, obs_dim)),
    )


def scan_updates(agent, batches):
    """U sequential `agent.update`s in one `lax.scan` over the leading axis of every batch array (as main.py's
    loop runs update-to-data steps), with the info averaged over U."""
    agent, infos = jax.lax.scan(lambda agent, batch: agent.update(batch), agent, batches)
    return agent, jax.tree.map(lambda x: x.mean(axis=0), infos)
