"""FEdit — a behaviour-cloning flow plus a bounded Gaussian edit policy (the "flow + edit" baseline of the
QAM paper; the edit mechanism of QAM-E applied to the behaviour flow).

A BC flow f_β is trained by flow matching only. Its Euler-ODE action a_β is then perturbed by a learned,
entropy-regularised tanh-Gaussian edit e ~ π_ω(·|s, a_β), e ∈ (−1, 1)^D, scaled by `edit_scale`:
a = clip(a_β + edit_scale·e). The distinguishing idea: policy improvement happens only inside a box of
half-width `edit_scale` around the behaviour action, so the policy cannot leave the data support by more
than the edit size. The edit policy maximises the online critic's ensemble mean with an automatically tuned
entropy bonus (SAC temperature). The edit is sampled at acting and evaluation time too, and the TD target
bootstraps with this stochastic acting policy. Specification: ALGORITHMS.md §6.

Networks (reference-code names in brackets): `critic` + `target_critic`; `behavior_flow` [actor_bc_flow] = f_β
(no target); `edit_actor` = π_ω, tanh-Gaussian on concat(s, a_β) → D; `edit_alpha` [alpha], a LogParam
(init 1.0).

Differences from the reference code (FIX): float32 temperature; Polyak targets from the post-update
parameters; `grad/norm` is the true global norm.
"""

import jax
import jax.numpy as jnp
import ml_collections

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config
from utils.networks import LogParam, TanhGaussianPolicy


class FEditAgent(ChunkedAgent):
    """FEdit agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('edit_scale',)  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    def flow_actions(self, observations, noises):
        """a_β = clip(EulerODE(f_β, s, z)) with the stored BC-flow parameters: a constant."""
        behavior_flow = self.network.select('behavior_flow')  # stored parameters: fixed call
        return jax.lax.stop_gradient(flow.euler_ode(behavior_flow, observations, noises, self.config.flow_steps))

    def edited_actions(self, observations, flow_actions, rng, edit_params=None):
        """a_β + edit_scale·e with e ~ π_ω(·|s, a_β) reparameterised, BEFORE the final clip; returns it with
        log π_ω(e). `edit_params` (the ones being differentiated) or the stored ones (fixed call)."""
        means, log_stds = self.network.apply('edit_actor', observations, flow_actions, params=edit_params)
        edits, log_probs = rl.tanh_gaussian_sample(rng, means, log_stds)
        return flow_actions + self.hyperparameter('edit_scale') * edits, log_probs

    # ------------------------------------------------------------------------------ losses
    # critic_loss is ChunkedAgent's common TD loss (§1.4) with a' = the flow action plus its stochastic edit.

    def actor_loss(self, batch, grad_params, rng):
        """L_BC(f_β) + L_edit (§6), L_edit = −Q̄(s, clip(a_β + edit_scale·e)) + lp·sg(α) + α·(−sg(lp) − H_target).

        Keys: rng → (BC flow loss, noise z, edit sample)."""
        bc_key, noise_key, edit_key = jax.random.split(rng, 3)
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        bc_loss = flow.bc_flow_loss(self.network.select('behavior_flow', grad_params['behavior_flow']),
                                    observations, actions, batch['valid'], bc_key)

        flow_actions = self.flow_actions(observations, jax.random.normal(noise_key, actions.shape))
        edited, log_probs = self.edited_actions(observations, flow_actions, edit_key, grad_params['edit_actor'])
        # Online critic with stored parameters (fixed call): the gradient reaches π_ω through the edited action.
        q = self.q_mean(observations, jnp.clip(edited, -1.0, 1.0))
        alpha = self.network.apply('edit_alpha', params=grad_params['edit_alpha'])
        entropy_target = rl.target_entropy(self.config.edit_target_entropy,
                                           self.config.edit_target_entropy_multiplier, self.action_size)
        edit_loss, alpha_loss = rl.entropy_regularised_actor_loss(q, log_probs, alpha, entropy_target)

        loss = bc_loss + edit_loss
        return loss, {'actor/actor_loss': loss, 'actor/bc_flow_loss': bc_loss, 'actor/edit_loss': edit_loss,
                      'actor/edit_q': q.mean(), 'actor/edit_alpha': alpha, 'actor/edit_alpha_loss': alpha_loss,
                      'actor/edit_entropy': -log_probs.mean()}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """clip(a_β + edit_scale·e), e ~ π_ω(·|s, a_β) (stochastic, also at evaluation), best-of-n (§6).

        Observations (*batch, O) → actions (*batch, D) in [−1, 1]. Keys per candidate: (noise z, edit)."""

        def sample(observations, key):
            noise_key, edit_key = jax.random.split(key)
            noises = jax.random.normal(noise_key, (*observations.shape[:-1], self.action_size))
            edited, _ = self.edited_actions(observations, self.flow_actions(observations, noises), edit_key)
            return jnp.clip(edited, -1.0, 1.0)

        return flow.best_of_n(sample, self.q_mean, observations, rng, self.config.best_of_n)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if config.edit_scale < 0:
            raise ValueError(f'edit_scale must be >= 0, got {config.edit_scale}.')
        action_size = ex_chunks.shape[-1]

        actor_dims = tuple(config.actor_hidden_dims)
        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'behavior_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
            'edit_actor': (TanhGaussianPolicy(actor_dims, action_size, config.actor_layer_norm),
                           (ex_observations, ex_chunks)),
            'edit_alpha': (LogParam(1.0), ()),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the BC flow and the edit policy; plain Adam (no
    # gradient clipping).
    return shared_config(
        'fedit',
        flow_steps=10,  # T: Euler steps of the BC flow.
        best_of_n=1,  # Candidates per observation scored by the online critic when acting (1: off).
        edit_scale=0.0,  # Half-width of the edit box around the flow action (0: the edit is a no-op; tuned > 0).
        edit_target_entropy=ml_collections.config_dict.placeholder(float),  # Edit entropy target (None: −mult·D).
        edit_target_entropy_multiplier=0.5,  # Edit entropy target = −multiplier·D when unset.
    )


Agent = FEditAgent
