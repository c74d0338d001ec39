"""Shared DDPM pieces (utils/diffusion.py, ALGORITHMS §11): VP schedule against its closed form and the table of
§11.1, the noise-prediction network against a forward pass written here, the forward noising, the critic action
gradient against finite differences, the masked noise-prediction loss, and the DDPM sampler against an unrolled
loop and against known Gaussian data with the exact optimal noise predictor.

The helpers at the top (`ddpm_loop`, `perturbed`, …) are reused by tests/test_dac.py and tests/test_qsm.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.agent_tools import adam_first_moment, global_norm, perturbed, to_float64, two_compiled_updates
from utils import diffusion
from utils.networks import CriticEnsemble

# ALGORITHMS §11.1, T = 10 (5 decimals).
BETAS_T10 = [0, 0.05776, 0.14658, 0.22702, 0.29988, 0.36587, 0.42564, 0.47978, 0.52881, 0.57323, 0.61345]
ALPHA_BARS_T10 = [1, 0.94224, 0.80413, 0.62157, 0.43518, 0.27596, 0.15850, 0.08246, 0.03885, 0.01658, 0.00641]


# ------------------------------------------------------------------------------------------ helpers
def closed_form_schedule(num_steps):
    """(β, α, ᾱ) for t = 0 … T in float64, written term by term from §11.1."""
    betas = [0.0] + [1 - np.exp(-0.1 / num_steps - 0.5 * (10 - 0.1) * (2 * t - 1) / num_steps**2)
                     for t in range(1, num_steps + 1)]
    alphas = [1 - b for b in betas]
    alpha_bars = [1.0]
    for t in range(1, num_steps + 1):
        alpha_bars.append(alpha_bars[-1] * alphas[t])
    return np.array(betas), np.array(alphas), np.array(alpha_bars)


def ddpm_loop(noise_fn, observations, rng, action_size, num_steps, clip_before, clip_after, stop_at=0):
    """The sampler of §11.5 unrolled in Python with the float64 closed-form schedule; keys as documented by
    `diffusion.ddpm_sample` (rng → (x_T, step keys), split(·, T)[i] for step t = T − i). Returns x_{stop_at}."""
    betas, alphas, alpha_bars = closed_form_schedule(num_steps)
    noise_key, steps_key = jax.random.split(rng)
    step_keys = jax.random.split(steps_key, num_steps)
    x = np.asarray(jax.random.normal(noise_key, (*observations.shape[:-1], action_size)), np.float64)
    for i, t in enumerate(range(num_steps, stop_at, -1)):
        times = jnp.full((*x.shape[:-1], 1), float(t))
        eps = np.asarray(noise_fn(observations, jnp.asarray(x, jnp.float32), times), np.float64)
        x0 = (x - np.sqrt(1 - alpha_bars[t]) * eps) / np.sqrt(alpha_bars[t])
        if clip_before:
            x0 = np.clip(x0, -1, 1)
            mean = (np.sqrt(alpha_bars[t - 1]) * betas[t] * x0
                    + np.sqrt(alphas[t]) * (1 - alpha_bars[t - 1]) * x) / (1 - alpha_bars[t])
        else:
            mean = x0
        z = np.asarray(jax.random.normal(step_keys[i], x.shape), np.float64)
        x = mean + (np.sqrt(betas[t]) * z if t > 1 else 0.0)
        if clip_after:
            x = np.clip(x, -1, 1)
    return x


def finite_difference_q_gradient(q_fn, actions, eps=1e-6):
    """∂/∂a_d of q_fn(a) (B,) per sample by central differences, in float64 numpy."""
    actions = np.asarray(actions, np.float64)
    grads = np.zeros_like(actions)
    for d in range(actions.shape[-1]):
        step = np.zeros_like(actions)
        step[:, d] = eps
        grads[:, d] = (np.asarray(q_fn(actions + step)) - np.asarray(q_fn(actions - step))) / (2 * eps)
    return grads


def check_update_compiles_once_moves_targets_exactly_and_clips_the_global_norm(agent, data, next_data, loss_name):
    """What DAC's and QSM's updates share (ALGORITHMS §11): one compilation for two calls, finite infos, the EMA
    of the critic (rate 0.005) as the only target, and one optimizer step on the total-loss gradient clipped
    jointly over critic and actor to global norm 1. `loss_name`: the actor-loss info key besides actor/bc_loss."""
    data = {**data, 'chunk_return': 30.0 * data['chunk_return']}  # a large critic gradient: the clipping is active
    new_agent, info, newer_agent = two_compiled_updates(
        agent, data, next_data,
        {'critic/critic_loss', 'critic/q_mean', 'critic/q_max', 'critic/q_min', 'actor/actor_loss', 'actor/bc_loss',
         loss_name, 'grad/norm'})
    assert not np.array_equal(newer_agent.rng, agent.rng)

    old, new = agent.network.params, new_agent.network.params
    assert set(old) == {'critic', 'target_critic', 'actor'}  # EMA of the critic only
    for t_old, o_new, t_new in zip(jax.tree.leaves(old['target_critic']), jax.tree.leaves(new['critic']),
                                   jax.tree.leaves(new['target_critic'])):
        t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
        np.testing.assert_allclose(t_new, t_old + 0.005 * (o_new - t_old), rtol=2e-7, atol=1e-9)
    assert not np.allclose(jax.tree.leaves(new['critic'])[0], jax.tree.leaves(old['critic'])[0])
    assert not np.allclose(jax.tree.leaves(new['actor'])[0], jax.tree.leaves(old['actor'])[0])

    # grad/norm is the true global norm of the total-loss gradient; Adam's first moment after one step is
    # (1 − β1)·g·min(1, 1/‖g‖): the gradient was clipped jointly over critic and actor to norm 1.
    _, loss_key = jax.random.split(agent.rng)
    grads = jax.jit(jax.grad(lambda p: agent.total_loss(data, p, loss_key)[0]))(agent.network.trainable_params)
    norm = global_norm(grads)
    assert norm > 2.0
    np.testing.assert_allclose(info['grad/norm'], norm, rtol=1e-4)
    for mu, g in zip(jax.tree.leaves(adam_first_moment(new_agent.network.opt_state)), jax.tree.leaves(grads)):
        np.testing.assert_allclose(mu, 0.1 * np.asarray(g) / norm, rtol=1e-3, atol=1e-8)


def mish_np(x):
    return x * np.tanh(np.logaddexp(0.0, x))


# ------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize('num_steps', [10, 3])
def test_vp_schedule_matches_closed_form(num_steps):
    schedule = diffusion.vp_schedule(num_steps)
    betas, alphas, alpha_bars = closed_form_schedule(num_steps)
    for array in schedule:
        assert array.shape == (num_steps + 1,) and array.dtype == np.float32
    np.testing.assert_allclose(schedule.betas, betas, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(schedule.alphas, alphas, rtol=1e-6)
    np.testing.assert_allclose(schedule.alpha_bars, alpha_bars, rtol=1e-6)
    assert schedule.betas[0] == 0 and schedule.alpha_bars[0] == 1
    t = np.arange(1, num_steps + 1)
    np.testing.assert_allclose(schedule.posterior_x0_coefs[1:],
                               np.sqrt(alpha_bars[t - 1]) * betas[t] / (1 - alpha_bars[t]), rtol=1e-6)
    np.testing.assert_allclose(schedule.posterior_xt_coefs[1:],
                               np.sqrt(alphas[t]) * (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t]), rtol=1e-6)
    # ᾱ_0 = 1: at t = 1 the posterior mean is exactly x̂0 (coefficients 1 and 0, no rounding).
    assert schedule.posterior_x0_coefs[1] == 1.0 and schedule.posterior_xt_coefs[1] == 0.0


def test_vp_schedule_matches_table():
    schedule = diffusion.vp_schedule(10)
    np.testing.assert_allclose(schedule.betas, BETAS_T10, atol=6e-6)  # the table's rounding: 5e-6
    np.testing.assert_allclose(schedule.alpha_bars, ALPHA_BARS_T10, atol=6e-6)


# ------------------------------------------------------------------------------------------ networks
def test_fourier_features_formula_and_init():
    module = diffusion.FourierFeatures(64)
    times = jnp.array([[1.0], [4.0], [10.0]])
    params = module.init(jax.random.PRNGKey(0), times)['params']
    kernel = np.asarray(params['kernel'], np.float64)
    assert kernel.shape == (32, 1)
    f = 2 * np.pi * np.asarray(times, np.float64) * kernel[:, 0][None]
    np.testing.assert_allclose(module.apply({'params': params}, times), np.concatenate([np.cos(f), np.sin(f)], -1),
                               rtol=1e-4, atol=1e-5)
    # W ~ N(0, 0.2²): 40 initialisations × 32 entries; the standard error of the std is about 0.004.
    kernels = np.concatenate([np.asarray(module.init(jax.random.PRNGKey(i), times)['params']['kernel']).ravel()
                              for i in range(40)])
    assert abs(kernels.std() - 0.2) < 0.02 and abs(kernels.mean()) < 0.02
    # Learnable: the time features pass gradient to W.
    grads = jax.grad(lambda p: jnp.sum(module.apply({'params': p}, times) ** 2 * jnp.arange(64)))(params)
    assert np.abs(np.asarray(grads['kernel'])).max() > 0


def test_noise_predictor_matches_forward_pass_written_here():
    O, D, hidden = 3, 4, (16, 16)
    module = diffusion.NoisePredictor(hidden, D, time_dim=8)
    observations = jax.random.normal(jax.random.PRNGKey(1), (5, O))
    x = jax.random.normal(jax.random.PRNGKey(2), (5, D))
    times = jnp.array([1.0, 2.0, 5.0, 9.0, 10.0])[:, None]
    params = module.init(jax.random.PRNGKey(0), observations, x, times)['params']
    params = perturbed(params, jax.random.PRNGKey(3), 0.1)  # non-zero biases
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

    def dense(layer, h):
        return h @ layer['kernel'] + layer['bias']

    f = 2 * np.pi * np.asarray(times, np.float64) @ p['time']['kernel'].T
    h = np.concatenate([np.cos(f), np.sin(f)], -1)
    cond = p['condition_mlp']
    assert set(cond) == {'Dense_0', 'Dense_1'}  # MLP(hidden): one Mish layer, then a linear Dense(16)
    h = dense(cond['Dense_1'], mish_np(dense(cond['Dense_0'], h)))
    rev = p['reverse_mlp']
    z = np.concatenate([np.asarray(x, np.float64), np.asarray(observations, np.float64), h], -1)  # (x, s, cond)
    z = mish_np(dense(rev['Dense_0'], z))
    z = mish_np(dense(rev['Dense_1'], z))
    expected = dense(rev['Dense_2'], z)
    assert set(rev) == {'Dense_0', 'Dense_1', 'Dense_2'} and rev['Dense_2']['kernel'].shape == (16, D)
    out = module.apply({'params': params}, observations, x, times)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    single = module.apply({'params': params}, observations[2], x[2], times[2])  # unbatched input
    assert single.shape == (D,)
    np.testing.assert_allclose(single, out[2], rtol=1e-5, atol=1e-6)
    # Fresh init: zero biases, Xavier-uniform kernels.
    fresh = module.init(jax.random.PRNGKey(0), observations, x, times)['params']
    assert all(np.all(np.asarray(layer['bias']) == 0) for mlp in ('condition_mlp', 'reverse_mlp')
               for layer in fresh[mlp].values())
    kernel = np.asarray(fresh['reverse_mlp']['Dense_0']['kernel'])
    bound = np.sqrt(6 / sum(kernel.shape))  # uniform on ±bound: std bound/sqrt(3)
    assert np.abs(kernel).max() <= bound and abs(kernel.std() - bound / np.sqrt(3)) < 0.15 * bound
    # LayerNorm only in the reverse MLP, when enabled.
    normed = diffusion.NoisePredictor(hidden, D, 8, layer_norm=True).init(jax.random.PRNGKey(0), observations, x,
                                                                           times)['params']
    assert 'LayerNorm_0' in normed['reverse_mlp'] and 'LayerNorm_0' not in normed['condition_mlp']


# ------------------------------------------------------------------------------------------ training pieces
def test_forward_noising_formula_and_step_range():
    T, B, D = 10, 4000, 3
    actions = jax.random.uniform(jax.random.PRNGKey(0), (B, D), minval=-1, maxval=1)
    key = jax.random.PRNGKey(1)
    noisy, steps, noises = diffusion.forward_noising(key, actions, T)
    step_key, noise_key = jax.random.split(key)
    np.testing.assert_array_equal(steps, jax.random.randint(step_key, (B,), 1, T + 1))
    np.testing.assert_array_equal(noises, jax.random.normal(noise_key, (B, D)))
    _, _, alpha_bars = closed_form_schedule(T)
    ab = alpha_bars[np.asarray(steps)][:, None]
    expected = np.sqrt(ab) * np.asarray(actions, np.float64) + np.sqrt(1 - ab) * np.asarray(noises, np.float64)
    np.testing.assert_allclose(noisy, expected, rtol=1e-5, atol=1e-6)
    assert set(np.unique(steps)) == set(range(1, T + 1))  # t ~ U{1, …, T}: never 0
    np.testing.assert_allclose(np.bincount(np.asarray(steps))[1:] / B, 0.1, atol=0.025)
    np.testing.assert_allclose(diffusion.step_times(steps[:3]), np.asarray(steps[:3], np.float32)[:, None])


def test_ensemble_mean_action_gradient_matches_finite_differences_and_is_constant():
    critic = CriticEnsemble((16, 16), num_qs=3)
    with jax.enable_x64(True):
        observations = jax.random.normal(jax.random.PRNGKey(0), (6, 4), jnp.float64)
        actions = jax.random.normal(jax.random.PRNGKey(1), (6, 2), jnp.float64)
        params = to_float64(critic.init(jax.random.PRNGKey(2), observations, actions)['params'])
        critic_fn = lambda s, a, p=params: critic.apply({'params': p}, s, a)  # noqa: E731
        g = diffusion.ensemble_mean_action_gradient(critic_fn, observations, actions)
        fd = finite_difference_q_gradient(jax.jit(lambda a: critic_fn(observations, a).mean(0)), actions)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
        # A constant: no gradient flows back into the critic's parameters through g.
        through = jax.grad(lambda p: jnp.sum(diffusion.ensemble_mean_action_gradient(
            lambda s, a: critic_fn(s, a, p), observations, actions)))(params)
        assert global_norm(through) == 0


def test_noise_prediction_loss_masks_by_multiplication():
    predicted = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
    targets = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    valid = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    per_row = [np.mean((np.asarray(targets[b]) - np.asarray(predicted[b])) ** 2) for b in range(6)]
    expected = sum(w * r for w, r in zip(np.asarray(valid), per_row)) / 6  # invalid rows: 0, still counted in B
    np.testing.assert_allclose(diffusion.noise_prediction_loss(predicted, targets, valid), expected, rtol=1e-6)
    powered = np.mean([r ** w for w, r in zip(np.asarray(valid), per_row)])  # the reference's masking
    assert abs(expected - powered) > 0.1


# ------------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize('clip_before, clip_after', [(True, False), (False, True), (False, False)])
def test_ddpm_sample_matches_unrolled_loop(clip_before, clip_after):
    O, D, T = 3, 4, 10
    module = diffusion.NoisePredictor((16, 16), D, time_dim=8)
    observations = jax.random.normal(jax.random.PRNGKey(1), (9, O))
    params = module.init(jax.random.PRNGKey(0), observations, jnp.zeros((9, D)), jnp.ones((9, 1)))['params']
    noise_fn = lambda s, x, t: module.apply({'params': params}, s, x, t)  # noqa: E731
    key = jax.random.PRNGKey(7)
    sample = jax.jit(lambda s, key: diffusion.ddpm_sample(noise_fn, s, key, D, T, clip_before, clip_after))
    out = sample(observations, key)
    expected = ddpm_loop(noise_fn, observations, key, D, T, clip_before, clip_after)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    if clip_before or clip_after:
        assert np.abs(np.asarray(out)).max() <= 1.0
    assert sample(observations[0], key).shape == (D,)


def test_ddpm_sample_with_optimal_predictor_recovers_gaussian_data():
    """Data a ~ N(m, diag(s²)); then x_t ~ N(sqrt(ᾱ_t)·m, ᾱ_t·s² + 1 − ᾱ_t) and the optimal noise predictor is
    E[ε | x_t] = sqrt(1 − ᾱ_t)·(x_t − sqrt(ᾱ_t)·m)/(ᾱ_t·s² + 1 − ᾱ_t). With it, the DDPM sampler of DAC
    (clip_before, posterior mean, noise std sqrt(β_t)) must return samples with the data's per-dimension mean
    within 0.01 and std within 4%. (Its exact, linear-Gaussian output std differs from s by 0.2–1.6% for these
    (m, s) at T = 10, because of the sqrt(β_t) noise; the sampling error with N = 20000 is 0.002 and 0.5%.)"""
    T, N = 10, 20000
    means, stds = np.array([0.2, -0.2, 0.0]), np.array([0.3, 0.3, 0.35])
    _, _, alpha_bars = closed_form_schedule(T)
    alpha_bars = jnp.asarray(alpha_bars, jnp.float32)

    def optimal_noise(observations, x, times):
        ab = alpha_bars[jnp.round(times[..., 0]).astype(jnp.int32)][..., None]
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * means) / (ab * stds**2 + 1 - ab)

    observations = jnp.zeros((N, 1))
    samples = np.asarray(jax.jit(lambda key: diffusion.ddpm_sample(optimal_noise, observations, key, 3, T,
                                                                   clip_before=True))(jax.random.PRNGKey(0)))
    np.testing.assert_allclose(samples.mean(0), means, atol=0.01)
    np.testing.assert_allclose(samples.std(0), stds, rtol=0.04)
    # Without the denoiser the same sampler returns something else entirely (the check can fail).
    untrained = np.asarray(diffusion.ddpm_sample(lambda s, x, t: jnp.zeros_like(x), observations[:2000],
                                                 jax.random.PRNGKey(0), 3, T, clip_before=True))
    assert np.abs(untrained.std(0) - stds).max() > 0.1
