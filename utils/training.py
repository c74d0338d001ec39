"""The compiled training steps of main.py, vmapped over the members of a run (seeds, swept values).

Every function takes the members' agents stacked along a leading axis (`stack`) and their PRNG keys (M, 2);
the dataset is shared, not mapped. Batches are sampled on the device inside the compiled loop, so training
needs no host round trip per update; agents and replay buffers are donated, so they are updated in place.
A member gets exactly the keys, batches and updates that it gets as a run on its own.
"""

import functools

import jax
import jax.numpy as jnp

from utils import datasets


def stack(trees):
    """Members' pytrees stacked along a new leading axis (the axis every vmapped function maps over)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


def over_members(fn, in_axes=0):
    """`jax.vmap(fn, in_axes)` over the members' leading axis, except that one member runs unmapped.

    With a single member the vmapped program would still be a batched one (matmuls with a batch dimension of
    one), which XLA:CPU runs markedly slower than the plain program (FQL at the paper's size: 177 vs 127 ms per
    update); a one-member run is the common case, so it gets the plain program.
    """
    def mapped(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        num_members = {jax.tree.leaves(arg)[0].shape[0] for arg, axis in zip(args, axes) if axis == 0}
        if num_members != {1}:
            return jax.vmap(fn, in_axes=in_axes)(*args)
        squeezed = [unstack(arg, 0) if axis == 0 else arg for arg, axis in zip(args, axes)]
        return jax.tree.map(lambda leaf: leaf[None], fn(*squeezed))

    return mapped


def make_train_functions(config, balanced, utd_ratio):
    """Jitted (offline_updates, online_step, act, act_step), all vmapped over members.

    offline_updates(agents, data, keys, step, num_updates): `num_updates` updates (a `lax.scan`) per member,
        the last of them the `step`-th; the batch of update u is drawn with the member's key folded with u, so
        results do not depend on how the updates are split into calls (--log_interval, --save_interval).
        Returns the agents and each member's metrics of the last update.
    online_step(agents, buffers, offline_data, transitions, keys, step, update): add one transition to each
        member's buffer of online rows, then (if `update`) `utd_ratio` updates; metrics averaged over them.
        Batches are drawn from the offline data (shared by the members, not mapped) followed by the member's
        online rows, or with `balanced` half from each (RLPD).
    act(agents, observations, keys) and act_step(agents, observations, keys, step): each member's actions.
    """
    batch_size, horizon, discount = config.batch_size, config.horizon_length, config.discount
    fold_in = over_members(jax.random.fold_in, in_axes=(0, None))  # each member's key, folded with one step

    def sample_online_batch(buffer, offline_data, key):
        if not balanced:  # the protocol's replay buffer: the dataset, then the online transitions
            offline_rows = offline_data['observations'].shape[0]
            return datasets.sample_chunks(datasets.concatenate_rows(offline_data, buffer.data), key, batch_size,
                                          horizon, discount, size=offline_rows + buffer.size)
        offline_key, online_key = jax.random.split(key)
        halves = (
            datasets.sample_chunks(offline_data, offline_key, batch_size // 2, horizon, discount),
            datasets.sample_chunks(buffer.data, online_key, batch_size // 2, horizon, discount, size=buffer.size),
        )
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *halves)

    @functools.partial(jax.jit, static_argnames='num_updates', donate_argnums=(0,))
    def offline_updates(agents, data, keys, step, num_updates):
        updates = step - num_updates + 1 + jnp.arange(num_updates)  # the global index of each update

        def member_updates(agent, key):  # the dataset is shared: closed over, not mapped
            update_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, updates)
            agent, infos = jax.lax.scan(
                lambda agent, key: agent.update(datasets.sample_chunks(data, key, batch_size, horizon, discount)),
                agent, update_keys)
            return agent, jax.tree.map(lambda x: x[-1], infos)  # the metrics of the last update, as logged

        return over_members(member_updates)(agents, keys)

    @functools.partial(jax.jit, donate_argnums=(0, 1), static_argnames='update')
    def online_step(agents, buffers, offline_data, transitions, keys, step, update):
        def member_step(agent, buffer, transition, key):
            buffer = buffer.add(transition)
            if not update:
                return agent, buffer, {}
            agent, infos = jax.lax.scan(lambda agent, key: agent.update(sample_online_batch(buffer, offline_data, key)),
                                        agent, jax.random.split(key, utd_ratio))
            return agent, buffer, jax.tree.map(lambda x: x.mean(0), infos)

        return over_members(member_step)(agents, buffers, transitions, fold_in(keys, step))

    @jax.jit
    def act(agents, observations, keys):
        """observations (M, O) or (M, N, O), keys (M, 2): each member's actions from its own observations."""
        return over_members(lambda agent, observations, key: agent.sample_actions(observations, key))(
            agents, observations, keys)

    @jax.jit
    def act_step(agents, observations, keys, step):
        return act(agents, observations, fold_in(keys, step))

    return offline_updates, online_step, act, act_step
