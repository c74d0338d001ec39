"""What every agent shares: its state fields, flat action chunks, and the scan over update-to-data batches."""

from typing import Any

import flax
import jax
import jax.numpy as jnp

from utils import rl


class ChunkedAgent(flax.struct.PyTreeNode):
    """Base of every agent: a PRNG key, every network in one `rl.TrainState`, and the (static) config.

    Agents act on and criticise flat chunks of H actions (D = H·A, ALGORITHMS §1.2). Subclasses define
    `update(batch)`, `sample_actions(observations, rng)` and `create(...)`.

    `hyper` holds traced values of scalar hyperparameters that one vmapped program sweeps (main.py
    `--hyper_sweep`); it is empty otherwise. Agents read the keys in `SWEEPABLE` through
    `hyperparameter(name)`, and only in arithmetic: branches on them read the static config, which holds a
    value of the same sign as every swept one.
    """

    SWEEPABLE = ()  # config keys read through hyperparameter(); set by each agent

    rng: jax.Array
    network: rl.TrainState
    config: Any = flax.struct.field(pytree_node=False)
    hyper: dict = flax.struct.field(default_factory=dict)

    def hyperparameter(self, name):
        """config[name], or its traced per-member value when a vmapped run sweeps it."""
        return self.hyper[name] if name in self.hyper else self.config[name]

    def with_swept(self, name, value, static_config):
        """This agent with `name` traced at `value` and the shared static config (so members stack)."""
        if name not in self.SWEEPABLE:
            raise ValueError(f'{name} cannot be swept in one program for {type(self).__name__}; '
                             f'sweepable: {", ".join(self.SWEEPABLE)}.')
        return self.replace(config=static_config, hyper={**self.hyper, name: jnp.asarray(value, jnp.float32)})

    @property
    def action_size(self):
        """D: the flat action dimension every network sees (H·A with action chunking, else A)."""
        chunk = self.config.horizon_length if self.config.action_chunking else 1
        return chunk * self.config.action_dim

    def flat_actions(self, actions):
        """Dataset chunks (B, H, A) → (B, D) in row-major order (only the first action without chunking)."""
        if self.config.action_chunking:
            return actions.reshape(actions.shape[0], -1)
        return actions[:, 0, :]

    def q_mean(self, observations, actions):
        """Online critic ensemble mean (no pessimism), fixed call: gradients reach only the inputs."""
        return jnp.mean(self.network.apply('critic', observations, actions), axis=0)

    def batch_update(self, batch):
        """U sequential updates over the leading axis of every batch array; info averaged over U."""
        agent, infos = jax.lax.scan(lambda agent, minibatch: agent.update(minibatch), self, batch)
        return agent, jax.tree.map(lambda x: x.mean(axis=0), infos)
