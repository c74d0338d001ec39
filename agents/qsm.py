"""QSM — Q-Score Matching (Psenka et al., ICML 2024), as run in the QAM benchmark.

A DDPM noise-prediction policy ε_θ(s, x, t) with a VP schedule (T = 10 steps, learnable Fourier time features,
Mish MLPs). The distinguishing idea: the policy's *score* is matched to the critic's action gradient. At a
noisy dataset action x_t = sqrt(ᾱ_t)·a + sqrt(1 − ᾱ_t)·ε, the predicted noise is regressed onto
−inv_temp·∇_x Q̄*(s, x_t) (gradient of the target critic's ensemble mean, a constant), so that denoising moves
actions uphill in Q; a DDPM behaviour-cloning term (ε̂ → ε) weighted by `alpha` keeps the policy near the data.
The critic is the usual pessimistic ensemble, bootstrapped with the acting policy (the DDPM sampler).
Specification: ALGORITHMS.md §11 (the reference code's `actor_loss_type = "qsm"`).

Networks: `critic` + `target_critic`; `actor` = ε_θ (no target). The VP schedule, the network, the forward
noising and the sampler are shared with DAC (utils/diffusion.py), and so is everything but the actor loss
(utils/diffusion_agent.py).

Sampler (KEEP, as in the reference): each step jumps to the predicted clean action x̂0, adds noise of std
sqrt(β_t) (except at the last step) and clips to [−1, 1] (`clip_sampler_after = True`, the benchmark setting).

Differences from the reference code (all FIX, none changes the published behaviour): invalid rows are masked
by multiplying their losses by `valid` (§11.7: the reference raises them to the power `valid`, which only
changes the logged values); Polyak targets from the post-update parameters; `grad/norm` is the true global
norm; the TD-target actions are clipped (a no-op with `clip_sampler_after`).
"""

import jax.numpy as jnp

from utils import diffusion, diffusion_agent
from utils.agent_base import shared_config


class QSMAgent(diffusion_agent.DiffusionAgent):
    """QSM: the shared diffusion-policy agent (utils/diffusion_agent.py) with the QSM actor loss."""

    LOSS_TYPE = 'qsm'
    SWEEPABLE = ('inv_temp', 'alpha')  # main.py --hyper_sweep can vmap these

    def actor_loss(self, batch, grad_params, rng):
        """alpha·L_bc + L_qsm (§11.4), both (1/B) Σ_b w_b (1/D) Σ_d (·)², with ε̂ = ε_θ(s, x_t, t) (`actor_inputs`):

            L_bc  = ‖ε − ε̂‖²,   L_qsm = ‖−inv_temp·g − ε̂‖²,   g = ∇_x Q̄*(s, x) at x = x_t (constant).

        Keys: rng → forward noising (t, ε)."""
        valid, steps, noises, q_grads, predicted = self.actor_inputs(batch, grad_params, rng)
        bc_loss = diffusion.noise_prediction_loss(predicted, noises, valid)
        qsm_loss = diffusion.noise_prediction_loss(predicted, -self.hyperparameter('inv_temp') * q_grads, valid)

        loss = self.hyperparameter('alpha') * bc_loss + qsm_loss
        return loss, {'actor/actor_loss': loss, 'actor/bc_loss': bc_loss, 'actor/qsm_loss': qsm_loss,
                      'actor/q_grad_norm': jnp.linalg.norm(q_grads, axis=-1).mean(),
                      'actor/predicted_noise_norm': jnp.linalg.norm(predicted, axis=-1).mean()}


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_hidden_dims are the widths of the noise predictor's
    # condition and reverse MLPs, actor_layer_norm acts in its reverse MLP only; gradient clipping is clip_grad_norm.
    return shared_config(
        'qsm',
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
    )


Agent = QSMAgent
