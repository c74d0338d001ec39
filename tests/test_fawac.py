"""FAWAC (agents/fawac.py, ALGORITHMS §9): advantage weights, TD, value and weighted flow-matching losses against
direct computations written here, gradient routing, compile-once update and targets, sampling, config, and a
bandit learning test.

Direct computations reproduce the agent's random draws by splitting keys the way the agent documents:
total_loss → (critic, actor); the actor key goes to the BC flow loss, which splits it into (x_0, t);
sample_actions draws its noise z from its key."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import fawac
from tests import bandit
from tests.agent_tools import euler_loop, global_norm, perturbed, two_compiled_updates, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, random_batch

O, A, H = 5, 2, 2
D = H * A
B = 16


def small_config(**overrides):
    config = fawac.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return fawac.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=B):
    return random_batch(key, O, A, H, batch_size)


@pytest.fixture(scope='module')
def agent():
    """Critic, target critic and V perturbed away from their init, so advantages spread over both sides of
    log(100)/inv_temp and which critic is used matters."""
    agent = create()
    for i, name in enumerate(('critic', 'target_critic', 'value')):
        agent = with_params(agent, name, perturbed(agent.network.params[name], jax.random.PRNGKey(10 + i), 0.5))
    return agent


def direct_advantages(agent, batch):
    observations, actions = batch['observations'], batch['actions'].reshape(B, D)
    q = np.asarray(agent.network.apply('critic', observations, actions), np.float64).mean(0)
    return q - np.asarray(agent.network.apply('value', observations), np.float64)


# ------------------------------------------------------------------------------------------- losses
def test_advantage_weights_are_capped_exponentials(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    weights, advantages = agent.advantage_weights(batch['observations'], batch['actions'].reshape(B, D))
    adv = direct_advantages(agent, batch)
    expected = np.minimum(np.exp(10.0 * adv), 100.0)
    assert (expected == 100.0).any() and (expected < 100.0).any()  # both sides of the cap are exercised
    np.testing.assert_allclose(advantages, adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights, expected, rtol=1e-4)


def test_critic_loss_matches_direct_computation(agent):
    batch, key = make_batch(jax.random.PRNGKey(1)), jax.random.PRNGKey(2)
    loss, info = jax.jit(type(agent).critic_loss)(agent, batch, agent.network.trainable_params, key)
    next_observations = batch['next_observation']
    next_actions = euler_loop(agent.network.select('flow_policy'), next_observations,  # the acting policy
                              jax.random.normal(key, (B, D)))
    next_q = np.asarray(agent.network.apply('target_critic', next_observations, jnp.asarray(next_actions)), np.float64)
    v = next_q.mean(0) - 0.5 * np.sqrt(np.mean((next_q - next_q.mean(0)) ** 2, axis=0))
    y = np.asarray(batch['chunk_return']) + 0.9**H * np.asarray(batch['bootstrap_mask']) * v
    q = np.asarray(agent.network.apply('critic', batch['observations'], batch['actions'].reshape(B, D)), np.float64)
    w = np.asarray(batch['valid'])
    assert w.min() == 0
    np.testing.assert_allclose(loss, np.sum(w * (q - y) ** 2) / (2 * B), rtol=1e-4)
    np.testing.assert_allclose([info['critic/q_mean'], info['critic/q_max'], info['critic/q_min']],
                               [q.mean(), q.max(), q.min()], rtol=1e-5)


def test_value_loss_regresses_every_target_critic_member(agent):
    batch = make_batch(jax.random.PRNGKey(3))
    loss, _ = jax.jit(type(agent).value_loss)(agent, batch, agent.network.trainable_params)
    target_q = np.asarray(agent.network.apply('target_critic', batch['observations'],
                                              batch['actions'].reshape(B, D)), np.float64)  # (K, B)
    v = np.asarray(agent.network.apply('value', batch['observations']), np.float64)
    w = np.asarray(batch['valid'])
    np.testing.assert_allclose(loss, np.sum(w * (target_q - v) ** 2) / (2 * B), rtol=1e-5)


def test_actor_loss_is_the_weighted_flow_matching_loss(agent):
    batch, key = make_batch(jax.random.PRNGKey(4)), jax.random.PRNGKey(5)
    loss, info = jax.jit(type(agent).actor_loss)(agent, batch, agent.network.trainable_params, key)
    x0_key, t_key = jax.random.split(key)
    actions = np.asarray(batch['actions']).reshape(B, D)
    x0, t = np.asarray(jax.random.normal(x0_key, (B, D))), np.asarray(jax.random.uniform(t_key, (B, 1)))
    velocity = np.asarray(agent.network.apply('flow_policy', batch['observations'],
                                              jnp.asarray((1 - t) * x0 + t * actions), jnp.asarray(t)))
    weights = np.minimum(np.exp(10.0 * direct_advantages(agent, batch)), 100.0)
    w = np.asarray(batch['valid'])
    expected = np.mean(weights * w * np.mean((velocity - (actions - x0)) ** 2, axis=-1))
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    np.testing.assert_allclose(info['actor/weight_max'], weights.max(), rtol=1e-4)


def test_each_loss_trains_only_its_own_network(agent):
    batch, key = make_batch(jax.random.PRNGKey(6)), jax.random.PRNGKey(7)
    params = agent.network.trainable_params
    assert set(params) == {'critic', 'value', 'flow_policy'}
    for loss_fn, trained in [(lambda p: agent.critic_loss(batch, p, key)[0], 'critic'),
                             (lambda p: agent.value_loss(batch, p)[0], 'value'),
                             (lambda p: agent.actor_loss(batch, p, key)[0], 'flow_policy')]:
        grads = jax.jit(jax.grad(loss_fn))(params)
        for name in params:  # the advantage weights and the TD target are constants
            assert (global_norm(grads[name]) > 0) == (name == trained), (trained, name)


# -------------------------------------------------------------------------------- update and targets
def test_update_compiles_once_scans_and_moves_targets_exactly(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    new_agent, info, newer_agent = two_compiled_updates(
        agent, batch, make_batch(jax.random.PRNGKey(1)),
        {'critic/critic_loss', 'critic/q_mean', 'critic/q_max', 'critic/q_min', 'value/value_loss', 'actor/actor_loss',
         'actor/weight_mean', 'grad/norm'})
    old, new = agent.network.params, new_agent.network.params
    assert set(old) == {'critic', 'target_critic', 'value', 'flow_policy'}
    for t_old, o_new, t_new in zip(jax.tree.leaves(old['target_critic']), jax.tree.leaves(new['critic']),
                                   jax.tree.leaves(new['target_critic'])):
        t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
        np.testing.assert_allclose(t_new, t_old + 0.005 * (o_new - t_old), rtol=2e-7, atol=1e-9)
    _, loss_key = jax.random.split(agent.rng)
    grads = jax.jit(jax.grad(lambda p: agent.total_loss(batch, p, loss_key)[0]))(agent.network.trainable_params)
    np.testing.assert_allclose(info['grad/norm'], global_norm(grads), rtol=1e-4)

    # tests/batches.py: a scan of the two updates equals them in sequence (mean info), vmapped over two seeds.
    batches = jax.tree.map(lambda *x: jnp.stack(x), batch, make_batch(jax.random.PRNGKey(1)))
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches)


# ---------------------------------------------------------------------------------------------- acting
def test_sample_actions_shapes_range_and_euler_ode(agent):
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    key = jax.random.PRNGKey(8)
    assert sample(agent, jnp.ones(O), key).shape == (D,)
    observations = jax.random.normal(key, (7, O)) * 3
    batch = np.asarray(sample(agent, observations, key))
    assert batch.shape == (7, D) and np.abs(batch).max() <= 1.0
    expected = euler_loop(agent.network.select('flow_policy'), observations, jax.random.normal(key, (7, D)))
    np.testing.assert_allclose(batch, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_has_its_config_defaults():
    a = fawac.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    for x, y in zip(jax.tree.leaves(a.network.params), jax.tree.leaves(create().network.params)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError):
        create(inv_temp=-1.0)
    config = fawac.get_config()
    assert config.agent_name == 'fawac' and config.inv_temp == 10.0 and config.action_chunking is True


# ------------------------------------------------------------------------------------------- learning
def test_bandit_advantage_weighting_prefers_high_reward_mode_over_behaviour_cloning():
    """inv_temp = 0 makes every weight 1: plain BC (about half the samples in each mode). With inv_temp = 10 the
    high mode's weight exceeds the low mode's by up to e^10 (capped at 100) once Q and V are fitted; after 300
    updates at least 85% of the samples must be in the high-reward mode, a margin of at least 0.3 over BC
    (observed 0.998 at 300 updates on seed 0, despite the two-stage learning: critic/V first, then weights)."""
    bc = bandit.high_mode_fraction(fawac, {'inv_temp': 0.0}, num_updates=300)
    assert 0.35 <= bc <= 0.65
    fraction = bandit.high_mode_fraction(fawac, {'inv_temp': 10.0}, num_updates=300)
    assert fraction >= 0.85 and fraction >= bc + 0.3, (fraction, bc)
