"""CGQL — classifier-guidance Q-learning (the QAM paper's guidance baseline), modes `simple`, `mse` and `linex`
(CGQL, CGQL-M, CGQL-L).

A behaviour flow f_β is trained by flow matching only. The distinguishing idea: policy improvement happens
inside the sampler, as classifier guidance. At every Euler step after the first, the critic's action gradient
is added to the (EMA) BC flow's velocity,

    v = f̄_β(s, x, t) + guidance_coef · ((1 − t)·inv_temp·∇_x Q̄(s, x, t_q) + x) / t,

so no actor is ever trained towards Q. In `simple` mode the ordinary critic is queried at the noisy
intermediate action (t_q = 1). In `mse` and `linex` modes the critic is time-conditioned in earnest: besides
the TD loss at t = 1 it is distilled on noisy actions a_t = (1 − t)·ξ + t·a towards the target critic's value
at the clean dataset action, with a squared or a Linex loss. The critic always takes (s, a, t) as input (at
t = 1 for every TD quantity). The guided sampler acts and provides the TD targets, so each target needs T − 1
critic gradients. Specification: ALGORITHMS.md §10.

Networks (reference-code names in brackets): `critic` + `target_critic`, a time-conditioned Q ensemble on
concat(s, a, t); `behavior_flow` [actor] = f_β + `target_behavior_flow` [target_actor] = f̄_β (EMA).

Differences from the reference code (FIX): the broken, unused `separate` option (a separate time-free critic
plus a distilled one) is not implemented; Polyak targets from the post-update parameters; `grad/norm` is the
true global norm. Kept: the guidance formula with its "+x" term, no guidance at the first step, the online
critic for the gradient and the EMA BC flow for the velocity; the time-conditioned critic even in `simple`
mode; the noisy-critic target from the target critic at the clean action.
"""

import jax
import jax.numpy as jnp

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config

MODES = ('simple', 'mse', 'linex')


