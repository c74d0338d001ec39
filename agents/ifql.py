"""IFQL — implicit flow Q-learning: IDQL (Hansen-Estruch et al., 2023) with a flow policy, as the QAM paper's
baseline.

Value learning is IQL's (Kostrikov et al., 2022) and never queries the policy: a state value V(s) is fitted by
expectile regression to the target critic's pessimistic estimate at the dataset chunk, and the critic is
bootstrapped from V(s'), so there is no policy sample at s' in the TD target. The policy is a pure
behaviour-cloning flow. The distinguishing idea: policy improvement happens only at action time, by drawing
`num_samples` (32) actions from the BC flow and keeping the one with the highest ensemble-minimum Q.
Specification: ALGORITHMS.md §8.

Networks (reference-code names in brackets): `value` V (one MLP with LayerNorm on s); `critic` +
`target_critic`; `behavior_flow` [actor_flow] = f_β (no target).

Differences from the reference code (FIX): the 32-sample selection works for any batch of observations with a
per-observation argmax (the reference only handled one unbatched observation; for one observation the
behaviour is identical); Polyak targets from the post-update parameters; `grad/norm` is the true global norm.
Kept: 32 samples and the argmax of the ensemble minimum; the value target from the target critic's
pessimistic estimate mean − ρ·std; the critic bootstrapped from the online V (no target value network).
"""

import jax
import jax.numpy as jnp

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config
from utils.networks import ValueNetwork


class IFQLAgent(ChunkedAgent):
    """IFQL agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('kappa',)  # main.py --hyper_sweep can vmap these

    # ------------------------------------------------------------------------------ losses
    def value_loss(self, batch, grad_params):
        """Expectile regression of V(s) onto mean_k Q'_k(s, a) − ρ·std_k Q'_k(s, a) at the dataset chunk (no mask)."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        target_q = self.network.apply('target_critic', observations, actions)  # target: fixed call
        q_data = rl.pessimistic_value(target_q, self.config.rho)
        v = self.network.apply('value', observations, params=grad_params['value'])
        loss = rl.expectile_loss(jax.lax.stop_gradient(q_data) - v, self.hyperparameter('kappa'))
        return loss, {'value/value_loss': loss, 'value/v_mean': v.mean(), 'value/v_max': v.max(),
                      'value/v_min': v.min()}

    def critic_loss(self, batch, grad_params):
        """TD loss with y = r + γ^H·m·V(s') from the ONLINE value network (fixed call); no policy sample at s'."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        next_v = self.network.apply('value', batch['next_observation'])  # stored parameters: fixed call
        bootstrap = self.config.discount**self.config.horizon_length * batch['bootstrap_mask']
        targets = batch['chunk_return'] + bootstrap * next_v
        q = self.network.apply('critic', observations, actions, params=grad_params['critic'])
        loss = rl.critic_loss(q, jax.lax.stop_gradient(targets), batch['valid'])
        return loss, self.critic_info(loss, q)

    def actor_loss(self, batch, grad_params, rng):
        """Plain BC flow loss on f_β (valid-weighted)."""
        loss = flow.bc_flow_loss(self.network.select('behavior_flow', grad_params['behavior_flow']),
                                 batch['observations'], self.flat_actions(batch['actions']), batch['valid'], rng)
        return loss, {'actor/actor_loss': loss, 'actor/bc_flow_loss': loss}

    def total_loss(self, batch, grad_params, rng):
        """L_V + L_Q + L_BC: one scalar, differentiated once w.r.t. every trainable network (rng: the BC loss)."""
        value_loss, value_info = self.value_loss(batch, grad_params)
        critic_loss, critic_info = self.critic_loss(batch, grad_params)
        actor_loss, actor_info = self.actor_loss(batch, grad_params, rng)
        return value_loss + critic_loss + actor_loss, {**value_info, **critic_info, **actor_info}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    def select_best(self, observations, noises):
        """For observations (*batch, O) and candidate noises (*batch, N, D): decode every noise with the BC flow's
        Euler ODE (clipped) and return, per observation, the candidate with the highest min_k Q_k (online critic,
        stored parameters) → (*batch, D)."""
        repeated = jnp.broadcast_to(observations[..., None, :], (*noises.shape[:-1], observations.shape[-1]))
        candidates = flow.euler_ode(self.network.select('behavior_flow'), repeated, noises, self.config.flow_steps)
        scores = jnp.min(self.network.apply('critic', repeated, candidates), axis=0)  # (*batch, N)
        best = jnp.argmax(scores, axis=-1)
        return jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]

    @jax.jit
    def sample_actions(self, observations, rng):
        """Best of `num_samples` BC-flow actions per observation (§8): (*batch, O) → (*batch, D) in [−1, 1]."""
        noises = jax.random.normal(rng, (*observations.shape[:-1], self.config.num_samples, self.action_size))
        return self.select_best(observations, noises)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if not 0.0 <= config.kappa <= 1.0:
            raise ValueError(f'kappa (the expectile) must lie in [0, 1], got {config.kappa}.')

        value_dims = tuple(config.value_hidden_dims)
        networks = {  # name: (module, example inputs)
            'value': (ValueNetwork(value_dims, config.value_layer_norm), (ex_observations,)),
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'behavior_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the BC flow, value_* each critic member and V; plain
    # Adam (no gradient clipping); rho is the pessimism of V's regression target: mean − rho·std of the target critic.
    return shared_config(
        'ifql',
        flow_steps=10,  # T: Euler steps of the BC flow.
        kappa=0.9,  # Expectile of the value regression (weight kappa above, 1 − kappa below).
        num_samples=32,  # BC-flow candidates per observation when acting; the ensemble-min-Q argmax is kept.
    )


Agent = IFQLAgent
