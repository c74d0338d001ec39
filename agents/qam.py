"""QAM — Q-learning with Adjoint Matching (Li & Levine, 2026), with the QAM-F and QAM-E variants.

A behaviour flow f_β is trained by flow matching on the dataset chunks, and a second velocity field f_θ is
trained by *lean adjoint matching* so that its samples follow the tilted distribution
π(a|s) ∝ π_β(a|s)·exp(inv_temp·Q(s, a)). The distinguishing idea: roll out a memoryless SDE driven by f_θ,
propagate a backward "lean adjoint" that only involves the base flow (one vector–Jacobian product per step,
starting from −inv_temp·∇_a Q at the final action), and regress f_θ at every step onto
f_base − (σ_i²/2)·g[i]. No gradient is ever backpropagated through the sampling chain. The critic is the
usual pessimistic ensemble, bootstrapped with the acting policy (the deterministic ODE of f_θ).
QAM-F (`fql_alpha > 0`) additionally distils f_θ into a one-step policy that maximises Q and acts;
QAM-E (`edit_scale > 0`) adds an entropy-regularised tanh-Gaussian edit on top of f_θ's actions.
Specification: ALGORITHMS.md §2.

Networks (reference-code names in brackets): `critic` + `target_critic`; `behavior_flow` [actor_slow] = f_β
+ `target_behavior_flow` = f̄_β (the base flow f_base when `target_actor`); `finetuned_flow` [actor_fast]
= f_θ, independently initialised; `one_step_actor` (QAM-F); `edit_actor` and `edit_alpha` (QAM-E).

Differences from the reference code (all FIX, none changes the published behaviour): no unused
`target_actor_fast`; independent keys for x[0] and each SDE step; float32 temperature; Polyak targets from
the post-update parameters; `grad/norm` is the true global norm. Everything else (+h time offsets,
deterministic last step with the base flow, loss without h over all T steps, TD targets from the acting
policy) is kept.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config
from utils.networks import LogParam, TanhGaussianPolicy, VelocityField


class QAMAgent(ChunkedAgent):
    """QAM agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('inv_temp', 'fql_alpha', 'edit_scale')  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    def base_flow(self, observations, x, times):
        """f_base: the EMA target of the BC flow (`target_actor`) or the online BC flow; always a fixed call."""
        name = 'target_behavior_flow' if self.config.target_actor else 'behavior_flow'
        return self.network.apply(name, observations, x, times)

    def finetuned_velocity(self, observations, x, times, in_sde=False):
        """f_θ, plus a BC flow with `residual`; stored parameters (a fixed call). Which BC flow follows the reference
        code: the online f_β where the field acts (its ODE, and the targets of QAM-F and QAM-E), the base flow
        f_base (the EMA target by default) in the SDE whose adjoint is matched (`in_sde`), so that the control
        there is measured against the same flow as the lean adjoint's drift."""
        velocity = self.network.apply('finetuned_flow', observations, x, times)
        if not self.config.residual:
            return velocity
        if in_sde:
            return velocity + self.base_flow(observations, x, times)
        return velocity + self.network.apply('behavior_flow', observations, x, times)

    # ------------------------------------------------------------------------------ losses
    # critic_loss is ChunkedAgent's common TD loss (§1.4) with a' = the full acting policy.

    def terminal_adjoint(self, observations, final_actions):
        """g[T] = −inv_temp·∇_x mean_k Q*_k(s, clip(x)) per sample; zero in clipped coordinates (`clip_adj`)."""
        critic = 'target_critic' if self.config.use_target_grad else 'critic'

        def total_q(x):  # summed over the batch: each sample's gradient only involves its own Q
            x = jnp.clip(x, -1.0, 1.0) if self.config.clip_adj else x
            return jnp.sum(jnp.mean(self.network.apply(critic, observations, x), axis=0))

        return -self.hyperparameter('inv_temp') * jax.grad(total_q)(final_actions)

    def adjoint(self, observations, rng):
        """Memoryless SDE of f_θ and the lean adjoint of f_base (§2.3): constants x, g of shape (T, B, D)."""
        noise_key, sde_key = jax.random.split(rng)
        initial_noise = jax.random.normal(noise_key, (*observations.shape[:-1], self.action_size))
        sde_velocity = functools.partial(self.finetuned_velocity, in_sde=True)
        states, final_actions = flow.memoryless_sde(sde_velocity, self.base_flow, observations, initial_noise,
                                                    sde_key, self.config.flow_steps)
        adjoints = flow.lean_adjoint(self.base_flow, observations, states,
                                     self.terminal_adjoint(observations, final_actions), self.config.flow_steps)
        return jax.lax.stop_gradient(states), jax.lax.stop_gradient(adjoints)

    def one_step_loss(self, observations, noises, grad_params):
        """QAM-F: −Q̄(s, clip(μ_ω(s, z))) + fql_alpha·‖μ_ω(s, z) − ODE_θ(s, z)‖² (means over batch and D)."""
        flow_actions = jax.lax.stop_gradient(
            flow.euler_ode(self.finetuned_velocity, observations, noises, self.config.flow_steps))
        actions = self.network.apply('one_step_actor', observations, noises, params=grad_params['one_step_actor'])
        q = self.q_mean(observations, jnp.clip(actions, -1.0, 1.0))
        distill_loss = jnp.mean((actions - flow_actions) ** 2)
        loss = -q.mean() + self.hyperparameter('fql_alpha') * distill_loss
        return loss, {'actor/one_step_loss': loss, 'actor/one_step_q': q.mean(), 'actor/distill_loss': distill_loss}

    def edit_loss(self, observations, noises, rng, grad_params):
        """QAM-E: −Q̄(s, clip(a_θ + edit_scale·e)) + log π_ω(e)·sg(α) + α·(−sg(log π_ω(e)) − H_target)."""
        flow_actions = jax.lax.stop_gradient(
            flow.euler_ode(self.finetuned_velocity, observations, noises, self.config.flow_steps))
        means, log_stds = self.network.apply('edit_actor', observations, flow_actions,
                                             params=grad_params['edit_actor'])
        edits, log_probs = rl.tanh_gaussian_sample(rng, means, log_stds)
        alpha = self.network.apply('edit_alpha', params=grad_params['edit_alpha'])
        q = self.q_mean(observations, jnp.clip(flow_actions + self.hyperparameter('edit_scale') * edits, -1.0, 1.0))
        entropy_target = rl.target_entropy(self.config.edit_target_entropy,
                                           self.config.edit_target_entropy_multiplier, self.action_size)
        loss, alpha_loss = rl.entropy_regularised_actor_loss(q, log_probs, alpha, entropy_target)
        return loss, {'actor/edit_loss': loss, 'actor/edit_q': q.mean(), 'actor/edit_alpha': alpha,
                      'actor/edit_alpha_loss': alpha_loss, 'actor/edit_entropy': -log_probs.mean()}

    def actor_loss(self, batch, grad_params, rng):
        """L_BC(f_β) + L_AM(f_θ) [+ QAM-F loss] [+ QAM-E loss] (§2.4)."""
        bc_key, adjoint_key, noise_key, edit_key = jax.random.split(rng, 4)
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        bc_loss = flow.bc_flow_loss(self.network.select('behavior_flow', grad_params['behavior_flow']),
                                    observations, actions, batch['valid'], bc_key)

        # Lean adjoint matching: every step i = 0 … T−1 regresses f_θ(s, x[i], t_i) at once.
        num_steps = self.config.flow_steps
        states, adjoints = self.adjoint(observations, adjoint_key)  # constants (T, B, D)
        step_observations = jnp.broadcast_to(observations, (num_steps, *observations.shape))
        times = jnp.broadcast_to(flow.time_grid(num_steps)[:, None, None], (*states.shape[:-1], 1))
        controls = self.network.apply('finetuned_flow', step_observations, states, times,
                                      params=grad_params['finetuned_flow'])
        if not self.config.residual:
            controls = controls - self.base_flow(step_observations, states, times)  # fixed call
        am_loss = flow.adjoint_matching_loss(controls, adjoints, flow.memoryless_sigmas(num_steps))

        loss = bc_loss + am_loss
        info = {'actor/bc_flow_loss': bc_loss, 'actor/adjoint_matching_loss': am_loss,
                'actor/terminal_adjoint_norm': jnp.linalg.norm(adjoints[-1], axis=-1).mean()}
        noises = jax.random.normal(noise_key, actions.shape)
        if self.config.fql_alpha > 0:
            extra_loss, extra_info = self.one_step_loss(observations, noises, grad_params)
            loss, info = loss + extra_loss, {**info, **extra_info}
        if self.config.edit_scale > 0:
            extra_loss, extra_info = self.edit_loss(observations, noises, edit_key, grad_params)
            loss, info = loss + extra_loss, {**info, **extra_info}
        return loss, {**info, 'actor/actor_loss': loss}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """Actions (*batch, D) in [−1, 1] for observations (*batch, O) (§2.6); all calls with stored params."""

        def sample(observations, key):
            noise_key, edit_key = jax.random.split(key)
            noises = jax.random.normal(noise_key, (*observations.shape[:-1], self.action_size))
            if self.config.fql_alpha > 0:
                return jnp.clip(self.network.apply('one_step_actor', observations, noises), -1.0, 1.0)
            velocity = self.network.select('behavior_flow') if self.config.inv_temp == 0 else self.finetuned_velocity
            actions = flow.euler_ode(velocity, observations, noises, self.config.flow_steps)
            if self.config.edit_scale > 0:  # stochastic, also at evaluation
                means, log_stds = self.network.apply('edit_actor', observations, actions)
                edits, _ = rl.tanh_gaussian_sample(edit_key, means, log_stds)
                actions = jnp.clip(actions + self.hyperparameter('edit_scale') * edits, -1.0, 1.0)
            return actions

        return flow.best_of_n(sample, self.q_mean, observations, rng, self.config.best_of_n)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if config.fql_alpha < 0 or config.edit_scale < 0:
            raise ValueError('fql_alpha and edit_scale must be >= 0.')
        if config.fql_alpha > 0 and config.edit_scale > 0:
            raise ValueError(f'At most one of fql_alpha ({config.fql_alpha}) and edit_scale ({config.edit_scale}) '
                             'may be non-zero: fql_alpha > 0 is QAM-F, edit_scale > 0 is QAM-E.')
        action_size = ex_chunks.shape[-1]

        actor_dims = tuple(config.actor_hidden_dims)
        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'behavior_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
            'finetuned_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
        }
        if config.fql_alpha > 0:
            networks['one_step_actor'] = (VelocityField(actor_dims, action_size, config.actor_layer_norm),
                                          (ex_observations, ex_chunks))
        if config.edit_scale > 0:
            networks['edit_actor'] = (TanhGaussianPolicy(actor_dims, action_size, config.actor_layer_norm),
                                      (ex_observations, ex_chunks))
            networks['edit_alpha'] = (LogParam(1.0), ())

        optimizer = rl.make_optimizer(config.lr, 1.0 if config.clip_grad else None)
        return cls.from_modules(seed, config, networks, optimizer,
                                targets={'target_critic': 'critic', 'target_behavior_flow': 'behavior_flow'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the flows and policies; gradient clipping is
    # clip_grad; tau also moves the target BC flow.
    return shared_config(
        'qam',
        flow_steps=10,  # T: Euler/SDE steps of every flow.
        best_of_n=1,  # Candidates per observation scored by the online critic when acting (1: off).
        inv_temp=0.3,  # Inverse temperature of the tilted policy π_β·exp(inv_temp·Q); 0: act with the BC flow.
        fql_alpha=0.0,  # > 0 enables QAM-F: one-step policy with this distillation weight.
        edit_scale=0.0,  # > 0 enables QAM-E: scale of the tanh-Gaussian edit added to f_θ's actions.
        target_actor=True,  # Base flow f_base = EMA target of the BC flow (False: online BC flow).
        residual=False,  # Parameterise the fine-tuned field as a residual on top of the base flow.
        clip_adj=True,  # Clip the terminal action before taking ∇_a Q for the adjoint.
        clip_grad=True,  # Global-norm gradient clipping at 1.0 before Adam.
        use_target_grad=True,  # Terminal adjoint from the target critic (False: online critic).
        edit_target_entropy=ml_collections.config_dict.placeholder(float),  # QAM-E entropy target (None: −mult·D).
        edit_target_entropy_multiplier=0.5,  # QAM-E entropy target = −multiplier·D when unset.
    )


Agent = QAMAgent
