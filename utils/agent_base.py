"""What every agent shares: its state fields, flat action chunks, the common TD critic loss, the gradient step
and the config keys every agent has."""

import inspect
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from utils import rl
from utils.networks import CriticEnsemble, VelocityField

# Config keys that count something (steps, samples, critics) and must be at least 1, checked in `prepare` for every
# agent that has them.
COUNT_KEYS = ('horizon_length', 'num_qs', 'flow_steps', 'best_of_n', 'num_samples', 'actor_freq', 'diffusion_steps')


def shared_config(agent_name, **agent_keys):
    """An agent's `get_config()`: the keys every agent has, with the benchmark's defaults, then the agent's own
    `agent_keys` (each commented where the agent passes it; a shared key among them replaces the default).
    Which networks the widths and LayerNorm flags size, which targets `tau` moves and whether Adam's gradients
    are clipped: the comment above each agent's call."""
    shared = dict(
        agent_name=agent_name,  # Agent name (file in agents/).
        lr=3e-4,  # Adam learning rate.
        batch_size=256,  # Batch size (read by the training loop).
        actor_hidden_dims=(512, 512, 512, 512),  # Hidden widths of the policy networks.
        value_hidden_dims=(512, 512, 512, 512),  # Hidden widths of each critic member.
        actor_layer_norm=False,  # LayerNorm in the policy networks.
        value_layer_norm=True,  # LayerNorm in the critic.
        horizon_length=5,  # H: action chunk length (5 manipulation, 1 mazes; set per domain by the run).
        action_chunking=True,  # Act with flat chunks of H actions (D = H·A); False: first action, γ^H bootstrap.
        num_qs=10,  # K: critic ensemble size.
        rho=0.5,  # Pessimism: TD target uses mean − rho·std over the ensemble.
        discount=0.99,  # γ (per step; the TD target uses γ^H).
        tau=0.005,  # λ: Polyak rate of the target critic (and of the agent's other target networks).
    )
    return ml_collections.ConfigDict({**shared, **agent_keys})


