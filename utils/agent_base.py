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
    """

    rng: jax.Array
    network: rl.TrainState
    config: Any = flax.struct.field(pytree_node=False)

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
