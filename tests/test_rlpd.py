"""RLPD (agents/rlpd.py, ALGORITHMS §13): losses against direct float64 computations written here, no entropy
term in the TD target, the BC log-likelihood term, the temperature moving toward its target, compile-once
update (also inside lax.scan), exact Polyak targets, sampling, configs, and a bandit learning test.

Key splits the direct computations reproduce (as documented by the agent): update → (next agent key, loss);
total_loss → (critic, actor); the critic key samples a' = tanh(μ(s') + σ(s')·ε); the actor key draws the
policy sample's ε."""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agents import rlpd
from tests import bandit
from tests.agent_tools import global_norm, np_pessimistic, perturbed, two_compiled_updates, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, random_batch

O, A, H = 5, 2, 2
D = H * A


def small_config(**overrides):
    config = rlpd.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return rlpd.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=16):
    batch = random_batch(key, O, A, H, batch_size)
    return {**batch, 'actions': batch['actions'].at[0, 0, 0].set(1.0)}


def with_alpha(agent, alpha):
    return with_params(agent, 'alpha', {'log_value': jnp.float32(np.log(alpha))})


def np_gaussian_tanh_log_prob(u, means, log_stds):
    """log N(u; μ, σ) − log(1 − tanh(u)²), summed over the last axis, in float64 (log cosh form)."""
    gaussian = -0.5 * ((u - means) / np.exp(log_stds)) ** 2 - log_stds - 0.5 * np.log(2 * np.pi)
    return np.sum(gaussian + 2 * (np.logaddexp(u, -u) - np.log(2)), axis=-1)


def np_policy(agent, observations):
    means, log_stds = agent.network.apply('actor', observations)
    return np.asarray(means, np.float64), np.asarray(log_stds, np.float64)


@pytest.fixture(scope='module')
def agent():
    agent = create()
    return with_params(agent, 'target_critic', perturbed(agent.network.params['target_critic'], jax.random.PRNGKey(9)))


