"""DAC (agents/dac.py, ALGORITHMS §11): sampler (its last step is clip(x̂0)), critic and actor losses against
direct computations written here (closed-form schedule, finite-difference critic gradients, valid-masking by
multiplication), compile-once update with exact targets and global-norm clipping, scan/vmap, configs, and a
bandit learning test.

Key splits reproduced here, as the agent documents them: update → (next rng, loss); total_loss → (critic,
actor); actor_loss → forward noising (t, ε); sample_actions → DDPM sampler (x_T, step keys)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import dac
from tests import bandit
from tests.agent_tools import global_norm, perturbed, to_float64, with_config, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, random_batch
from tests.test_diffusion import (check_update_compiles_once_moves_targets_exactly_and_clips_the_global_norm,
                                  closed_form_schedule, ddpm_loop, finite_difference_q_gradient)

O, A, H = 5, 2, 2
D, T, B = H * A, 10, 16


def small_config(**overrides):
    config = dac.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9, alpha=0.7))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return dac.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def batch(seed=0):
    return random_batch(jax.random.PRNGKey(seed), O, A, H, B)


@pytest.fixture(scope='module')
def agent():
    """A fresh agent whose target critic differs from the online one (so tests can tell them apart)."""
    agent = create()
    return with_params(agent, 'target_critic', perturbed(agent.network.params['target_critic'], jax.random.PRNGKey(9)))


# ---------------------------------------------------------------------------------------------- acting
def test_sample_actions_shapes_range_and_last_step_is_clipped_prediction(agent):
    key = jax.random.PRNGKey(3)
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    single = sample(agent, jnp.ones(O), key)
    observations = jax.random.normal(key, (7, O)) * 3
    actions = sample(agent, observations, key)
    assert single.shape == (D,) and actions.shape == (7, D)
    assert np.abs(single).max() <= 1.0 and np.abs(actions).max() <= 1.0
    actor = agent.network.select('actor')
    expected = ddpm_loop(actor, observations, key, D, T, clip_before=True, clip_after=False)
    np.testing.assert_allclose(actions, expected, rtol=1e-4, atol=1e-4)
    # The last step (t = 1, ᾱ_0 = 1) returns clip(x̂0) of x_1 exactly: no noise, no x_1 term.
    x1 = ddpm_loop(actor, observations, key, D, T, clip_before=True, clip_after=False, stop_at=1)
    alpha_bar_1 = closed_form_schedule(T)[2][1]
    predicted = np.asarray(actor(observations, jnp.asarray(x1, jnp.float32), jnp.ones((7, 1))), np.float64)
    x0 = (x1 - np.sqrt(1 - alpha_bar_1) * predicted) / np.sqrt(alpha_bar_1)
    assert np.abs(x0).max() > 1.0  # the clip matters here
    np.testing.assert_allclose(actions, np.clip(x0, -1, 1), rtol=1e-4, atol=1e-4)
    assert np.all(actions[np.abs(x0) > 1] == np.sign(x0[np.abs(x0) > 1]))  # exactly ±1 where clipped


# ---------------------------------------------------------------------------------------------- losses
def test_critic_loss_matches_direct_computation(agent):
    data, key = batch(), jax.random.PRNGKey(1)
    loss, info = jax.jit(type(agent).critic_loss)(agent, data, agent.network.trainable_params, key)
    next_observations = data['next_observation']
    next_actions = ddpm_loop(agent.network.select('actor'), next_observations, key, D, T, True, False)
    next_q = np.asarray(agent.network.apply('target_critic', next_observations, jnp.asarray(next_actions, jnp.float32)),
                        np.float64)
    v = next_q.mean(0) - 0.5 * np.sqrt(np.mean((next_q - next_q.mean(0)) ** 2, axis=0))
    y = np.asarray(data['chunk_return']) + 0.9**H * np.asarray(data['bootstrap_mask']) * v
    q = np.asarray(agent.network.apply('critic', data['observations'], data['actions'].reshape(B, D)), np.float64)
    w = np.asarray(data['valid'])
    assert w.min() == 0  # rows with w = 0 count in the denominator K·B
    np.testing.assert_allclose(loss, np.sum(w * (q - y) ** 2) / (2 * B), rtol=1e-4)
    np.testing.assert_allclose([info['critic/q_mean'], info['critic/q_max'], info['critic/q_min']],
                               [q.mean(), q.max(), q.min()], rtol=1e-5)


@pytest.mark.parametrize('use_target_critic_grad', [True, False])
def test_actor_loss_matches_direct_computation(agent, use_target_critic_grad):
    """alpha·L_bc + L_dac from the networks' outputs: x_t from the closed-form schedule, g by finite differences
    of the (target or online) critic's ensemble mean at x_t, rows with valid = 0 multiplied by 0."""
    agent = with_config(agent, use_target_critic_grad=use_target_critic_grad)
    key = jax.random.PRNGKey(4)
    with jax.enable_x64(True):
        agent64, data = to_float64(agent), to_float64(batch())
        loss, info = jax.jit(type(agent64).actor_loss)(agent64, data, agent64.network.trainable_params, key)
        step_key, noise_key = jax.random.split(key)
        steps = np.asarray(jax.random.randint(step_key, (B,), 1, T + 1))
        noises = np.asarray(jax.random.normal(noise_key, (B, D), jnp.float64))
        alpha_bars = closed_form_schedule(T)[2][steps][:, None]
        actions = np.asarray(data['actions']).reshape(B, D)
        noisy = np.sqrt(alpha_bars) * actions + np.sqrt(1 - alpha_bars) * noises
        critic = 'target_critic' if use_target_critic_grad else 'critic'
        q_fn = jax.jit(lambda a: agent64.network.apply(critic, data['observations'], a).mean(0))
        g = finite_difference_q_gradient(q_fn, noisy)
        predicted = np.asarray(agent64.network.apply('actor', data['observations'], noisy,
                                                     steps[:, None].astype(np.float64)))
    w = np.asarray(data['valid'])
    bc_rows = np.mean((noises - predicted) ** 2, axis=-1)
    dac_rows = np.sqrt(1 - alpha_bars[:, 0]) * np.mean(g * predicted, axis=-1)  # ⟨sqrt(1 − ᾱ_t)·g, ε̂⟩/D
    np.testing.assert_allclose(info['actor/bc_loss'], np.sum(w * bc_rows) / B, rtol=1e-6)
    np.testing.assert_allclose(info['actor/dac_loss'], np.sum(w * dac_rows) / B, rtol=1e-6)
    np.testing.assert_allclose(loss, 0.7 * np.sum(w * bc_rows) / B + np.sum(w * dac_rows) / B, rtol=1e-6)
    assert abs(float(info['actor/bc_loss']) - np.mean(bc_rows**w)) > 1e-3  # differs from power-masking
    # Only the actor is trained by the actor loss; the critic's action gradient is a constant.
    grads = jax.jit(jax.grad(lambda p: type(agent).actor_loss(agent, batch(), p, key)[0]))(
        agent.network.trainable_params)
    assert global_norm(grads['actor']) > 0 and global_norm(grads['critic']) == 0


