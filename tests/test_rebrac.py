"""ReBRAC (agents/rebrac.py, ALGORITHMS §12): the actor network's init, target-policy smoothing and the critic
loss, the actor loss with its stop-gradient Q normalisation against direct computations written here, the
update schedule (targets every actor_freq steps, exactly tau·(online − target)), the delayed-actor variant
(actor parameters and Adam moments frozen on skipped steps), compile-once update (also inside lax.scan),
sampling, configs, and a bandit learning test.

Key splits the direct computations reproduce: update → (next agent key, loss key); the loss key draws the
smoothing noise ε of the critic's TD target (the actor loss is deterministic)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import rebrac
from tests import bandit
from tests.agent_tools import global_norm, np_pessimistic, perturbed, two_compiled_updates, with_config, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, random_batch
from utils.networks import DeterministicTanhActor

O, A, H = 5, 2, 2
D = H * A


def small_config(**overrides):
    config = rebrac.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return rebrac.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=16):
    return random_batch(key, O, A, H, batch_size)


@pytest.fixture(scope='module')
def agent():
    """Targets different from their online networks, and an actor far from the (near-zero) init, so that every
    test below can tell the networks apart."""
    agent = create()
    for i, name in enumerate(('actor', 'target_actor', 'critic', 'target_critic')):
        agent = with_params(agent, name, perturbed(agent.network.params[name], jax.random.PRNGKey(10 + i)))
    return agent


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


# ------------------------------------------------------------------------------------------ network
def test_actor_network_is_tanh_of_mlp_with_small_variance_scaling_head():
    module = DeterministicTanhActor((64, 48), 6, final_fc_init_scale=0.01)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 7)))['params']
    kernel, bias = np.asarray(params['mean']['kernel']), np.asarray(params['mean']['bias'])
    limit = np.sqrt(3 * 0.01 / ((48 + 6) / 2))  # variance scaling, fan average, uniform
    assert kernel.shape == (48, 6) and np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    np.testing.assert_allclose(kernel.var(), limit**2 / 3, rtol=0.3)
    assert np.all(bias == 0)
    # Forward pass written out: Dense → GELU (tanh approximation) per trunk layer, then tanh(mean head).
    inputs = jax.random.normal(jax.random.PRNGKey(1), (3, 7))
    x = np.asarray(inputs, np.float64)
    for layer in ('Dense_0', 'Dense_1'):
        dense = params['MLP_0'][layer]
        x = np_gelu(x @ np.asarray(dense['kernel'], np.float64) + np.asarray(dense['bias'], np.float64))
    expected = np.tanh(x @ kernel + bias)
    np.testing.assert_allclose(module.apply({'params': params}, inputs), expected, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize('actor_noise', [0.2, 5.0])
def test_critic_loss_uses_smoothed_target_actor(agent, actor_noise):
    agent = with_config(agent, actor_noise=actor_noise)
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    loss, info = jax.jit(type(agent).critic_loss)(agent, batch, agent.network.trainable_params, key)

    next_observations = batch['next_observation']
    target_actions = np.asarray(agent.network.apply('target_actor', next_observations), np.float64)
    noise = np.clip(actor_noise * np.asarray(jax.random.normal(key, target_actions.shape), np.float64), -0.5, 0.5)
    next_actions = np.clip(target_actions + noise, -1, 1)
    next_q = agent.network.apply('target_critic', next_observations, jnp.asarray(next_actions, jnp.float32))
    y = np.asarray(batch['chunk_return']) + 0.9**H * np.asarray(batch['bootstrap_mask']) * np_pessimistic(next_q, 0.5)
    q = np.asarray(agent.network.apply('critic', batch['observations'], batch['actions'].reshape(16, D)), np.float64)
    w = np.asarray(batch['valid'])
    np.testing.assert_allclose(loss, np.sum(w * (q - y) ** 2) / (2 * 16), rtol=1e-5)
    np.testing.assert_allclose([info['critic/q_mean'], info['critic/q_max'], info['critic/q_min']],
                               [q.mean(), q.max(), q.min()], rtol=1e-5)
    # The smoothing noise is bounded by actor_noise_clip (and active at actor_noise = 5), and the TD target
    # bootstraps with the target actor, not the online one.
    smoothed = np.asarray(agent.noisy_actions('target_actor', next_observations, key))
    np.testing.assert_allclose(smoothed, next_actions, rtol=1e-5, atol=1e-6)
    inside = np.abs(target_actions + noise) < 1
    assert np.all(np.abs(smoothed - target_actions)[inside] <= 0.5 + 1e-6)
    assert (np.mean(np.abs(noise) == 0.5) > 0.5) == (actor_noise == 5.0)
    online = np.asarray(agent.noisy_actions('actor', next_observations, key))
    assert np.abs(online - smoothed).max() > 0.05


def test_actor_loss_normalises_pessimistic_q_with_stop_gradient(agent):
    agent = with_config(agent, alpha_actor=0.7)
    batch = make_batch(jax.random.PRNGKey(0))
    params = agent.network.trainable_params
    loss_fn = jax.jit(lambda agent, p: agent.actor_loss(batch, p))
    loss, info = loss_fn(agent, params)

    observations, actions = batch['observations'], np.asarray(batch['actions'], np.float64).reshape(16, D)
    policy_actions = np.asarray(agent.network.apply('actor', observations), np.float64)
    q = np_pessimistic(agent.network.apply('critic', observations, jnp.asarray(policy_actions, jnp.float32)), 0.5)
    scale = 1 / np.mean(np.abs(q))
    w = np.asarray(batch['valid'])
    bc = np.mean(w * np.sum((policy_actions - actions) ** 2, axis=-1))
    np.testing.assert_allclose(info['actor/q_scale'], scale, rtol=1e-4)
    np.testing.assert_allclose(info['actor/q_loss'], -np.mean(scale * q), rtol=1e-4)
    np.testing.assert_allclose(info['actor/bc_loss'], bc, rtol=1e-5)
    np.testing.assert_allclose(loss, -np.mean(scale * q) + 0.7 * bc, rtol=1e-4)

    # Gradient: λ_q is a constant. Reference loss written here with λ_q frozen at its numerical value.
    def reference(actor_params, normalise_with_gradient=False):
        a = agent.network.apply('actor', observations, params=actor_params)
        qs = agent.network.apply('critic', observations, a)
        pessimistic = qs.mean(0) - 0.5 * jnp.sqrt(jnp.mean((qs - qs.mean(0)) ** 2, axis=0))
        lam = 1 / jnp.mean(jnp.abs(pessimistic)) if normalise_with_gradient else scale
        return -jnp.mean(lam * pessimistic) + 0.7 * jnp.mean(batch['valid'] * jnp.sum((a - batch['actions']
                                                                                            .reshape(16, D)) ** 2, -1))

    grads = jax.jit(jax.grad(lambda p: loss_fn(agent, p)[0]))(params)
    expected = jax.jit(jax.grad(reference))(params['actor'])
    for g, e in zip(jax.tree.leaves(grads['actor']), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    without_stop_gradient = jax.jit(jax.grad(lambda p: reference(p, True)))(params['actor'])
    difference = global_norm(jax.tree.map(lambda a, b: a - b, grads['actor'], without_stop_gradient))
    assert difference > 1e-2 * global_norm(grads['actor'])  # the stop-gradient matters on this problem
    assert global_norm(grads['critic']) == 0  # the actor loss calls the critic with fixed parameters


# ------------------------------------------------------------------------------------------ schedule
def assert_moved_exactly(old_target, new_online, new_target, tau):
    for t_old, o_new, t_new in zip(jax.tree.leaves(old_target), jax.tree.leaves(new_online),
                                   jax.tree.leaves(new_target)):
        t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
        np.testing.assert_allclose(t_new, t_old + tau * (o_new - t_old), rtol=2e-7, atol=1e-9)


def changed(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('actor_freq', [2, 3])
def test_actor_and_critic_update_every_step_targets_only_every_actor_freq_steps(agent, actor_freq):
    agent = with_config(agent, actor_freq=actor_freq)
    update = jax.jit(lambda agent, batch: agent.update(batch))
    for step in range(1, 7):
        new, info = update(agent, make_batch(jax.random.PRNGKey(step)))
        old_params, new_params = agent.network.params, new.network.params
        assert changed(old_params['critic'], new_params['critic']) and changed(old_params['actor'], new_params['actor'])
        for target, online in (('target_critic', 'critic'), ('target_actor', 'actor')):
            if step % actor_freq == 0:
                assert_moved_exactly(old_params[target], new_params[online], new_params[target], 0.005)
            else:
                for a, b in zip(jax.tree.leaves(old_params[target]), jax.tree.leaves(new_params[target])):
                    np.testing.assert_array_equal(a, b)  # exactly unchanged
        assert float(info['actor/target_step']) == float(step % actor_freq == 0)
        agent = new


def test_delayed_actor_freezes_actor_parameters_and_adam_moments_on_skipped_steps(agent):
    agent = with_config(agent, delayed_actor=True)
    update = jax.jit(lambda agent, batch: agent.update(batch))

    def moments(agent):  # optax.adam state: (ScaleByAdamState(count, mu, nu), ...), moments keyed by network
        adam = agent.network.opt_state[0]
        return adam.mu, adam.nu

    first, _ = update(agent, make_batch(jax.random.PRNGKey(1)))  # step 1: skipped
    for old, new in zip(jax.tree.leaves((agent.network.params['actor'], *[m['actor'] for m in moments(agent)])),
                        jax.tree.leaves((first.network.params['actor'], *[m['actor'] for m in moments(first)]))):
        np.testing.assert_array_equal(old, new)
    assert changed(agent.network.params['critic'], first.network.params['critic'])
    assert changed(moments(agent)[0]['critic'], moments(first)[0]['critic'])

    batch = make_batch(jax.random.PRNGKey(2))
    second, _ = update(first, batch)  # step 2: the actor's first real Adam step
    assert changed(first.network.params['actor'], second.network.params['actor'])
    # Its first moment starts from zero: mu = (1 − β1)·g, with g the actor gradient of this step's loss.
    _, loss_key = jax.random.split(first.rng)
    grads = jax.jit(jax.grad(lambda p: first.total_loss(batch, p, loss_key)[0]))(first.network.trainable_params)
    for mu, g in zip(jax.tree.leaves(moments(second)[0]['actor']), jax.tree.leaves(grads['actor'])):
        np.testing.assert_allclose(mu, 0.1 * np.asarray(g), rtol=1e-4, atol=1e-9)
    for nu, g in zip(jax.tree.leaves(moments(second)[1]['actor']), jax.tree.leaves(grads['actor'])):
        np.testing.assert_allclose(nu, 0.001 * np.asarray(g) ** 2, rtol=1e-3, atol=1e-12)


# -------------------------------------------------------------------------------- update, compile once
def test_update_compiles_once_is_finite(agent):
    new_agent, info, newer_agent = two_compiled_updates(
        agent, make_batch(jax.random.PRNGKey(0)), make_batch(jax.random.PRNGKey(1)),
        {'critic/critic_loss', 'critic/q_mean', 'critic/q_max', 'critic/q_min', 'actor/actor_loss', 'actor/q_loss',
         'actor/bc_loss', 'actor/q_scale', 'grad/norm'})
    assert set(agent.network.params) == {'critic', 'target_critic', 'actor', 'target_actor'}
    batch = make_batch(jax.random.PRNGKey(0))
    _, loss_key = jax.random.split(agent.rng)
    grads = jax.jit(jax.grad(lambda p: agent.total_loss(batch, p, loss_key)[0]))(agent.network.trainable_params)
    np.testing.assert_allclose(info['grad/norm'], global_norm(grads), rtol=1e-4)


def test_fused_updates_match_sequential_updates(agent):
    """tests/batches.py: scan of updates = sequential updates (mean info), vmapped over two seeds."""
    batches = jax.tree.map(lambda *x: jnp.stack(x), *[make_batch(jax.random.PRNGKey(i)) for i in range(3)])
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches)


# ---------------------------------------------------------------------------------------------- acting
def test_sample_actions_shapes_range_and_noise(agent):
    key = jax.random.PRNGKey(3)
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    single = sample(agent, jnp.ones(O), key)
    observations = jax.random.normal(key, (7, O)) * 3
    batch = sample(agent, observations, key)
    assert single.shape == (D,) and batch.shape == (7, D)
    assert np.abs(batch).max() <= 1.0 and np.abs(single).max() <= 1.0
    mean_actions = np.asarray(agent.network.apply('actor', observations), np.float64)
    noise = np.clip(0.2 * np.asarray(jax.random.normal(key, mean_actions.shape), np.float64), -0.5, 0.5)
    np.testing.assert_allclose(batch, np.clip(mean_actions + noise, -1, 1), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(batch) - mean_actions).max() > 0.01  # noisy at evaluation too (KEEP)


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_rejects_invalid_configs():
    a = rebrac.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    for x, y in zip(jax.tree.leaves(a.network.params), jax.tree.leaves(create().network.params)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a.network.params['actor']), jax.tree.leaves(a.network.params['target_actor'])):
        np.testing.assert_array_equal(x, y)  # targets start as exact copies
    assert a.config.ob_dims == O and a.config.action_dim == A
    with pytest.raises(ValueError):
        create(actor_freq=0)
    with pytest.raises(ValueError):
        create(actor_noise=-0.1)


def test_get_config_defaults():
    config = rebrac.get_config()
    assert config.agent_name == 'rebrac' and config.action_chunking is True and config.num_qs == 10
    assert (config.actor_noise, config.alpha_actor, config.actor_freq, config.actor_fc_scale,
            config.actor_noise_clip, config.delayed_actor) == (0.2, 0.0, 2, 0.01, 0.5, False)
    assert 'flow_steps' not in config and 'best_of_n' not in config


# ------------------------------------------------------------------------------------------- learning
def test_bandit_prefers_high_reward_mode_over_behaviour_cloning():
    """Behaviour cloning samples each mode half of the time (the data is exactly half per mode); ReBRAC, with
    and without its BC penalty and with the delayed actor, must put at least 90% of its (noisy) samples in
    the high-reward mode, a margin of 0.4 over BC."""
    for overrides in ({}, {'alpha_actor': 0.1}, {'delayed_actor': True}):
        fraction = bandit.high_mode_fraction(rebrac, overrides, num_updates=300)
        assert fraction >= 0.9, (overrides, fraction)