# ------------------------------------------------------------------------------------------- losses
def test_critic_loss_matches_direct_computation_with_no_entropy_term(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    critic_loss = jax.jit(type(agent).critic_loss)
    loss, info = critic_loss(agent, batch, agent.network.trainable_params, key)

    next_observations = batch['next_observation']
    means, log_stds = np_policy(agent, next_observations)
    next_actions = np.tanh(means + np.exp(log_stds) * np.asarray(jax.random.normal(key, means.shape), np.float64))
    next_q = agent.network.apply('target_critic', next_observations, jnp.asarray(next_actions, jnp.float32))
    y = np.asarray(batch['chunk_return']) + 0.9**H * np.asarray(batch['bootstrap_mask']) * np_pessimistic(next_q, 0.5)
    q = np.asarray(agent.network.apply('critic', batch['observations'], batch['actions'].reshape(16, D)), np.float64)
    w = np.asarray(batch['valid'])
    assert w.min() == 0  # rows with w = 0 count in the denominator
    np.testing.assert_allclose(loss, np.sum(w * (q - y) ** 2) / (2 * 16), rtol=1e-5)
    np.testing.assert_allclose([info['critic/q_mean'], info['critic/q_max'], info['critic/q_min']],
                               [q.mean(), q.max(), q.min()], rtol=1e-5)
    # No entropy bonus in the backup: the temperature does not enter the critic loss at all (a SAC backup
    # y = r + γ^H·m·(V' − α·log π(a'|s')) would change by orders of magnitude at α = e^4).
    for alpha in (1e-3, np.exp(4.0)):
        np.testing.assert_array_equal(critic_loss(with_alpha(agent, alpha), batch, agent.network.trainable_params,
                                                  key)[0], loss)


def test_actor_loss_matches_direct_computation_and_routes_gradients(agent):
    agent = with_alpha(agent, 0.7)
    agent = agent.replace(config=ml_collections.FrozenConfigDict({**agent.config, 'bc_alpha': 0.3}))
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(2)
    params = agent.network.trainable_params
    loss_fn = jax.jit(lambda agent, p: agent.actor_loss(batch, p, key))
    loss, info = loss_fn(agent, params)

    observations = batch['observations']
    means, log_stds = np_policy(agent, observations)
    u = means + np.exp(log_stds) * np.asarray(jax.random.normal(key, means.shape), np.float64)
    log_probs = np_gaussian_tanh_log_prob(u, means, log_stds)
    q = np_pessimistic(agent.network.apply('critic', observations, jnp.asarray(np.tanh(u), jnp.float32)), 0.5)
    alpha, target = 0.7, -0.5 * D
    # BC log-likelihood written directly in terms of the clipped action: log(1 − tanh(u)²) = log(1 − y²).
    y = np.clip(np.asarray(batch['actions'], np.float64).reshape(16, D), -1 + 1e-5, 1 - 1e-5)
    u_data = np.arctanh(y)
    gaussian = -0.5 * ((u_data - means) / np.exp(log_stds)) ** 2 - log_stds - 0.5 * np.log(2 * np.pi)
    bc_log_probs = np.sum(gaussian - np.log(1 - y**2), axis=-1)
    w = np.asarray(batch['valid'])
    bc_loss = -0.3 * np.mean(w * bc_log_probs)
    expected = np.mean(log_probs * alpha - q) + alpha * (-log_probs.mean() - target) + bc_loss
    np.testing.assert_allclose(info['actor/bc_loss'], bc_loss, rtol=1e-4)
    np.testing.assert_allclose(info['actor/policy_loss'], np.mean(log_probs * alpha - q), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info['actor/entropy'], -log_probs.mean(), rtol=1e-4)
    np.testing.assert_allclose(info['actor/alpha'], alpha, rtol=1e-6)

    grads = jax.jit(jax.grad(lambda p: loss_fn(agent, p)[0]))(params)
    # The temperature gets only the temperature loss: d/dℓ [α·(−mean lp − H)] = α·(−mean lp − H).
    np.testing.assert_allclose(grads['alpha']['log_value'], alpha * (-log_probs.mean() - target), rtol=1e-4)
    assert global_norm(grads['actor']) > 0 and global_norm(grads['critic']) == 0  # critic: fixed call


def test_bc_term_gradient_pulls_policy_mean_toward_dataset_chunk(agent):
    """With only the BC term, one gradient step raises the log-likelihood of the dataset chunks."""
    agent = agent.replace(config=ml_collections.FrozenConfigDict({**agent.config, 'bc_alpha': 1.0}))
    batch = make_batch(jax.random.PRNGKey(0))
    bc_only = jax.jit(lambda p: agent.actor_loss(batch, p, jax.random.PRNGKey(3))[1]['actor/bc_loss'])
    params = agent.network.trainable_params
    grads = jax.grad(bc_only)(params)
    stepped = {**params, 'actor': jax.tree.map(lambda p, g: p - 1e-3 * g, params['actor'], grads['actor'])}
    assert float(bc_only(stepped)) < float(bc_only(params))


@pytest.mark.parametrize('target_entropy, direction', [(-100.0, -1), (100.0, +1)])
def test_temperature_moves_toward_its_target(agent, target_entropy, direction):
    """Entropy above the target (target −100) → α decreases; below it (target +100) → α increases."""
    agent = agent.replace(config=ml_collections.FrozenConfigDict({**agent.config, 'target_entropy': target_entropy}))
    update = jax.jit(lambda agent, batch: agent.update(batch))
    alphas = [float(agent.network.apply('alpha'))]
    for i in range(3):
        agent, info = update(agent, make_batch(jax.random.PRNGKey(i)))
        assert (info['actor/entropy'] - target_entropy) * direction < 0
        alphas.append(float(agent.network.apply('alpha')))
    assert all(direction * (b - a) > 0 for a, b in zip(alphas, alphas[1:])), alphas
    np.testing.assert_allclose(np.log(alphas[1]), direction * 3e-4, rtol=1e-3)  # first Adam step: ±lr exactly


# -------------------------------------------------------------------------------- update and targets
def test_update_compiles_once_is_finite_and_moves_targets_exactly(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    new_agent, info, newer_agent = two_compiled_updates(
        agent, batch, make_batch(jax.random.PRNGKey(1)),
        {'critic/critic_loss', 'critic/q_mean', 'critic/q_max', 'critic/q_min', 'actor/actor_loss', 'actor/policy_loss',
         'actor/bc_loss', 'actor/alpha', 'actor/alpha_loss', 'actor/entropy', 'grad/norm'})
    assert newer_agent.network.params['alpha']['log_value'].dtype == jnp.float32
    assert set(agent.network.params) == {'critic', 'target_critic', 'actor', 'alpha'}

    old, new = agent.network.params, new_agent.network.params
    for t_old, o_new, t_new in zip(jax.tree.leaves(old['target_critic']), jax.tree.leaves(new['critic']),
                                   jax.tree.leaves(new['target_critic'])):
        t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
        np.testing.assert_allclose(t_new, t_old + 0.005 * (o_new - t_old), rtol=2e-7, atol=1e-9)
    for name in ('critic', 'actor', 'alpha'):
        assert not np.allclose(jax.tree.leaves(new[name])[0], jax.tree.leaves(old[name])[0])
    _, loss_key = jax.random.split(agent.rng)  # grad/norm is the true global norm of the total-loss gradient
    grads = jax.jit(jax.grad(lambda p: agent.total_loss(batch, p, loss_key)[0]))(agent.network.trainable_params)
    np.testing.assert_allclose(info['grad/norm'], global_norm(grads), rtol=1e-4)


def test_fused_updates_match_sequential_updates(agent):
    """tests/batches.py: scan of updates = sequential updates (mean info), vmapped over two seeds."""
    batches = jax.tree.map(lambda *x: jnp.stack(x), *[make_batch(jax.random.PRNGKey(i)) for i in range(3)])
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches)


# ---------------------------------------------------------------------------------------------- acting
def test_sample_actions_shapes_range_and_distribution(agent):
    key = jax.random.PRNGKey(3)
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    single = sample(agent, jnp.ones(O), key)
    observations = jax.random.normal(key, (7, O)) * 3
    batch = sample(agent, observations, key)
    assert single.shape == (D,) and batch.shape == (7, D)
    assert np.abs(batch).max() <= 1.0 and np.abs(single).max() <= 1.0
    means, log_stds = np_policy(agent, observations)
    expected = np.tanh(means + np.exp(log_stds) * np.asarray(jax.random.normal(key, means.shape), np.float64))
    np.testing.assert_allclose(batch, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(sample(agent, observations, jax.random.PRNGKey(4)), batch)  # stochastic


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_rejects_invalid_configs():
    a = rlpd.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    for x, y in zip(jax.tree.leaves(a.network.params), jax.tree.leaves(create().network.params)):
        np.testing.assert_array_equal(x, y)
    assert a.config.ob_dims == O and a.config.action_dim == A
    np.testing.assert_allclose(create(init_temp=0.1).network.apply('alpha'), 0.1, rtol=1e-6)
    with pytest.raises(ValueError):
        create(bc_alpha=-1.0)
    with pytest.raises(ValueError):
        create(init_temp=0.0)


def test_get_config_defaults():
    config = rlpd.get_config()
    assert config.agent_name == 'rlpd' and config.action_chunking is True and config.num_qs == 10
    assert config.bc_alpha == 0.0 and config.init_temp == 1.0 and config.target_entropy is None
    assert config.target_entropy_multiplier == 0.5 and config.tau == 0.005 and config.rho == 0.5
    assert 'flow_steps' not in config and 'best_of_n' not in config


# ------------------------------------------------------------------------------------------- learning
def test_bandit_prefers_high_reward_mode_over_behaviour_cloning():
    """Behaviour cloning samples each mode half of the time (the data is exactly half per mode); RLPD must put
    at least 90% of its samples in the high-reward mode, a margin of 0.4 over BC, with and without the BC term.

    The temperature starts at 0.05: with rewards in [0, 1] the default α = 1 keeps the soft-optimal policy
    ∝ exp(Q/α) close to uniform, and α falls only by about lr per update, too slowly for 300 updates."""
    for overrides in ({'init_temp': 0.05}, {'init_temp': 0.05, 'bc_alpha': 0.1}):
        fraction = bandit.high_mode_fraction(rlpd, overrides, num_updates=300)
        assert fraction >= 0.9, (overrides, fraction)
