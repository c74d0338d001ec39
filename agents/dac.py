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
noising and the sampler are shared with QSM (utils/diffusion.py), and so is everything but the actor loss
(utils/diffusion_agent.py).

Sampler (`clip_sampler_before = True`, the benchmark setting): the usual DDPM ancestral step from the clipped
clean-action prediction clip(x̂0) — posterior mean of q(x_{t−1} | x_t, clip(x̂0)) — but with noise of std
sqrt(β_t) instead of the posterior std (KEEP); the last step returns clip(x̂0).

Differences from the reference code (all FIX, none changes the published behaviour): invalid rows are masked
by multiplying their losses by `valid` (§11.7: the reference raises them to the power `valid`, which only
changes the logged values); Polyak targets from the post-update parameters; `grad/norm` is the true global
norm; the TD-target actions are clipped (a no-op with `clip_sampler_before`).
"""

import jax.numpy as jnp

from utils import diffusion, diffusion_agent
from utils.agent_base import shared_config


class DACAgent(diffusion_agent.DiffusionAgent):
    """DAC: the shared diffusion-policy agent (utils/diffusion_agent.py) with the DAC actor loss."""

    LOSS_TYPE = 'dac'
    SWEEPABLE = ('alpha',)  # main.py --hyper_sweep can vmap these

    def actor_loss(self, batch, grad_params, rng):
        """alpha·L_bc + L_dac (§11.4), with ε̂ = ε_θ(s, x_t, t) and g = ∇_x Q̄*(s, x) at x = x_t (constant), both
        from `actor_inputs`:

            L_bc  = (1/B) Σ_b w_b (1/D) Σ_d (ε − ε̂)²_{b,d},
            L_dac = (1/B) Σ_b w_b (1/D) Σ_d (sqrt(1 − ᾱ_t)·g ⊙ ε̂)_{b,d}.

        Keys: rng → forward noising (t, ε)."""
        valid, steps, noises, q_grads, predicted = self.actor_inputs(batch, grad_params, rng)
        bc_loss = diffusion.noise_prediction_loss(predicted, noises, valid)
        noise_levels = jnp.sqrt(1.0 - diffusion.vp_schedule(self.config.diffusion_steps).alpha_bars)[steps]  # (B,)
        dac_loss = jnp.mean(valid * noise_levels * jnp.mean(q_grads * predicted, axis=-1))

        loss = self.hyperparameter('alpha') * bc_loss + dac_loss
        return loss, {'actor/actor_loss': loss, 'actor/bc_loss': bc_loss, 'actor/dac_loss': dac_loss,
                      'actor/q_grad_norm': jnp.linalg.norm(q_grads, axis=-1).mean(),
                      'actor/predicted_noise_norm': jnp.linalg.norm(predicted, axis=-1).mean()}


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_hidden_dims are the widths of the noise predictor's
    # condition and reverse MLPs, actor_layer_norm acts in its reverse MLP only; gradient clipping is clip_grad_norm.
    return shared_config(
        'dac',
        diffusion_steps=10,  # T: DDPM steps of the VP schedule (training and sampling).
        time_dim=64,  # Width of the learnable Fourier time features (even).
        beta_schedule='vp',  # Noise schedule; only "vp" is implemented (the only one the benchmark uses).
        actor_loss_type='dac',  # Fixed to "dac" (the QSM loss is agent `qsm`); kept so reference settings apply.
        clip_sampler_before=True,  # Clip x̂0 and take the DDPM posterior mean at each sampler step (DAC's setting).
        clip_sampler_after=False,  # Clip x_{t−1} to [−1, 1] after each sampler step (QSM's sampler).
        alpha=0.0,  # Weight of the DDPM behaviour-cloning loss ‖ε − ε̂‖² (tuned per domain).
        use_target_critic_grad=True,  # Take ∇_a Q from the target critic (False: the online critic).
        clip_grad_norm=1.0,  # Global-norm gradient clipping threshold before Adam (0: off).
    )


Agent = DACAgent
