"""DAC — Diffusion Actor-Critic (Fang et al., ICLR 2025), as run in the QAM benchmark.

A DDPM noise-prediction policy ε_θ(s, x, t) with a VP schedule (T = 10 steps, learnable Fourier time features,
Mish MLPs). The distinguishing idea: the critic's action gradient enters the denoising loss *linearly*. At a
noisy dataset action x_t = sqrt(ᾱ_t)·a + sqrt(1 − ᾱ_t)·ε the actor minimises
alpha·‖ε − ε̂‖² + ⟨sqrt(1 − ᾱ_t)·g, ε̂⟩ with g = ∇_x Q̄*(s, x_t) (gradient of the target critic's ensemble mean,
a constant): the predicted noise is pushed against the Q gradient, i.e. denoising moves actions uphill in Q,
scaled by the noise level, while the DDPM behaviour-cloning term weighted by `alpha` keeps it near the data.
The critic is the usual pessimistic ensemble, bootstrapped with the acting policy (the DDPM sampler).
Specification: ALGORITHMS.md §11 (the reference code's `actor_loss_type = "dac"`).

Networks: `critic` + `target_critic`; `actor` = ε_θ (no target). The VP schedule, the network, the forward
noising and the sampler are shared with QSM (utils/diffusion.py).

Sampler (`clip_sampler_before = True`, the benchmark setting): the usual DDPM ancestral step from the clipped
clean-action prediction clip(x̂0) — posterior mean of q(x_{t−1} | x_t, clip(x̂0)) — but with noise of std
sqrt(β_t) instead of the posterior std (KEEP); the last step returns clip(x̂0).

Differences from the reference code (all FIX, none changes the published behaviour): invalid rows are masked
by multiplying their losses by `valid` (§11.7: the reference raises them to the power `valid`, which only
changes the logged values); Polyak targets from the post-update parameters; `grad/norm` is the true global
norm; the TD-target actions are clipped (a no-op with `clip_sampler_before`).
"""

import jax
import jax.numpy as jnp
import ml_collections

from utils import diffusion, rl
from utils.agent_base import ChunkedAgent
from utils.networks import CriticEnsemble


