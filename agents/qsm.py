"""QSM — Q-Score Matching (Psenka et al., ICML 2024), as run in the QAM benchmark.

A DDPM noise-prediction policy ε_θ(s, x, t) with a VP schedule (T = 10 steps, learnable Fourier time features,
Mish MLPs). The distinguishing idea: the policy's *score* is matched to the critic's action gradient. At a
noisy dataset action x_t = sqrt(ᾱ_t)·a + sqrt(1 − ᾱ_t)·ε, the predicted noise is regressed onto
−inv_temp·∇_x Q̄*(s, x_t) (gradient of the target critic's ensemble mean, a constant), so that denoising moves
actions uphill in Q; a DDPM behaviour-cloning term (ε̂ → ε) weighted by `alpha` keeps the policy near the data.
The critic is the usual pessimistic ensemble, bootstrapped with the acting policy (the DDPM sampler).
Specification: ALGORITHMS.md §11 (the reference code's `actor_loss_type = "qsm"`).

Networks: `critic` + `target_critic`; `actor` = ε_θ (no target). The VP schedule, the network, the forward
noising and the sampler are shared with DAC (utils/diffusion.py).

Sampler (KEEP, as in the reference): each step jumps to the predicted clean action x̂0, adds noise of std
sqrt(β_t) (except at the last step) and clips to [−1, 1] (`clip_sampler_after = True`, the benchmark setting).

Differences from the reference code (all FIX, none changes the published behaviour): invalid rows are masked
by multiplying their losses by `valid` (§11.7: the reference raises them to the power `valid`, which only
changes the logged values); Polyak targets from the post-update parameters; `grad/norm` is the true global
norm; the TD-target actions are clipped (a no-op with `clip_sampler_after`).
"""

import jax
import jax.numpy as jnp
import ml_collections

from utils import diffusion, rl
from utils.agent_base import ChunkedAgent
from utils.networks import CriticEnsemble


class QSMAgent(ChunkedAgent):
    """QSM agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('inv_temp', 'alpha')  # main.py --hyper_sweep can vmap these

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
        """alpha·L_bc + L_qsm (§11.4), both (1/B) Σ_b w_b (1/D) Σ_d (·)², with ε̂ = ε_θ(s, x_t, t):

            L_bc  = ‖ε − ε̂‖²,   L_qsm = ‖−inv_temp·g − ε̂‖²,   g = ∇_x Q̄*(s, x) at x = x_t (constant).

        Keys: rng → forward noising (t, ε)."""
        observations, actions, valid = batch['observations'], self.flat_actions(batch['actions']), batch['valid'][:, -1]
        noisy_actions, steps, noises = diffusion.forward_noising(rng, actions, self.config.diffusion_steps)
        critic = 'target_critic' if self.config.use_target_critic_grad else 'critic'
        q_grads = diffusion.ensemble_mean_action_gradient(self.network.select(critic), observations,
                                                          noisy_actions)  # stored critic params: fixed call
        predicted = self.network.apply('actor', observations, noisy_actions, diffusion.step_times(steps),
                                       params=grad_params['actor'])
        bc_loss = diffusion.noise_prediction_loss(predicted, noises, valid)
        qsm_loss = diffusion.noise_prediction_loss(predicted, -self.hyperparameter('inv_temp') * q_grads, valid)

        loss = self.hyperparameter('alpha') * bc_loss + qsm_loss
        return loss, {'actor/actor_loss': loss, 'actor/bc_loss': bc_loss, 'actor/qsm_loss': qsm_loss,
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
        `clip_sampler_after`); stored actor parameters. No best-of-n."""
        actions = diffusion.ddpm_sample(self.network.select('actor'), observations, rng, self.action_size,
                                        self.config.diffusion_steps, self.config.clip_sampler_before,
                                        self.config.clip_sampler_after)
        return jnp.clip(actions, -1.0, 1.0)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, 'to_dict') else dict(config))
        if config.actor_loss_type != 'qsm':
            raise ValueError(f'The qsm agent implements actor_loss_type "qsm" only (got {config.actor_loss_type!r}); '
                             'use --agent=dac for the DAC loss.')
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
        agent_name='qsm',  # Agent name (file in agents/).
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
        actor_loss_type='qsm',  # Fixed to "qsm" (the DAC loss is agent `dac`); kept so reference settings apply.
        clip_sampler_before=False,  # Clip x̂0 and take the DDPM posterior mean at each sampler step (DAC's sampler).
        clip_sampler_after=True,  # Clip x_{t−1} to [−1, 1] after each sampler step (QSM's benchmark setting).
        inv_temp=1.0,  # Scale of the critic gradient that the predicted noise regresses onto (tuned per domain).
        alpha=0.0,  # Weight of the DDPM behaviour-cloning loss ‖ε − ε̂‖² (tuned per domain).
        use_target_critic_grad=True,  # Take ∇_a Q from the target critic (False: the online critic).
        clip_grad_norm=1.0,  # Global-norm gradient clipping threshold before Adam (0: off).
    ))
    return config


Agent = QSMAgent
