"""FQL — Flow Q-Learning (Park, Li & Levine, 2025).

A behaviour flow f_β is trained by flow matching on the dataset chunks, and a one-step policy μ_ω(s, z) maps
noise straight to an action. The distinguishing idea: μ_ω never backpropagates through the flow's sampler;
instead it is *distilled* towards the BC flow's Euler-ODE output for the same noise z (a constant regression
target) while it maximises the critic, −Q̄(s, clip(μ_ω(s, z))) + alpha·‖μ_ω(s, z) − ODE_β(s, z)‖². The
one-step policy acts and provides the TD targets of the usual pessimistic critic ensemble.
Specification: ALGORITHMS.md §4.

Networks (reference-code names in brackets): `critic` + `target_critic`; `behavior_flow` [actor_bc_flow] = f_β
(no target); `one_step_actor` [actor_onestep_flow] = μ_ω, the velocity-field architecture on (s, z).

Differences from the reference code: Polyak targets from the post-update parameters and `grad/norm` as the
true global norm (FIX). Kept: no normalisation of the Q loss, pessimistic TD target mean − ρ·std, chunked
actions and valid weights.
"""

import jax
import jax.numpy as jnp

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config
from utils.networks import VelocityField


class FQLAgent(ChunkedAgent):
    """FQL agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('alpha',)  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    def distillation_targets(self, observations, noises):
        """a_β = clip(EulerODE(f_β, s, z)) with the stored BC-flow parameters: a constant regression target."""
        behavior_flow = self.network.select('behavior_flow')  # stored parameters: fixed call
        return jax.lax.stop_gradient(flow.euler_ode(behavior_flow, observations, noises, self.config.flow_steps))

    # ------------------------------------------------------------------------------ losses
    # critic_loss is ChunkedAgent's common TD loss (§1.4) with a' = the one-step policy's action.

    def actor_loss(self, batch, grad_params, rng):
        """L_BC(f_β) + alpha·(1/(B·D))‖μ_ω(s, z) − a_β‖² − (1/B)Σ Q̄(s, clip(μ_ω(s, z))) (§4).

        Keys: rng → (BC flow loss, noise z)."""
        bc_key, noise_key = jax.random.split(rng)
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        bc_loss = flow.bc_flow_loss(self.network.select('behavior_flow', grad_params['behavior_flow']),
                                    observations, actions, batch['valid'], bc_key)

        noises = jax.random.normal(noise_key, actions.shape)
        targets = self.distillation_targets(observations, noises)  # constant
        one_step_actions = self.network.apply('one_step_actor', observations, noises,
                                              params=grad_params['one_step_actor'])
        distill_loss = jnp.mean((one_step_actions - targets) ** 2)  # no valid mask (KEEP)
        q = self.q_mean(observations, jnp.clip(one_step_actions, -1.0, 1.0))  # critic fixed; grads reach ω
        q_loss = -q.mean()  # not normalised by |Q| (KEEP)

        loss = bc_loss + self.hyperparameter('alpha') * distill_loss + q_loss
        return loss, {'actor/actor_loss': loss, 'actor/bc_flow_loss': bc_loss, 'actor/distill_loss': distill_loss,
                      'actor/q_loss': q_loss, 'actor/q': q.mean(),
                      'actor/one_step_abs_action': jnp.abs(one_step_actions).mean()}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """clip(μ_ω(s, z)), z ~ N(0, I), for observations (*batch, O) → (*batch, D); best-of-n with the online
        critic. Stored parameters throughout."""

        def sample(observations, key):
            noises = jax.random.normal(key, (*observations.shape[:-1], self.action_size))
            return jnp.clip(self.network.apply('one_step_actor', observations, noises), -1.0, 1.0)

        return flow.best_of_n(sample, self.q_mean, observations, rng, self.config.best_of_n)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if config.alpha < 0:
            raise ValueError(f'alpha must be >= 0, got {config.alpha}.')
        action_size = ex_chunks.shape[-1]

        actor_dims = tuple(config.actor_hidden_dims)
        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'behavior_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
            'one_step_actor': (VelocityField(actor_dims, action_size, config.actor_layer_norm),
                               (ex_observations, ex_chunks)),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the BC flow and the one-step policy.
    return shared_config(
        'fql',
        flow_steps=10,  # T: Euler steps of the BC flow's ODE (the distillation target).
        best_of_n=1,  # Candidates per observation scored by the online critic when acting (1: off).
        alpha=100.0,  # Weight of the distillation loss towards the BC flow's ODE output (tuned per domain).
    )


Agent = FQLAgent
