"""DSRL (agents/dsrl.py, ALGORITHMS §7): the decoder, the TD + distillation critic loss and the BC + noise-policy
actor loss against direct computations written here, the noise critic matching the action critic after
distillation on a fixed toy problem, compile-once update (also inside lax.scan), exact Polyak targets,
sampling (with best-of-n), configs, and a bandit learning test.

Key splits the direct computations reproduce (as documented by the agent): update → (next agent key, loss);
total_loss → (critic, actor); critic_loss → (TD-target sampling, distillation noise); actor_loss → (BC flow
loss, noise-policy sample); bc_flow_loss → (x_0, t); sampling draws the noise policy's ε from its key."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents import dsrl
from tests import bandit
from tests.agent_tools import euler_loop, global_norm, np_pessimistic, perturbed, with_config, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, random_batch

O, A, H = 5, 2, 2
D = H * A
STEPS = 4  # flow_steps in these tests (the unrolled loops below use it)


def small_config(**overrides):
    config = dsrl.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9, flow_steps=STEPS, noise_scale=0.7))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return dsrl.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=16):
    return random_batch(key, O, A, H, batch_size)


def np_noise_policy_sample(agent, observations, key):
    """(u = tanh(μ + σ·ε), log π(u)) in float64, ε drawn from `key` as the agent does."""
    means, log_stds = (np.asarray(x, np.float64) for x in agent.network.apply('noise_policy', observations))
    pre_tanh = means + np.exp(log_stds) * np.asarray(jax.random.normal(key, means.shape), np.float64)
    gaussian = -0.5 * ((pre_tanh - means) / np.exp(log_stds)) ** 2 - log_stds - 0.5 * np.log(2 * np.pi)
    log_probs = np.sum(gaussian + 2 * (np.logaddexp(pre_tanh, -pre_tanh) - np.log(2)), axis=-1)
    return np.tanh(pre_tanh), log_probs


TRACES = {'update': 0}


@jax.jit
def jit_update(agent, batch):
    """`agent.update`, jitted once for the whole module (counts its traces)."""
    TRACES['update'] += 1
    return agent.update(batch)


@pytest.fixture(scope='module')
def agent():
    """Every network perturbed away from its init (targets differ from their online networks)."""
    agent = create()
    names = ('critic', 'target_critic', 'noise_critic', 'behavior_flow', 'target_behavior_flow', 'noise_policy')
    for i, name in enumerate(names):
        agent = with_params(agent, name, perturbed(agent.network.params[name], jax.random.PRNGKey(10 + i)))
    return agent


# ------------------------------------------------------------------------------------------ decoder
@pytest.mark.parametrize('use_target_latent, name', [(True, 'target_behavior_flow'), (False, 'behavior_flow')])
def test_decoder_is_clipped_euler_ode_of_the_chosen_flow(agent, use_target_latent, name):
    agent = with_config(agent, use_target_latent=use_target_latent)
    observations = jax.random.normal(jax.random.PRNGKey(0), (8, O))
    noises = 2 * jax.random.normal(jax.random.PRNGKey(1), (8, D))
    decoded = np.asarray(jax.jit(type(agent).decode)(agent, observations, noises))
    np.testing.assert_allclose(decoded, euler_loop(agent.network.select(name), observations, noises, STEPS),
                               rtol=1e-5, atol=1e-6)
    other = 'behavior_flow' if use_target_latent else 'target_behavior_flow'
    assert np.abs(decoded - euler_loop(agent.network.select(other), observations, noises, STEPS)).max() > 1e-2


# ------------------------------------------------------------------------------------------- losses
def test_critic_loss_is_td_plus_memberwise_distillation(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    params = agent.network.trainable_params
    loss, info = jax.jit(type(agent).critic_loss)(agent, batch, params, key)
    target_key, distill_key = jax.random.split(key)

    next_observations = batch['next_observation']
    latents, _ = np_noise_policy_sample(agent, next_observations, target_key)
    next_actions = euler_loop(agent.network.select('target_behavior_flow'), next_observations,
                              jnp.asarray(0.7 * latents, jnp.float32), STEPS)
    next_q = agent.network.apply('target_critic', next_observations, next_actions)
    y = np.asarray(batch['chunk_return']) + 0.9**H * np.asarray(batch['bootstrap_mask']) * np_pessimistic(next_q, 0.5)
    observations = batch['observations']
    q = np.asarray(agent.network.apply('critic', observations, batch['actions'].reshape(16, D)), np.float64)
    w = np.asarray(batch['valid'])
    td_loss = np.sum(w * (q - y) ** 2) / (2 * 16)

    noises = jax.random.normal(distill_key, (16, D))  # plain N(0, I): not scaled by noise_scale, not clipped
    decoded = euler_loop(agent.network.select('target_behavior_flow'), observations, noises, STEPS)
    action_q = np.asarray(agent.network.apply('critic', observations, decoded), np.float64)  # (K, B)
    noise_q = np.asarray(agent.network.apply('noise_critic', observations, noises), np.float64)
    distill_loss = np.mean((noise_q - action_q) ** 2)  # member k against member k, no mask
    np.testing.assert_allclose(info['critic/td_loss'], td_loss, rtol=1e-5)
    np.testing.assert_allclose(info['critic/distill_loss'], distill_loss, rtol=1e-5)
    np.testing.assert_allclose(loss, td_loss + distill_loss, rtol=1e-5)
    np.testing.assert_allclose([info['critic/q_mean'], info['critic/q_max'], info['critic/q_min']],
                               [q.mean(), q.max(), q.min()], rtol=1e-5)
    # Member-wise, not against the ensemble mean: the two would differ on this problem.
    assert abs(distill_loss - np.mean((noise_q - action_q.mean(0)) ** 2)) > 1e-3 * distill_loss

    # The distillation trains only the noise critic (the action critic is a fixed call there).
    grads = jax.jit(jax.grad(lambda p: agent.distill_loss(observations, p, distill_key)[0]))(params)
    assert global_norm(grads['noise_critic']) > 0
    assert all(global_norm(grads[name]) == 0 for name in grads if name != 'noise_critic')


def test_actor_loss_matches_direct_computation_and_routes_gradients(agent):
    agent = with_params(agent, 'alpha', {'log_value': jnp.float32(np.log(0.7))})
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(2)
    params = agent.network.trainable_params
    loss_fn = jax.jit(lambda agent, p: agent.actor_loss(batch, p, key))
    loss, info = loss_fn(agent, params)
    bc_key, policy_key = jax.random.split(key)
    observations, actions = batch['observations'], np.asarray(batch['actions']).reshape(16, D)

    noise_key, time_key = jax.random.split(bc_key)
    x0 = np.asarray(jax.random.normal(noise_key, (16, D)), np.float64)
    t = np.asarray(jax.random.uniform(time_key, (16, 1)), np.float64)
    x_t = (1 - t) * x0 + t * actions
    velocity = np.asarray(agent.network.apply('behavior_flow', observations, jnp.asarray(x_t, jnp.float32),
                                              jnp.asarray(t, jnp.float32)), np.float64)
    bc_loss = np.mean(np.asarray(batch['valid']) * np.mean((velocity - (actions - x0)) ** 2, axis=-1))

    latents, log_probs = np_noise_policy_sample(agent, observations, policy_key)
    q = np.asarray(agent.network.apply('noise_critic', observations, jnp.asarray(0.7 * latents, jnp.float32)),
                   np.float64).mean(0)
    alpha, target = 0.7, -0.5 * D
    policy_loss = np.mean(log_probs * alpha - q)
    alpha_loss = alpha * (-log_probs.mean() - target)
    np.testing.assert_allclose(info['actor/bc_flow_loss'], bc_loss, rtol=1e-4)
    np.testing.assert_allclose(info['actor/policy_loss'], policy_loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info['actor/alpha_loss'], alpha_loss, rtol=1e-4)
    np.testing.assert_allclose(loss, bc_loss + policy_loss + alpha_loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info['actor/entropy'], -log_probs.mean(), rtol=1e-4)

    grads = jax.jit(jax.grad(lambda p: loss_fn(agent, p)[0]))(params)
    np.testing.assert_allclose(grads['alpha']['log_value'], alpha_loss, rtol=1e-4)  # d/dℓ α·c = α·c
    assert global_norm(grads['behavior_flow']) > 0 and global_norm(grads['noise_policy']) > 0
    assert global_norm(grads['critic']) == 0 and global_norm(grads['noise_critic']) == 0  # fixed calls

    # The noise policy's gradient: through z = noise_scale·u into the (fixed) noise critic, written out here.
    def reference(policy_params):
        means, log_stds = agent.network.apply('noise_policy', observations, params=policy_params)
        pre_tanh = means + jnp.exp(log_stds) * jax.random.normal(policy_key, means.shape)
        lp = jnp.sum(-0.5 * ((pre_tanh - means) / jnp.exp(log_stds)) ** 2 - log_stds - 0.5 * np.log(2 * np.pi)
                     + 2 * (jnp.logaddexp(pre_tanh, -pre_tanh) - np.log(2)), axis=-1)
        qz = agent.network.apply('noise_critic', observations, 0.7 * jnp.tanh(pre_tanh)).mean(0)
        return jnp.mean(lp * alpha - qz)

    expected = jax.jit(jax.grad(reference))(params['noise_policy'])
    for g, e in zip(jax.tree.leaves(grads['noise_policy']), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=2e-3, atol=1e-5)


def test_noise_critic_matches_action_critic_after_distillation():
    """Fixed toy problem: a fixed (perturbed) action critic and target flow, 32 fixed observations. Training only
    the distillation (Adam with cosine decay from 3e-3, 2000 steps, fresh N(0, I) noise for 4 copies of each
    observation per step) must bring every noise-critic member to R² ≥ 0.9 against Q_k(s, dec(s, z)) on
    held-out noise, i.e. an RMS error ≤ 0.32 standard deviations of the target (at init its R² is below 0;
    after training it is about 0.96 on this problem)."""
    agent = create(value_hidden_dims=(64, 64))
    for i, name in enumerate(('critic', 'target_behavior_flow')):
        agent = with_params(agent, name, perturbed(agent.network.params[name], jax.random.PRNGKey(i)))
    observations = jax.random.normal(jax.random.PRNGKey(5), (32, O))
    num_steps = 2000
    optimizer = optax.adam(optax.cosine_decay_schedule(3e-3, num_steps))

    @jax.jit
    def distill(noise_critic_params, key):
        repeated = jnp.repeat(observations, 4, axis=0)

        def step(carry, key):
            params, opt_state = carry
            grads = jax.grad(lambda p: agent.distill_loss(repeated, {'noise_critic': p}, key)[0])(params)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        carry = (noise_critic_params, optimizer.init(noise_critic_params))
        return jax.lax.scan(step, carry, jax.random.split(key, num_steps))[0][0]

    def r_squared(noise_critic_params):  # per member, on 64 held-out noises per observation
        s = jnp.repeat(observations, 64, axis=0)
        z = jax.random.normal(jax.random.PRNGKey(99), (s.shape[0], D))
        decoded = euler_loop(agent.network.select('target_behavior_flow'), s, z, STEPS)
        target = np.asarray(agent.network.apply('critic', s, decoded))
        prediction = np.asarray(agent.network.apply('noise_critic', s, z, params=noise_critic_params))
        return 1 - np.mean((prediction - target) ** 2, axis=1) / np.var(target, axis=1)

    before = r_squared(agent.network.params['noise_critic'])
    after = r_squared(distill(agent.network.params['noise_critic'], jax.random.PRNGKey(7)))
    assert np.all(before < 0) and np.all(after >= 0.9), (before, after)


# -------------------------------------------------------------------------------- update and targets
def test_update_compiles_once_is_finite_and_moves_targets_exactly(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    new_agent, info = jit_update(agent, batch)
    traces = TRACES['update']
    newer_agent, _ = jit_update(new_agent, make_batch(jax.random.PRNGKey(1)))
    assert TRACES['update'] == traces and jit_update._cache_size() == 1  # no retracing on the second call
    assert {'critic/critic_loss', 'critic/td_loss', 'critic/distill_loss', 'critic/q_mean', 'critic/q_max',
            'critic/q_min', 'actor/actor_loss', 'actor/bc_flow_loss', 'actor/policy_loss', 'actor/alpha',
            'actor/alpha_loss', 'actor/entropy', 'grad/norm'} <= set(info)
    assert all(np.isfinite(np.asarray(value)).all() for value in info.values())
    assert int(newer_agent.network.step) == 2 and newer_agent.network.step.dtype == jnp.int32
    assert newer_agent.network.params['alpha']['log_value'].dtype == jnp.float32
    old, new = agent.network.params, new_agent.network.params
    assert set(old) == {'critic', 'target_critic', 'noise_critic', 'behavior_flow', 'target_behavior_flow',
                        'noise_policy', 'alpha'}
    for target, online in (('target_critic', 'critic'), ('target_behavior_flow', 'behavior_flow')):
        for t_old, o_new, t_new in zip(jax.tree.leaves(old[target]), jax.tree.leaves(new[online]),
                                       jax.tree.leaves(new[target])):
            t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
            np.testing.assert_allclose(t_new, t_old + 0.005 * (o_new - t_old), rtol=2e-7, atol=1e-9)
    for name in ('critic', 'noise_critic', 'behavior_flow', 'noise_policy', 'alpha'):
        assert not np.allclose(jax.tree.leaves(new[name])[0], jax.tree.leaves(old[name])[0])
    _, loss_key = jax.random.split(agent.rng)
    grads = jax.jit(jax.grad(lambda p: agent.total_loss(batch, p, loss_key)[0]))(agent.network.trainable_params)
    np.testing.assert_allclose(info['grad/norm'], global_norm(grads), rtol=1e-4)


def test_fused_updates_match_sequential_updates(agent):
    """tests/batches.py: scan of updates = sequential updates (mean info), vmapped over two seeds."""
    batches = jax.tree.map(lambda *x: jnp.stack(x), *[make_batch(jax.random.PRNGKey(i)) for i in range(3)])
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches, jit_update)


# ---------------------------------------------------------------------------------------------- acting
@pytest.mark.parametrize('best_of_n', [1, 4])
def test_sample_actions_shapes_range_and_decoding(agent, best_of_n):
    agent = with_config(agent, best_of_n=best_of_n)
    key = jax.random.PRNGKey(3)
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    single = sample(agent, jnp.ones(O), key)
    observations = jax.random.normal(key, (7, O)) * 3
    batch = np.asarray(sample(agent, observations, key))
    assert single.shape == (D,) and batch.shape == (7, D)
    assert np.abs(batch).max() <= 1.0 and np.abs(single).max() <= 1.0

    def decoded(key):
        latents, _ = np_noise_policy_sample(agent, observations, key)
        return euler_loop(agent.network.select('target_behavior_flow'), observations,
                          jnp.asarray(0.7 * latents, jnp.float32), STEPS)

    if best_of_n == 1:
        np.testing.assert_allclose(batch, decoded(key), rtol=1e-4, atol=1e-5)
    else:  # the online critic's favourite of the 4 candidates, per observation
        candidates = np.stack([decoded(k) for k in jax.random.split(key, 4)])
        scores = np.stack([np.asarray(agent.network.apply('critic', observations, c)).mean(0) for c in candidates])
        np.testing.assert_allclose(batch, candidates[np.argmax(scores, 0), np.arange(7)], rtol=1e-4, atol=1e-5)
        assert len({int(i) for i in np.argmax(scores, 0)}) > 1  # the choice differs between observations


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_rejects_invalid_configs():
    a = dsrl.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    for x, y in zip(jax.tree.leaves(a.network.params), jax.tree.leaves(create().network.params)):
        np.testing.assert_array_equal(x, y)
    assert a.config.ob_dims == O and a.config.action_dim == A
    np.testing.assert_allclose(a.network.apply('alpha'), 1.0)
    with pytest.raises(ValueError):
        create(flow_steps=0)
    with pytest.raises(ValueError):
        create(noise_scale=0.0)


def test_get_config_defaults():
    config = dsrl.get_config()
    assert config.agent_name == 'dsrl' and config.action_chunking is True and config.num_qs == 10
    assert (config.noise_scale, config.target_entropy, config.target_entropy_multiplier, config.use_target_latent,
            config.flow_steps, config.best_of_n) == (1.0, None, 0.5, True, 10, 1)


# ------------------------------------------------------------------------------------------- learning
def test_bandit_prefers_high_reward_mode_over_behaviour_cloning():
    """The trained BC flow decoding plain N(0, I) noise is behaviour cloning: it must sample both modes
    (35-65%). Decoding the noise policy's latents instead must put at least 90% of the samples in the
    high-reward mode and beat BC by at least 0.3.

    The temperature starts at 0.05 (set in the parameters; DSRL has no init_temp key): with rewards in [0, 1]
    the default α = 1 keeps the noise policy close to uniform, and α falls only by about lr per update."""
    config = bandit.make_config(dsrl)
    data = bandit.make_dataset()
    agent = dsrl.Agent.create(0, data['observations'][0], data['actions'][0, 0], config)
    agent = with_params(agent, 'alpha', {'log_value': jnp.float32(np.log(0.05))})

    @jax.jit
    def train(agent, key):
        def body(agent, key):
            return agent.update(bandit.sample_batch(data, key, config.batch_size))[0], None

        return jax.lax.scan(body, agent, jax.random.split(key, 400))[0]

    agent = train(agent, jax.random.PRNGKey(1))
    observations = jnp.full((512, bandit.OBS_DIM), 0.5, jnp.float32)
    key = jax.random.PRNGKey(2)
    dsrl_actions = jax.jit(agent.sample_actions)(observations, key)
    bc_actions = jax.jit(agent.decode)(observations, jax.random.normal(key, dsrl_actions.shape))
    dsrl_fraction = float(jnp.mean(jnp.mean(dsrl_actions, axis=-1) > 0))
    bc_fraction = float(jnp.mean(jnp.mean(bc_actions, axis=-1) > 0))
    assert 0.35 <= bc_fraction <= 0.65 and dsrl_fraction >= 0.9 and dsrl_fraction >= bc_fraction + 0.3, (
        bc_fraction, dsrl_fraction)