# -------------------------------------------------------------------------------------- update, targets
def test_update_compiles_once_moves_targets_exactly_and_clips_the_global_norm(agent):
    check_update_compiles_once_moves_targets_exactly_and_clips_the_global_norm(agent, batch(), batch(1),
                                                                              'actor/dac_loss')


def test_fused_updates_match_sequential_updates(agent):
    """tests/batches.py: scan of updates = sequential updates (mean info), vmapped over two seeds."""
    batches = jax.tree.map(lambda *x: jnp.stack(x), *[batch(i) for i in range(3)])
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches)


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_rejects_invalid_configs():
    a = dac.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    for x, y in zip(jax.tree.leaves(a.network.params), jax.tree.leaves(create().network.params)):
        np.testing.assert_array_equal(x, y)
    assert a.config.ob_dims == O and a.config.action_dim == A
    for bad in [{'actor_loss_type': 'qsm'}, {'beta_schedule': 'cosine'}, {'diffusion_steps': 0}, {'time_dim': 63},
                {'alpha': -1.0}]:
        with pytest.raises(ValueError):
            create(**bad)


def test_get_config_defaults():
    config = dac.get_config()
    assert config.agent_name == 'dac' and config.actor_loss_type == 'dac'
    assert config.clip_sampler_before is True and config.clip_sampler_after is False
    assert config.alpha == 0.0 and config.use_target_critic_grad is True and 'inv_temp' not in config
    assert config.diffusion_steps == 10 and config.time_dim == 64 and config.beta_schedule == 'vp'
    assert config.clip_grad_norm == 1.0 and config.action_chunking is True and config.horizon_length == 5
    assert tuple(config.actor_hidden_dims) == (512,) * 4 and config.num_qs == 10 and config.tau == 0.005
    assert 'flow_steps' not in config and 'best_of_n' not in config


# -------------------------------------------------------------------------------------------- learning
def test_bandit_dac_prefers_high_reward_mode_over_behaviour_cloning():
    """BC (alpha = 1e4: the DAC term weighs 1e-4 of the DDPM behaviour-cloning loss) samples both modes about
    equally; DAC (alpha = 0.1) must put at least 80% of its samples in the high-reward mode and beat BC by at
    least 0.2 (observed at these seeds: BC ≈ 0.57, DAC ≈ 0.91)."""
    bc = bandit.high_mode_fraction(dac, {'alpha': 1e4}, num_updates=300)
    assert 0.35 <= bc <= 0.65
    fraction = bandit.high_mode_fraction(dac, {'alpha': 0.1}, num_updates=300)
    assert fraction >= 0.8 and fraction >= bc + 0.2, (fraction, bc)
