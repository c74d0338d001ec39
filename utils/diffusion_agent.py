"""What DAC and QSM share (ALGORITHMS §11): everything but the actor loss.

A DDPM noise-prediction actor ε_θ(s, x, t) with the VP schedule (utils/diffusion.py), the pessimistic critic
ensemble bootstrapped with the DDPM sampler, and one gradient step on critic + actor loss. An agent sets
`LOSS_TYPE` (the reference code's `actor_loss_type`) and defines `actor_loss`, usually from `actor_inputs`.
"""

import jax
import jax.numpy as jnp
import ml_collections

from utils import diffusion, rl
from utils.agent_base import ChunkedAgent
from utils.networks import CriticEnsemble

AGENT_OF_LOSS = {'dac': 'dac', 'qsm': 'qsm'}  # actor_loss_type -> the agent file that implements it


class DiffusionAgent(ChunkedAgent):
    """A diffusion-policy agent: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    LOSS_TYPE = None  # the actor_loss_type the subclass implements

    # ------------------------------------------------------------------------------ losses
    def critic_loss(self, batch, grad_params, rng):
        """Common TD loss (§1.4) with a' = clip(sample_actions(s')), the DDPM sampler."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        next_observations = batch['next_observations'][:, -1]
        next_actions = jax.lax.stop_gradient(jnp.clip(self.sample_actions(next_observations, rng), -1.0, 1.0))
        next_q = self.network.apply('target_critic', next_observations, next_actions)  # target: fixed call
        targets = rl.td_target(next_q, batch['rewards'][:, -1], batch['masks'][:, -1], self.config.discount,
                               self.config.horizon_length, self.config.rho)
        q = self.network.apply('critic', observations, actions, params=grad_params['critic'])
        loss = rl.critic_loss(q, jax.lax.stop_gradient(targets), batch['valid'][:, -1])
        return loss, {'critic/critic_loss': loss, 'critic/q_mean': q.mean(), 'critic/q_max': q.max(),
                      'critic/q_min': q.min()}

    def actor_inputs(self, batch, grad_params, rng):
        """What both actor losses read, at noisy dataset actions x_t = sqrt(ᾱ_t)·a + sqrt(1 − ᾱ_t)·ε:
        (valid (B,), steps t (B,), noises ε (B, D), q_grads g = ∇_x Q̄*(s, x_t) (B, D, constant), predicted
        ε̂ = ε_θ(s, x_t, t) (B, D)). Keys: rng → forward noising (t, ε)."""
        observations, actions, valid = batch['observations'], self.flat_actions(batch['actions']), batch['valid'][:, -1]
        noisy_actions, steps, noises = diffusion.forward_noising(rng, actions, self.config.diffusion_steps)
        critic = 'target_critic' if self.config.use_target_critic_grad else 'critic'
        q_grads = diffusion.ensemble_mean_action_gradient(self.network.select(critic), observations,
                                                          noisy_actions)  # stored critic params: fixed call
        predicted = self.network.apply('actor', observations, noisy_actions, diffusion.step_times(steps),
                                       params=grad_params['actor'])
        return valid, steps, noises, q_grads, predicted

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    def sample_actions(self, observations, rng):
        """The DDPM sampler (§11.5) for observations (*batch, O) → (*batch, D), clipped to [−1, 1] (a no-op with
        either sampler clip); stored actor parameters. No best-of-n."""
        actions = diffusion.ddpm_sample(self.network.select('actor'), observations, rng, self.action_size,
                                        self.config.diffusion_steps, self.config.clip_sampler_before,
                                        self.config.clip_sampler_after)
        return jnp.clip(actions, -1.0, 1.0)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, 'to_dict') else dict(config))
        if config.actor_loss_type != cls.LOSS_TYPE:
            other = AGENT_OF_LOSS.get(config.actor_loss_type)
            raise ValueError(f'The {config.agent_name} agent implements actor_loss_type "{cls.LOSS_TYPE}" only (got '
                             f'{config.actor_loss_type!r})' + (f'; use --agent={other} for that loss.' if other else '.'))
        if config.beta_schedule != 'vp':
            raise ValueError(f'Only the "vp" beta schedule is implemented, got {config.beta_schedule!r}.')
        if config.diffusion_steps < 1 or config.horizon_length < 1 or config.time_dim < 2 or config.time_dim % 2:
            raise ValueError('diffusion_steps and horizon_length must be >= 1 and time_dim a positive even number.')
        if config.alpha < 0:
            raise ValueError(f'alpha must be >= 0, got {config.alpha}.')
        ex_observations = jnp.asarray(ex_observations, jnp.float32).reshape(1, -1)
        config.ob_dims, config.action_dim = ex_observations.shape[-1], int(jnp.shape(ex_actions)[-1])
        config = ml_collections.FrozenConfigDict(config)
        action_size = (config.horizon_length if config.action_chunking else 1) * config.action_dim
        ex_chunks, ex_times = jnp.zeros((1, action_size)), jnp.zeros((1, 1))

        modules = {
            'critic': CriticEnsemble(tuple(config.value_hidden_dims), config.num_qs, config.value_layer_norm),
            'actor': diffusion.NoisePredictor(tuple(config.actor_hidden_dims), action_size, config.time_dim,
                                              config.actor_layer_norm),
        }
        inputs = {'critic': (ex_observations, ex_chunks), 'actor': (ex_observations, ex_chunks, ex_times)}
        rng, *init_keys = jax.random.split(jax.random.PRNGKey(seed), len(modules) + 1)
        params = {name: rl.init_params(modules[name], key, *inputs[name]) for name, key in zip(modules, init_keys)}
        optimizer = rl.make_optimizer(config.lr, float(config.clip_grad_norm) if config.clip_grad_norm else None)
        network = rl.TrainState.create(modules, params, optimizer, targets={'target_critic': 'critic'})
        return cls(rng=rng, network=network, config=config)
