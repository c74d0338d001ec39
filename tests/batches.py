"""A random batch in the sampler's format (utils/datasets.py: the TD target's fields already at the chunk's end),
shared by the agents' loss tests, and the check of the fused update loop that every agent's tests run."""

import jax
import jax.numpy as jnp
import numpy as np


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


def assert_trees_close(a, b, rtol=1e-4, atol=1e-6):
    """Two pytrees of arrays with the same leaves, equal up to float32 reassociation."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def assert_fused_updates_match_sequential_updates(agent, other, batches, update=None):
    """What main.py's fused loop relies on, for any agent. `scan_updates` over U batches (stacked on a leading axis)
    compiles once, ends where U sequential `update(agent, batch)` calls end and reports the mean of their infos;
    vmapped over two members (`agent` and `other`: two seeds, as in --num_seeds), each member ends where its own scan
    ends. `update`: a jitted single update (the test module's, to reuse its compilation); by default a new one."""
    update = update or jax.jit(lambda agent, batch: agent.update(batch))
    batch_update = jax.jit(lambda agent, batches: scan_updates(agent, batches))
    scanned, info = batch_update(agent, batches)
    batch_update(scanned, batches)
    assert batch_update._cache_size() == 1  # the second call neither retraces nor recompiles

    sequential, infos = agent, []
    for i in range(len(jax.tree.leaves(batches)[0])):
        sequential, step_info = update(sequential, jax.tree.map(lambda x: x[i], batches))
        infos.append(step_info)
    assert_trees_close(scanned.network.params, sequential.network.params, atol=1e-5)
    assert set(info) == set(infos[0])
    assert all(np.isfinite(np.asarray(value)).all() for value in info.values())  # assert_allclose lets NaN equal NaN
    for key in info:
        np.testing.assert_allclose(info[key], np.mean([step_info[key] for step_info in infos]), rtol=1e-4, atol=1e-5)

    stacked = jax.tree.map(lambda *x: jnp.stack(x), agent, other)
    vmapped, _ = jax.jit(jax.vmap(scan_updates, in_axes=(0, None)))(stacked, batches)
    for member, alone in enumerate((scanned, batch_update(other, batches)[0])):
        assert_trees_close(jax.tree.map(lambda x: x[member], vmapped.network.params), alone.network.params, atol=1e-5)