class DACAgent(ChunkedAgent):
    """DAC agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('alpha',)  # main.py --hyper_sweep can vmap these

    # ------------------------------------------------------------------------------ losses
    def critic_loss(self, batch, grad_params, rng):
        """Common TD loss (§1.4) with a' = clip(sample_actions(s')), the DDPM sampler."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        next_observations = batch['next_observations'][:, -1]
        next_actions = jax.lax.stop_gradient(jnp.clip(self.sample_actions(next_observations, rng), -1.0, 1.0))
        next_q = self.network.apply('target_critic', next_observations, next_actions)  # target: fixed call
        targets = rl.td_target(next_q, batch['rewards'][:, -1], batch['masks'][:, -1], self.config.discount,
                               self.config.horizon_length, self.config.rho)
        q = self.network.apply('critic', observations, actions, params=grad_params['critic'])
        loss = rl.critic_loss(q, jax.lax.stop_gradient(targets), batch['valid'][:, -1])
        return loss, {'critic/critic_loss': loss, 'critic/q_mean': q.mean(), 'critic/q_max': q.max(),
                      'critic/q_min': q.min()}

    def actor_loss(self, batch, grad_params, rng):
        """alpha·L_bc + L_dac (§11.4), with ε̂ = ε_θ(s, x_t, t) and g = ∇_x Q̄*(s, x) at x = x_t (constant):

            L_bc  = (1/B) Σ_b w_b (1/D) Σ_d (ε − ε̂)²_{b,d},
            L_dac = (1/B) Σ_b w_b (1/D) Σ_d (sqrt(1 − ᾱ_t)·g ⊙ ε̂)_{b,d}.

        Keys: rng → forward noising (t, ε)."""
        observations, actions, valid = batch['observations'], self.flat_actions(batch['actions']), batch['valid'][:, -1]
        noisy_actions, steps, noises = diffusion.forward_noising(rng, actions, self.config.diffusion_steps)
        critic = 'target_critic' if self.config.use_target_critic_grad else 'critic'
        q_grads = diffusion.ensemble_mean_action_gradient(self.network.select(critic), observations,
                                                          noisy_actions)  # stored critic params: fixed call
        predicted = self.network.apply('actor', observations, noisy_actions, diffusion.step_times(steps),
                                       params=grad_params['actor'])
        bc_loss = diffusion.noise_prediction_loss(predicted, noises, valid)
        noise_levels = jnp.sqrt(1.0 - diffusion.vp_schedule(self.config.diffusion_steps).alpha_bars)[steps]  # (B,)
        dac_loss = jnp.mean(valid * noise_levels * jnp.mean(q_grads * predicted, axis=-1))

        loss = self.hyperparameter('alpha') * bc_loss + dac_loss
        return loss, {'actor/actor_loss': loss, 'actor/bc_loss': bc_loss, 'actor/dac_loss': dac_loss,
                      'actor/q_grad_norm': jnp.linalg.norm(q_grads, axis=-1).mean(),
                      'actor/predicted_noise_norm': jnp.linalg.norm(predicted, axis=-1).mean()}

    def total_loss(self, batch, grad_params, rng):
        """L_critic + L_actor: one scalar, differentiated once w.r.t. every trainable network."""
        critic_key, actor_key = jax.random.split(rng)
        critic_loss, critic_info = self.critic_loss(batch, grad_params, critic_key)
        actor_loss, actor_info = self.actor_loss(batch, grad_params, actor_key)
        return critic_loss + actor_loss, {**critic_info, **actor_info}

    # ------------------------------------------------------------------------------ update
    def update(self, batch):
        """One gradient step (global-norm clipping, then Adam) on the total loss, then the EMA of `critic`. Pure."""
        rng, loss_key = jax.random.split(self.rng)
        grads, info = jax.grad(self.total_loss, argnums=1, has_aux=True)(batch, self.network.trainable_params,
                                                                         loss_key)
        network, info['grad/norm'] = self.network.apply_gradients(grads)
        network = network.update_targets(self.config.tau)  # post-update online parameters
        return self.replace(rng=rng, network=network), info

    # ---------------------------------------------------------------------------- acting
    def sample_actions(self, observations, rng):
        """The DDPM sampler (§11.5) for observations (*batch, O) → (*batch, D), clipped to [−1, 1] (a no-op with
        `clip_sampler_before`); stored actor parameters. No best-of-n."""
        actions = diffusion.ddpm_sample(self.network.select('actor'), observations, rng, self.action_size,
                                        self.config.diffusion_steps, self.config.clip_sampler_before,
                                        self.config.clip_sampler_after)
        return jnp.clip(actions, -1.0, 1.0)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, 'to_dict') else dict(config))
        if config.actor_loss_type != 'dac':
            raise ValueError(f'The dac agent implements actor_loss_type "dac" only (got {config.actor_loss_type!r}); '
                             'use --agent=qsm for the QSM loss.')
        if config.beta_schedule != 'vp':
            raise ValueError(f'Only the "vp" beta schedule is implemented, got {config.beta_schedule!r}.')
        if config.diffusion_steps < 1 or config.horizon_length < 1 or config.time_dim < 2 or config.time_dim % 2:
            raise ValueError('diffusion_steps and horizon_length must be >= 1 and time_dim a positive even number.')
        if config.alpha < 0:
            raise ValueError(f'alpha must be >= 0, got {config.alpha}.')
        ex_observations = jnp.asarray(ex_observations, jnp.float32).reshape(1, -1)
        config.ob_dims, config.action_dim = ex_observations.shape[-1], int(jnp.shape(ex_actions)[-1])
        config = ml_collections.FrozenConfigDict(config)
        action_size = (config.horizon_length if config.action_chunking else 1) * config.action_dim
        ex_chunks, ex_times = jnp.zeros((1, action_size)), jnp.zeros((1, 1))

        modules = {
            'critic': CriticEnsemble(tuple(config.value_hidden_dims), config.num_qs, config.value_layer_norm),
            'actor': diffusion.NoisePredictor(tuple(config.actor_hidden_dims), action_size, config.time_dim,
                                              config.actor_layer_norm),
        }
        inputs = {'critic': (ex_observations, ex_chunks), 'actor': (ex_observations, ex_chunks, ex_times)}
        rng, *init_keys = jax.random.split(jax.random.PRNGKey(seed), len(modules) + 1)
        params = {name: rl.init_params(modules[name], key, *inputs[name]) for name, key in zip(modules, init_keys)}
        optimizer = rl.make_optimizer(config.lr, float(config.clip_grad_norm) if config.clip_grad_norm else None)
        network = rl.TrainState.create(modules, params, optimizer, targets={'target_critic': 'critic'})
        return cls(rng=rng, network=network, config=config)


def get_config():
    config = ml_collections.ConfigDict(dict(
        agent_name='dac',  # Agent name (file in agents/).
        lr=3e-4,  # Adam learning rate.
        batch_size=256,  # Batch size (read by the training loop).
        actor_hidden_dims=(512, 512, 512, 512),  # Widths of the noise predictor's condition and reverse MLPs.
        value_hidden_dims=(512, 512, 512, 512),  # Hidden widths of each critic member.
        actor_layer_norm=False,  # LayerNorm in the noise predictor's reverse MLP.
        value_layer_norm=True,  # LayerNorm in the critic.
        horizon_length=5,  # H: action chunk length (5 manipulation, 1 mazes; set per domain by the run).
        action_chunking=True,  # Act with flat chunks of H actions (D = H·A); False: first action, γ^H bootstrap.
        num_qs=10,  # K: critic ensemble size.
        rho=0.5,  # Pessimism: TD target uses mean − rho·std over the ensemble.
        discount=0.99,  # γ (per step; the TD target uses γ^H).
        tau=0.005,  # λ: Polyak rate of the target critic.
        diffusion_steps=10,  # T: DDPM steps of the VP schedule (training and sampling).
        time_dim=64,  # Width of the learnable Fourier time features (even).
        beta_schedule='vp',  # Noise schedule; only "vp" is implemented (the only one the benchmark uses).
        actor_loss_type='dac',  # Fixed to "dac" (the QSM loss is agent `qsm`); kept so reference settings apply.
        clip_sampler_before=True,  # Clip x̂0 and take the DDPM posterior mean at each sampler step (DAC's setting).
        clip_sampler_after=False,  # Clip x_{t−1} to [−1, 1] after each sampler step (QSM's sampler).
        alpha=0.0,  # Weight of the DDPM behaviour-cloning loss ‖ε − ε̂‖² (tuned per domain).
        use_target_critic_grad=True,  # Take ∇_a Q from the target critic (False: the online critic).
        clip_grad_norm=1.0,  # Global-norm gradient clipping threshold before Adam (0: off).
    ))
    return config


Agent = DACAgent
