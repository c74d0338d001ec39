"""FBRAC — flow behaviour-regularised actor-critic (the flow baseline of Park, Li & Levine, 2025).

A single flow policy f_φ is trained with the behaviour-cloning flow-matching loss plus a Q-maximisation term.
The distinguishing idea: the Q term's gradient is backpropagated through all T Euler steps of the sampler
(and its final clip), L = L_BC(f_φ) − (1/alpha)·Q̄(s, EulerODE(f_φ, s, z)); the same flow acts and provides the
TD targets of the usual pessimistic critic ensemble. `alpha` *divides* the Q term (in FQL it multiplies the
distillation term). Specification: ALGORITHMS.md §5.

Networks (reference-code names in brackets): `critic` + `target_critic`; `actor_flow` [actor_flow] = f_φ
(no target).

Differences from the reference code: Polyak targets from the post-update parameters and `grad/norm` as the
true global norm (FIX). Nothing else.
"""

import jax
import jax.numpy as jnp

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config


class FBRACAgent(ChunkedAgent):
    """FBRAC agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('alpha',)  # main.py --hyper_sweep can vmap these

    # ------------------------------------------------------------------------------ losses
    # critic_loss is ChunkedAgent's common TD loss (§1.4) with a' = the flow's ODE action.

    def actor_loss(self, batch, grad_params, rng):
        """L_BC(f_φ) − (1/alpha)·(1/B)Σ Q̄(s, EulerODE(f_φ, s, z)) (§5), the ODE differentiated end to end.

        Keys: rng → (BC flow loss, noise z)."""
        bc_key, noise_key = jax.random.split(rng)
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        actor_flow = self.network.select('actor_flow', grad_params['actor_flow'])  # trainable
        bc_loss = flow.bc_flow_loss(actor_flow, observations, actions, batch['valid'], bc_key)

        noises = jax.random.normal(noise_key, actions.shape)
        # Gradients flow through every Euler step and through the final clip (zero where it saturates).
        policy_actions = flow.euler_ode(actor_flow, observations, noises, self.config.flow_steps)
        q = self.q_mean(observations, policy_actions)  # critic fixed; grads reach φ through its input
        q_loss = -q.mean() / self.hyperparameter('alpha')

        loss = bc_loss + q_loss
        return loss, {'actor/actor_loss': loss, 'actor/bc_flow_loss': bc_loss, 'actor/q_loss': q_loss,
                      'actor/q': q.mean(), 'actor/clipped_fraction': jnp.mean(jnp.abs(policy_actions) >= 1.0)}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """clip(EulerODE(f_φ, s, z)), z ~ N(0, I), for observations (*batch, O) → (*batch, D); best-of-n with the
        online critic. Stored parameters throughout."""

        def sample(observations, key):
            noises = jax.random.normal(key, (*observations.shape[:-1], self.action_size))
            return flow.euler_ode(self.network.select('actor_flow'), observations, noises, self.config.flow_steps)

        return flow.best_of_n(sample, self.q_mean, observations, rng, self.config.best_of_n)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if not config.alpha > 0:
            raise ValueError(f'alpha divides the Q term and must be > 0, got {config.alpha}.')

        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'actor_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the flow policy.
    return shared_config(
        'fbrac',
        flow_steps=10,  # T: Euler steps of the flow policy's ODE (also backpropagated through).
        best_of_n=1,  # Candidates per observation scored by the online critic when acting (1: off).
        alpha=100.0,  # Divides the Q term: actor loss = L_BC − Q̄/alpha (tuned per domain).
    )


Agent = FBRACAgent
