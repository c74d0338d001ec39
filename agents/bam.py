"""BAM — basic adjoint matching, i.e. backpropagation through the memoryless SDE (the direct ablation of QAM,
Li & Levine, 2026).

As in QAM, a behaviour flow f_β is trained by flow matching and a second velocity field f_θ drives the same
memoryless SDE towards the tilted policy π_β(a|s)·exp(inv_temp·Q(s, a)). The distinguishing idea: instead of
regressing f_θ onto lean-adjoint targets, BAM minimises the stochastic-optimal-control objective itself,
−inv_temp·Q(s, x[T]) + Σ_i (2/σ_i²)·‖f_θ − f_base‖², by backpropagating through every SDE step (through f_θ,
through the state inputs of the frozen base flow and of the frozen critic). Its gradient equals that of the
basic (non-lean) adjoint matching objective. Acting is the deterministic Euler ODE of f_θ, as in QAM.
Specification: ALGORITHMS.md §3.

Networks (reference-code names in brackets): `critic` + `target_critic`; `behavior_flow` [actor_slow] = f_β
+ `target_behavior_flow` = f̄_β (the base flow f_base when `target_actor`); `finetuned_flow` [actor_fast]
= f_θ, independently initialised. Global-norm gradient clipping at 1.0 always (no config key).

Differences from the reference code (all FIX): no unused `target_actor_fast`; independent keys for x[0] and each
SDE step; Polyak targets from the post-update parameters; `grad/norm` is the true global norm. Kept: the +h
time offsets, the deterministic last step with the base flow, the running cost without h over steps 0 … T−2
only, and the pessimistic (mean − ρ·std) online-critic value at the *unclipped* terminal action.
"""

import jax
import jax.numpy as jnp

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config


class BAMAgent(ChunkedAgent):
    """BAM agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('inv_temp',)  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    def base_flow(self, observations, x, times):
        """f_base: the EMA target of the BC flow (`target_actor`) or the online BC flow. Fixed parameters, but
        differentiable in its inputs (BAM backpropagates through x)."""
        name = 'target_behavior_flow' if self.config.target_actor else 'behavior_flow'
        return self.network.apply(name, observations, x, times)

    def finetuned_velocity(self, observations, x, times):
        """The field whose ODE acts: f_θ (plus the online f_β with `residual`); stored parameters (fixed call)."""
        velocity = self.network.apply('finetuned_flow', observations, x, times)
        if self.config.residual:
            velocity = velocity + self.network.apply('behavior_flow', observations, x, times)
        return velocity

    def q_mean(self, observations, actions):
        """Online critic ensemble mean (no pessimism), fixed call: scores best-of-n candidates."""
        return jnp.mean(self.network.apply('critic', observations, actions), axis=0)

    # ------------------------------------------------------------------------------ losses
    # critic_loss is ChunkedAgent's common TD loss (§1.4) with a' = the acting ODE of f_θ.

    def sde_objective(self, observations, grad_params, rng):
        """L_BAM = −inv_temp·(1/B)Σ_b q_b + (1/B)Σ_b C_b (§3), backpropagated through the whole SDE chain.

        q = mean_k Q_k − ρ·std_k Q_k of the online critic (fixed call) at the unclipped x[T]; C = running control
        cost. Keys: rng → (x[0], SDE), the SDE key split into one key per stochastic step."""
        noise_key, sde_key = jax.random.split(rng)
        initial_noise = jax.random.normal(noise_key, (*observations.shape[:-1], self.action_size))
        finetuned_flow = self.network.select('finetuned_flow', grad_params['finetuned_flow'])  # trainable
        final_actions, control_cost = flow.memoryless_sde_rollout(
            finetuned_flow, self.base_flow, observations, initial_noise, sde_key, self.config.flow_steps,
            residual=self.config.residual)
        q = rl.pessimistic_value(self.network.apply('critic', observations, final_actions), self.config.rho)
        loss = -self.hyperparameter('inv_temp') * q.mean() + control_cost.mean()
        return loss, {'actor/bam_loss': loss, 'actor/terminal_q': q.mean(), 'actor/control_cost': control_cost.mean(),
                      'actor/terminal_abs_action': jnp.abs(final_actions).mean()}

    def actor_loss(self, batch, grad_params, rng):
        """L_BC(f_β) + L_BAM(f_θ). Keys: rng → (BC flow loss, SDE objective)."""
        bc_key, sde_key = jax.random.split(rng)
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        bc_loss = flow.bc_flow_loss(self.network.select('behavior_flow', grad_params['behavior_flow']),
                                    observations, actions, batch['valid'], bc_key)
        bam_loss, info = self.sde_objective(observations, grad_params, sde_key)
        loss = bc_loss + bam_loss
        return loss, {**info, 'actor/bc_flow_loss': bc_loss, 'actor/actor_loss': loss}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """clip(EulerODE(f_θ, s, z)) (the BC flow's ODE if inv_temp = 0) for observations (*batch, O) → (*batch, D);
        best-of-n with the online critic. Stored parameters throughout."""

        def sample(observations, key):
            noises = jax.random.normal(key, (*observations.shape[:-1], self.action_size))
            velocity = self.network.select('behavior_flow') if self.config.inv_temp == 0 else self.finetuned_velocity
            return flow.euler_ode(velocity, observations, noises, self.config.flow_steps)

        return flow.best_of_n(sample, self.q_mean, observations, rng, self.config.best_of_n)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if config.inv_temp < 0:
            raise ValueError(f'inv_temp must be >= 0, got {config.inv_temp}.')

        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'behavior_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
            'finetuned_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
        }
        optimizer = rl.make_optimizer(config.lr, 1.0)  # always global-norm clipping at 1.0 (§1.9)
        return cls.from_modules(seed, config, networks, optimizer,
                                targets={'target_critic': 'critic', 'target_behavior_flow': 'behavior_flow'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the BC and fine-tuned flows; lr is applied after
    # global-norm clipping at 1.0 (always on); rho also prices BAM's terminal value; tau also moves the target BC flow.
    return shared_config(
        'bam',
        flow_steps=10,  # T: Euler/SDE steps of every flow (BAM backpropagates through all of them).
        best_of_n=1,  # Candidates per observation scored by the online critic when acting (1: off).
        inv_temp=0.3,  # Weight of the terminal Q in the SDE objective (tuned per domain); 0: act with the BC flow.
        target_actor=True,  # Base flow f_base = EMA target of the BC flow (False: online BC flow).
        residual=False,  # Parameterise the fine-tuned field as a residual on top of the base flow.
    )


Agent = BAMAgent