class CGQLAgent(ChunkedAgent):
    """CGQL agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('inv_temp', 'guidance_coef', 'noisy_coef')  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    def critic_values(self, name, observations, actions, params=None):
        """Q(s, a) := Q(s, a, t = 1), shape (K, *batch), of the critic `name` (stored parameters unless given);
        the TD loss, the noisy-critic target and best-of-n scores all read the critic at t = 1."""
        ones = jnp.ones((*actions.shape[:-1], 1), actions.dtype)
        return self.network.apply(name, observations, actions, ones, params=params)

    # ------------------------------------------------------------------------------ losses
    def noisy_critic_loss(self, observations, actions, valid, critic_params, rng):
        """`mse` / `linex`: Q_k(s, a_t, t) on a_t = (1 − t)·ξ + t·a against tq = Q'_k(s, a, 1) (constant).

        mse: w·(nq − tq)²; linex with δ = inv_temp·(tq − nq): w·δ where δ > isd_clip, else
        w·(exp(min(δ, isd_clip)) + inv_temp·nq); mean over K·B. Keys: rng → (t, ξ)."""
        time_key, noise_key = jax.random.split(rng)
        times = jax.random.uniform(time_key, (*actions.shape[:-1], 1), actions.dtype)
        noisy_actions = (1.0 - times) * jax.random.normal(noise_key, actions.shape, actions.dtype) + times * actions
        target_q = jax.lax.stop_gradient(self.critic_values('target_critic', observations, actions))  # (K, B)
        noisy_q = self.network.apply('critic', observations, noisy_actions, times, params=critic_params)
        if self.config.mode == 'mse':
            per_entry = (noisy_q - target_q) ** 2
        else:
            inv_temp, isd_clip = self.hyperparameter('inv_temp'), self.config.isd_clip
            delta = inv_temp * (target_q - noisy_q)
            per_entry = jnp.where(delta > isd_clip, delta, jnp.exp(jnp.minimum(delta, isd_clip)) + inv_temp * noisy_q)
        return jnp.mean(valid[None] * per_entry)

    def critic_loss(self, batch, grad_params, rng):
        """Common TD loss (§1.4) at t = 1 with a' = clip(sample_actions(s')) (the guided sampler), plus
        noisy_coef·L_noisy in modes mse / linex. Keys: rng → (next actions, noisy loss)."""
        next_key, noisy_key = jax.random.split(rng)
        td_loss, q = self.td_loss(batch, grad_params, next_key)
        loss, info = td_loss, {'critic/td_loss': td_loss}
        if self.config.mode != 'simple':
            noisy_loss = self.noisy_critic_loss(batch['observations'], self.flat_actions(batch['actions']),
                                                batch['valid'], grad_params['critic'], noisy_key)
            loss, info['critic/noisy_loss'] = td_loss + self.hyperparameter('noisy_coef') * noisy_loss, noisy_loss
        return loss, {**info, **self.critic_info(loss, q)}

    def actor_loss(self, batch, grad_params, rng):
        """Plain BC flow loss on f_β (valid-weighted); the policy is improved only by guidance when sampling."""
        loss = flow.bc_flow_loss(self.network.select('behavior_flow', grad_params['behavior_flow']),
                                 batch['observations'], self.flat_actions(batch['actions']), batch['valid'], rng)
        return loss, {'actor/actor_loss': loss, 'actor/bc_flow_loss': loss}

    def total_loss(self, batch, grad_params, rng):
        """L_critic + L_BC: one scalar, differentiated once w.r.t. every trainable network."""
        critic_key, actor_key = jax.random.split(rng)
        critic_loss, critic_info = self.critic_loss(batch, grad_params, critic_key)
        actor_loss, actor_info = self.actor_loss(batch, grad_params, actor_key)
        return critic_loss + actor_loss, {**critic_info, **actor_info}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    def guided_velocity(self, observations, x, times):
        """The sampler's velocity at (s, x, t), t = i/T (§10): f(s, x, t) with f = f̄_β (`target_guidance`) or f_β,
        plus guidance_coef·((1 − t)·inv_temp·∇_x Q̄(s, x, t_q) + x)/t for t > 0 (i.e. every step but the first).
        t_q = 1 in `simple` mode, else t; Q̄ is the ONLINE critic's ensemble mean, per-sample gradient. All calls
        use stored parameters (fixed calls)."""
        velocity_net = 'target_behavior_flow' if self.config.target_guidance else 'behavior_flow'
        velocity = self.network.apply(velocity_net, observations, x, times)
        if self.config.inv_temp == 0:
            return velocity
        q_times = jnp.ones_like(times) if self.config.mode == 'simple' else times

        def total_q(y):  # summed over the batch: each sample's gradient only involves its own Q
            return jnp.sum(jnp.mean(self.network.apply('critic', observations, y, q_times), axis=0))

        guided = (1.0 - times) * self.hyperparameter('inv_temp') * jax.grad(total_q)(x) + x
        guidance = self.hyperparameter('guidance_coef') * guided / jnp.where(times > 0, times, 1.0)  # safe at t = 0
        return velocity + jnp.where(times > 0, guidance, 0.0)

    @jax.jit
    def sample_actions(self, observations, rng):
        """Guided Euler ODE from z ~ N(0, I), clip, then best-of-n with Q(s, a, 1) (§10).

        Observations (*batch, O) → actions (*batch, D) in [−1, 1]. Each candidate draws its noise from its key."""

        def sample(observations, key):
            noises = jax.random.normal(key, (*observations.shape[:-1], self.action_size))
            return flow.euler_ode(self.guided_velocity, observations, noises, self.config.flow_steps)

        return flow.best_of_n(sample, self.q_mean, observations, rng, self.config.best_of_n)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if config.mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {config.mode!r}.')
        if config.num_qs < 2:
            raise ValueError(f'CGQL needs an ensemble of at least 2 critics, got num_qs = {config.num_qs}.')

        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks, ex_times),  # on concat(s, a, t)
            'behavior_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic', 'target_behavior_flow': 'behavior_flow'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the BC flow, value_* each time-conditioned critic
    # member; plain Adam (no gradient clipping); num_qs must be at least 2; tau also moves the target BC flow.
    return shared_config(
        'cgql',
        flow_steps=10,  # T: Euler steps of the guided sampler.
        best_of_n=1,  # Candidates per observation scored by the online critic (at t = 1) when acting (1: off).
        mode='simple',  # simple: critic at t = 1 only; mse / linex: also distilled on noisy actions (CGQL-M / -L).
        inv_temp=1.0,  # Inverse temperature scaling ∇Q in the guidance (10 in every benchmark run); 0: no guidance.
        guidance_coef=0.1,  # Weight of the guidance term added to the BC velocity (tuned per domain).
        noisy_coef=0.001,  # Weight of the noisy-critic loss in modes mse / linex (tuned).
        isd_clip=5.0,  # Linex: above this δ = inv_temp·(tq − nq) the loss is linear (δ itself).
        target_guidance=True,  # Guided velocity from the EMA target BC flow (False: the online BC flow).
    )


Agent = CGQLAgent
