"""FAWAC — advantage-weighted flow matching: AWAC (Nair et al., 2020) with a flow policy, as the QAM paper's
baseline.

The policy is a single velocity field trained by the behaviour-cloning flow-matching loss in which every
dataset chunk is weighted by exp(inv_temp·(Q̄(s, a) − V(s))), capped at 100. The distinguishing idea: it
targets the same tilted distribution π_β(a|s)·exp(inv_temp·Q(s, a)) as QAM, but through weighted regression
on dataset actions, using only Q values and never the action gradient ∇_a Q. A state value V(s) regresses
every target-critic member at the dataset chunk and serves as the advantage baseline. The critic is the usual
pessimistic ensemble, bootstrapped with the flow policy's Euler-ODE action. Specification: ALGORITHMS.md §9.

Networks (reference-code names in brackets): `critic` + `target_critic`; `value` V (one MLP with LayerNorm on
s); `flow_policy` [actor] = f (velocity field, no target).

Differences from the reference code (FIX): Polyak targets from the post-update parameters; `grad/norm` is the
true global norm; no unused `best_of_n` key. Kept: the weight cap at 100; V fitted to the target-critic
members at dataset actions.
"""

import jax
import jax.numpy as jnp

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config
from utils.networks import ValueNetwork

MAX_WEIGHT = 100.0  # cap on exp(inv_temp·advantage) (KEEP)


class FAWACAgent(ChunkedAgent):
    """FAWAC agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('inv_temp',)  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    def advantage_weights(self, observations, actions):
        """(min(exp(inv_temp·adv), 100), adv) with adv = Q̄(s, a) − V(s): online critic mean and V, fixed calls."""
        q = jnp.mean(self.network.apply('critic', observations, actions), axis=0)
        advantages = jax.lax.stop_gradient(q - self.network.apply('value', observations))
        return jnp.minimum(jnp.exp(self.hyperparameter('inv_temp') * advantages), MAX_WEIGHT), advantages

    # ------------------------------------------------------------------------------ losses
    # critic_loss is ChunkedAgent's common TD loss (§1.4) with a' = the flow policy's Euler-ODE action.

    def value_loss(self, batch, grad_params):
        """(1/(K·B)) Σ_k Σ_b w_b·(Q'_k(s_b, a_b) − V(s_b))²: V regresses every target-critic member (fixed call)."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        target_q = jax.lax.stop_gradient(self.network.apply('target_critic', observations, actions))  # (K, B)
        v = self.network.apply('value', observations, params=grad_params['value'])
        loss = jnp.mean(batch['valid'][None] * (target_q - v[None]) ** 2)
        return loss, {'value/value_loss': loss, 'value/v_mean': v.mean(), 'value/v_max': v.max(),
                      'value/v_min': v.min()}

    def actor_loss(self, batch, grad_params, rng):
        """The BC flow loss with per-sample weights min(exp(inv_temp·adv), 100)·w (§9)."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        weights, advantages = self.advantage_weights(observations, actions)
        loss = flow.bc_flow_loss(self.network.select('flow_policy', grad_params['flow_policy']), observations,
                                 actions, weights * batch['valid'], rng)
        return loss, {'actor/actor_loss': loss, 'actor/adv_mean': advantages.mean(),
                      'actor/weight_mean': weights.mean(), 'actor/weight_max': weights.max(),
                      'actor/capped_fraction': jnp.mean(weights >= MAX_WEIGHT)}

    def total_loss(self, batch, grad_params, rng):
        """L_TD + L_V + L_actor: one scalar, differentiated once w.r.t. every trainable network."""
        critic_key, actor_key = jax.random.split(rng)
        critic_loss, critic_info = self.critic_loss(batch, grad_params, critic_key)
        value_loss, value_info = self.value_loss(batch, grad_params)
        actor_loss, actor_info = self.actor_loss(batch, grad_params, actor_key)
        return critic_loss + value_loss + actor_loss, {**critic_info, **value_info, **actor_info}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """clip(EulerODE(f, s, z)), z ~ N(0, I) from `rng`: (*batch, O) → (*batch, D) in [−1, 1]; no best-of-n."""
        noises = jax.random.normal(rng, (*observations.shape[:-1], self.action_size))
        return flow.euler_ode(self.network.select('flow_policy'), observations, noises, self.config.flow_steps)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if config.inv_temp < 0:
            raise ValueError(f'inv_temp must be >= 0, got {config.inv_temp}.')

        value_dims = tuple(config.value_hidden_dims)
        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'value': (ValueNetwork(value_dims, config.value_layer_norm), (ex_observations,)),
            'flow_policy': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the flow policy, value_* each critic member and V;
    # plain Adam (no gradient clipping).
    return shared_config(
        'fawac',
        flow_steps=10,  # T: Euler steps of the flow policy.
        inv_temp=10.0,  # Inverse temperature of the advantage weights exp(inv_temp·(Q − V)), capped at 100.
    )


Agent = FAWACAgent