def config_comments(get_config):
    """{key: comment} of an agent's config keys, read from the `key=value,  # comment` lines of `shared_config` and
    of the agent's `get_config` (the agent's line wins): what `main.py --help` shows for each `--agent.<key>`."""
    comments = {}
    for function in (shared_config, get_config):
        for line in inspect.getsource(function).splitlines():
            match = re.match(r'\s+(\w+)=.*?,\s+#\s*(.+)$', line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
    return comments


class ChunkedAgent(flax.struct.PyTreeNode):
    """Base of every agent: a PRNG key, every network in one `rl.TrainState`, and the (static) config.

    Agents act on and criticise flat chunks of H actions (D = H·A, ALGORITHMS §1.2). Subclasses define
    `actor_loss` (or `total_loss`), `sample_actions(observations, rng)` and `create(...)` (`prepare`, then
    `from_modules`); `critic_loss` is the common TD loss bootstrapped with the acting policy unless an agent
    overrides it (or `bootstrap_actions`), and `update` is one gradient step on `total_loss` unless an agent
    needs another schedule (ReBRAC).

    `update` and every agent's `sample_actions` are wrapped in `jax.jit`, as in the reference code: called directly
    (a notebook, a script, a test) each compiles once per input structure. Inside main.py's compiled loop the same
    calls are traced into the enclosing program, so the fused loop's results are those of its own compilation
    (unchanged, bit for bit, by the wrappers).

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

    # --------------------------------------------------------------------------------- creation
    @staticmethod
    def prepare(config, ex_observations, ex_actions):
        """create()'s first step: a frozen copy of `config` (a ConfigDict or a dict) with `ob_dims` and `action_dim`
        set from the examples (observations (O,) or (1, O), actions (A,) or (1, A)), and the example inputs the
        networks are initialised on: observations (1, O), flat chunks (1, D) and flow times (1, 1)."""
        config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, 'to_dict') else dict(config))
        too_small = [f'{key} = {config[key]}' for key in COUNT_KEYS if key in config and config[key] < 1]
        if too_small:
            raise ValueError(f'{", ".join(too_small)}: must be at least 1.')
        ex_observations = jnp.asarray(ex_observations, jnp.float32).reshape(1, -1)
        config.ob_dims, config.action_dim = ex_observations.shape[-1], int(jnp.shape(ex_actions)[-1])
        action_size = (config.horizon_length if config.action_chunking else 1) * config.action_dim
        return ml_collections.FrozenConfigDict(config), ex_observations, jnp.zeros((1, action_size)), jnp.zeros((1, 1))

    @staticmethod
    def critic_network(config, *inputs):
        """A `networks` entry of `from_modules`: config.num_qs critics of config.value_hidden_dims on the example
        `inputs` (observations and chunks; CGQL's critic also sees the flow time)."""
        return CriticEnsemble(tuple(config.value_hidden_dims), config.num_qs, config.value_layer_norm), inputs

    @staticmethod
    def velocity_network(config, ex_observations, ex_chunks, ex_times):
        """A `networks` entry of `from_modules`: a flow's velocity field v(s, x_t, t) of config.actor_hidden_dims."""
        module = VelocityField(tuple(config.actor_hidden_dims), ex_chunks.shape[-1], config.actor_layer_norm)
        return module, (ex_observations, ex_chunks, ex_times)

    @classmethod
    def from_modules(cls, seed, config, networks, optimizer, targets):
        """A fresh agent from `networks` {name: (linen module, example inputs)}: each module initialised on its
        example inputs with its own split of PRNGKey(seed), in the mapping's order, all in one `rl.TrainState`
        with `optimizer` and the EMA `targets` {target: online name}."""
        rng, *init_keys = jax.random.split(jax.random.PRNGKey(seed), len(networks) + 1)
        modules = {name: module for name, (module, _) in networks.items()}
        params = {name: rl.init_params(module, key, *inputs)
                  for (name, (module, inputs)), key in zip(networks.items(), init_keys)}
        return cls(rng=rng, network=rl.TrainState.create(modules, params, optimizer, targets=targets), config=config)

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

    def critic_values(self, name, observations, actions, params=None):
        """Q_k(s, a) of every member, shape (K, *batch), of the critic `name` ('critic' or 'target_critic');
        stored parameters unless `params` are given."""
        return self.network.apply(name, observations, actions, params=params)

    def q_mean(self, observations, actions):
        """Online critic ensemble mean (no pessimism), fixed call: gradients reach only the inputs."""
        return jnp.mean(self.critic_values('critic', observations, actions), axis=0)

    # ---------------------------------------------------------------- the common TD critic (§1.4)
    def bootstrap_actions(self, next_observations, rng):
        """a' of the TD target: the acting policy's clip(sample_actions(s')), a constant."""
        return jax.lax.stop_gradient(jnp.clip(self.sample_actions(next_observations, rng), -1.0, 1.0))

    def td_loss(self, batch, grad_params, rng):
        """The common TD loss (§1.4) of the online critic against the target critic at (s', a'), and the online
        Q of shape (K, B), from the batch's chunk-end fields (utils/datasets.py): the H-step return, mask and s'."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        next_actions = self.bootstrap_actions(batch['next_observation'], rng)
        next_q = self.critic_values('target_critic', batch['next_observation'], next_actions)  # target: fixed call
        targets = rl.td_target(next_q, batch['chunk_return'], batch['bootstrap_mask'], self.config.discount,
                               self.config.horizon_length, self.config.rho)
        q = self.critic_values('critic', observations, actions, params=grad_params['critic'])
        return rl.critic_loss(q, jax.lax.stop_gradient(targets), batch['valid']), q

    @staticmethod
    def critic_info(loss, q):
        """The critic metrics every agent logs."""
        return {'critic/critic_loss': loss, 'critic/q_mean': q.mean(), 'critic/q_max': q.max(),
                'critic/q_min': q.min()}

    def critic_loss(self, batch, grad_params, rng):
        """The common TD loss; agents with more critic terms (DSRL, CGQL) or another loss (IFQL) override it."""
        loss, q = self.td_loss(batch, grad_params, rng)
        return loss, self.critic_info(loss, q)

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

    @jax.jit
    def update(self, batch):
        """One gradient step on the total loss, then the EMA (rate `tau`) of every target network. Pure."""
        rng, network, info = self.gradient_step(batch)
        network = network.update_targets(self.config.tau)  # post-update online parameters
        return self.replace(rng=rng, network=network), info
