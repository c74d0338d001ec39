"""What every agent shares: its state fields, flat action chunks, and the scan over update-to-data batches."""

from typing import Any

import flax
import jax
import jax.numpy as jnp

from utils import rl


class ChunkedAgent(flax.struct.PyTreeNode):
    """Base of every agent: a PRNG key, every network in one `rl.TrainState`, and the (static) config.

    Agents act on and criticise flat chunks of H actions (D = H·A, ALGORITHMS §1.2). Subclasses define
    `critic_loss` and `actor_loss` (or `total_loss`), `sample_actions(observations, rng)` and `create(...)`;
    `update` is one gradient step on `total_loss` unless an agent needs another schedule (ReBRAC).

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

    def total_loss(self, batch, grad_params, rng):
        """L_critic + L_actor: one scalar, differentiated once w.r.t. every trainable network."""
        critic_key, actor_key = jax.random.split(rng)
        critic_loss, critic_info = self.critic_loss(batch, grad_params, critic_key)
        actor_loss, actor_info = self.actor_loss(batch, grad_params, actor_key)
        return critic_loss + actor_loss, {**critic_info, **actor_info}

    def gradient_step(self, batch):
        """(next PRNG key, network after one optimiser step on `total_loss`, info with the true global gradient
        norm); the optimiser (Adam, with global-norm clipping where the agent configures it) is the network's."""
        rng, loss_key = jax.random.split(self.rng)
        grads, info = jax.grad(self.total_loss, argnums=1, has_aux=True)(batch, self.network.trainable_params,
                                                                         loss_key)
        network, info['grad/norm'] = self.network.apply_gradients(grads)  # the norm before clipping
        return rng, network, info

    def update(self, batch):
        """One gradient step on the total loss, then the EMA (rate `tau`) of every target network. Pure."""
        rng, network, info = self.gradient_step(batch)
        network = network.update_targets(self.config.tau)  # post-update online parameters
        return self.replace(rng=rng, network=network), info

    def batch_update(self, batch):
        """U sequential updates over the leading axis of every batch array; info averaged over U."""
        agent, infos = jax.lax.scan(lambda agent, minibatch: agent.update(minibatch), self, batch)
        return agent, jax.tree.map(lambda x: x.mean(axis=0), infos)
