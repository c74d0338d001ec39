"""What DAC and QSM share (ALGORITHMS §11): everything but the actor loss.

A DDPM noise-prediction actor ε_θ(s, x, t) with the VP schedule (utils/diffusion.py), the pessimistic critic
ensemble bootstrapped with the DDPM sampler, and one gradient step on critic + actor loss. An agent sets
`LOSS_TYPE` (the reference code's `actor_loss_type`) and defines `actor_loss`, usually from `actor_inputs`.
"""

import jax
import jax.numpy as jnp

from utils import diffusion, rl
from utils.agent_base import ChunkedAgent

AGENT_OF_LOSS = {'dac': 'dac', 'qsm': 'qsm'}  # actor_loss_type -> the agent file that implements it


class DiffusionAgent(ChunkedAgent):
    """A diffusion-policy agent: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    LOSS_TYPE = None  # the actor_loss_type the subclass implements

    # ------------------------------------------------------------------------------ losses
    # critic_loss is ChunkedAgent's common TD loss (§1.4) with a' = the DDPM sampler's action.

    def actor_inputs(self, batch, grad_params, rng):
        """What both actor losses read, at noisy dataset actions x_t = sqrt(ᾱ_t)·a + sqrt(1 − ᾱ_t)·ε:
        (valid (B,), steps t (B,), noises ε (B, D), q_grads g = ∇_x Q̄*(s, x_t) (B, D, constant), predicted
        ε̂ = ε_θ(s, x_t, t) (B, D)). Keys: rng → forward noising (t, ε)."""
        observations, actions, valid = batch['observations'], self.flat_actions(batch['actions']), batch['valid']
        noisy_actions, steps, noises = diffusion.forward_noising(rng, actions, self.config.diffusion_steps)
        critic = 'target_critic' if self.config.use_target_critic_grad else 'critic'
        q_grads = diffusion.ensemble_mean_action_gradient(self.network.select(critic), observations,
                                                          noisy_actions)  # stored critic params: fixed call
        predicted = self.network.apply('actor', observations, noisy_actions, diffusion.step_times(steps),
                                       params=grad_params['actor'])
        return valid, steps, noises, q_grads, predicted

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
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
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if config.actor_loss_type != cls.LOSS_TYPE:
            other = AGENT_OF_LOSS.get(config.actor_loss_type)
            raise ValueError(f'The {config.agent_name} agent implements actor_loss_type "{cls.LOSS_TYPE}" only (got '
                             f'{config.actor_loss_type!r})' + (f'; use --agent={other} for that loss.' if other else '.'))
        if config.beta_schedule != 'vp':
            raise ValueError(f'Only the "vp" beta schedule is implemented, got {config.beta_schedule!r}.')
        if config.time_dim < 2 or config.time_dim % 2:
            raise ValueError(f'time_dim must be a positive even number, got {config.time_dim}.')
        if config.alpha < 0:
            raise ValueError(f'alpha must be >= 0, got {config.alpha}.')
        action_size = ex_chunks.shape[-1]

        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'actor': (diffusion.NoisePredictor(tuple(config.actor_hidden_dims), action_size, config.time_dim,
                                               config.actor_layer_norm), (ex_observations, ex_chunks, ex_times)),
        }
        optimizer = rl.make_optimizer(config.lr, float(config.clip_grad_norm) if config.clip_grad_norm else None)
        return cls.from_modules(seed, config, networks, optimizer,
                                targets={'target_critic': 'critic'})
