"""DSRL — diffusion steering via reinforcement learning in the latent-noise space (Wagenmaker et al., 2025).

A behaviour flow f_β is trained by flow matching and never fine-tuned by Q. The policy improvement happens
in the flow's *input noise*: a SAC-style tanh-Gaussian noise policy π_z(u|s) picks the noise z = noise_scale·u
that the (EMA target) flow then decodes into an action, dec(s, z) = EulerODE(f̄_β, s, z). Because Q is only
known on actions, a noise-space critic Q_z(s, z) is distilled, member by member, from the action critic at
the decoded action, Q_z,k(s, z) ≈ Q_k(s, dec(s, z)), on standard-normal noise; the noise policy maximises Q_z.
The action critic is the suite's pessimistic ensemble, bootstrapped with the acting policy.
Specification: ALGORITHMS.md §7.

Networks (reference-code names in brackets): `critic` + `target_critic`; `noise_critic` [z_critic], a second
ensemble on (s, z) with no target; `behavior_flow` [actor_bc_flow] = f_β + `target_behavior_flow` = f̄_β (the
decoder when `use_target_latent`); `noise_policy` [actor] = π_z, tanh-Gaussian on s → D; `alpha`, the noise
policy's entropy temperature.

Kept from the reference code: the noise critic is distilled from the online action critic on N(0, I) noise
(while the policy queries it on bounded noise of scale `noise_scale`); the decoder is the EMA target flow; the
TD target bootstraps with the full acting policy; sampling is stochastic at evaluation too. Fixed: float32
temperature; the targets follow the post-update online parameters; `grad/norm` is the true global norm.
"""

import jax
import jax.numpy as jnp
import ml_collections

from utils import flow, rl
from utils.agent_base import ChunkedAgent, shared_config
from utils.networks import LogParam, TanhGaussianPolicy


class DSRLAgent(ChunkedAgent):
    """DSRL agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('noise_scale',)  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    def decode(self, observations, noises):
        """dec(s, z): clipped Euler ODE of the EMA target flow (`use_target_latent`) or the online flow, from z.

        Stored parameters (fixed call); gradients do not reach the flow through the decoder."""
        name = 'target_behavior_flow' if self.config.use_target_latent else 'behavior_flow'
        return flow.euler_ode(self.network.select(name), observations, noises, self.config.flow_steps)

    # ------------------------------------------------------------------------------ losses
    def distill_loss(self, observations, grad_params, rng):
        """(1/(K·B)) Σ_k Σ_b (Q_z,k(s, z) − Q_k(s, dec(s, z)))², z ~ N(0, I): member k regresses member k of the
        online action critic (fixed call, constant target); no mask."""
        noises = jax.random.normal(rng, (*observations.shape[:-1], self.action_size))
        targets = jax.lax.stop_gradient(self.network.apply('critic', observations, self.decode(observations, noises)))
        z_q = self.network.apply('noise_critic', observations, noises, params=grad_params['noise_critic'])
        return jnp.mean((z_q - targets) ** 2), z_q

    def critic_loss(self, batch, grad_params, rng):
        """L_TD (§1.4, a' = clip(sample_actions(s'))) + L_distill (the noise critic)."""
        target_key, distill_key = jax.random.split(rng)
        td_loss, q = self.td_loss(batch, grad_params, target_key)
        distill_loss, z_q = self.distill_loss(batch['observations'], grad_params, distill_key)
        loss = td_loss + distill_loss
        return loss, {**self.critic_info(loss, q), 'critic/td_loss': td_loss, 'critic/distill_loss': distill_loss,
                      'critic/z_q_mean': z_q.mean()}

    def actor_loss(self, batch, grad_params, rng):
        """L_BC(f_β) + L_pi + L_alpha (§7): BC flow loss, and SAC on the noise policy against the noise critic."""
        bc_key, policy_key = jax.random.split(rng)
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        bc_loss = flow.bc_flow_loss(self.network.select('behavior_flow', grad_params['behavior_flow']),
                                    observations, actions, batch['valid'], bc_key)
        means, log_stds = self.network.apply('noise_policy', observations, params=grad_params['noise_policy'])
        latents, log_probs = rl.tanh_gaussian_sample(policy_key, means, log_stds)  # reparameterised, in (−1, 1)
        # Noise critic with its stored parameters (fixed call): the gradient reaches π_z through z.
        q = jnp.mean(self.network.apply('noise_critic', observations, self.hyperparameter('noise_scale') * latents), axis=0)
        alpha = self.network.apply('alpha', params=grad_params['alpha'])
        entropy_target = rl.target_entropy(self.config.target_entropy, self.config.target_entropy_multiplier,
                                           self.action_size)
        # L_pi = mean(lp·sg(α) − q) (gradient to π_z) + L_alpha = α·(−mean sg(lp) − H) (to the temperature).
        sac_loss, alpha_loss = rl.entropy_regularised_actor_loss(q, log_probs, alpha, entropy_target)
        loss = bc_loss + sac_loss
        return loss, {'actor/actor_loss': loss, 'actor/bc_flow_loss': bc_loss,
                      'actor/policy_loss': sac_loss - alpha_loss, 'actor/q': q.mean(), 'actor/alpha': alpha,
                      'actor/alpha_loss': alpha_loss, 'actor/entropy': -log_probs.mean(),
                      'actor/latent_abs_mean': jnp.abs(latents).mean()}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """a = dec(s, noise_scale·u), u ~ π_z(·|s) (stochastic at evaluation too); best-of-n with the online
        critic. (*batch, O) → (*batch, D) in [−1, 1]; every call with stored parameters."""

        def sample(observations, key):
            means, log_stds = self.network.apply('noise_policy', observations)
            latents, _ = rl.tanh_gaussian_sample(key, means, log_stds)
            return self.decode(observations, self.hyperparameter('noise_scale') * latents)

        return flow.best_of_n(sample, self.q_mean, observations, rng, self.config.best_of_n)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, ex_times = cls.prepare(config, ex_observations, ex_actions)
        if config.noise_scale <= 0:
            raise ValueError(f'noise_scale must be > 0, got {config.noise_scale}.')
        action_size = ex_chunks.shape[-1]

        actor_dims = tuple(config.actor_hidden_dims)
        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'noise_critic': cls.critic_network(config, ex_observations, ex_chunks),
            'behavior_flow': cls.velocity_network(config, ex_observations, ex_chunks, ex_times),
            'noise_policy': (TanhGaussianPolicy(actor_dims, action_size, config.actor_layer_norm), (ex_observations,)),
            'alpha': (LogParam(1.0), ()),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic', 'target_behavior_flow': 'behavior_flow'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the BC flow and the noise policy; value_* and num_qs
    # size each of the two critics (action critic and noise critic); plain Adam (no gradient clipping); tau also moves
    # the target BC flow.
    return shared_config(
        'dsrl',
        flow_steps=10,  # T: Euler steps of the decoder ODE.
        best_of_n=1,  # Candidates per observation scored by the online critic when acting (1: off).
        noise_scale=1.0,  # Decoded noise z = noise_scale·u, u ∈ (−1, 1)^D from the noise policy (per domain).
        target_entropy=ml_collections.config_dict.placeholder(float),  # Noise-policy entropy target (None: −mult·D).
        target_entropy_multiplier=0.5,  # Entropy target = −multiplier·D when target_entropy is unset.
        use_target_latent=True,  # Decode noise with the EMA target BC flow (False: the online BC flow).
    )


Agent = DSRLAgent
