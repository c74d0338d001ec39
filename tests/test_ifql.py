"""IFQL (agents/ifql.py, ALGORITHMS §8): expectile, value, critic and BC losses against direct computations written
here, gradient routing, the best-of-32 selection for one observation and for a batch, compile-once update and
targets, config, and a bandit learning test.

Direct computations reproduce the agent's random draws by splitting keys the way the agent documents:
total_loss passes its key to the BC flow loss, which splits it into (x_0, t); sample_actions draws all candidate
noises (*batch, num_samples, D) from its key at once."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import ifql
from tests import bandit
from tests.agent_tools import euler_loop, global_norm, perturbed, two_compiled_updates, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, random_batch
from utils import rl

O, A, H = 5, 2, 2
D = H * A
B = 16
N = 32


def small_config(**overrides):
    config = ifql.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return ifql.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=B):
    return random_batch(key, O, A, H, batch_size)


@pytest.fixture(scope='module')
def agent():
    """Critic and target critic differ (and are far from their init), so which one is used matters."""
    agent = create()
    agent = with_params(agent, 'critic', perturbed(agent.network.params['critic'], jax.random.PRNGKey(10), 0.5))
    return with_params(agent, 'target_critic', perturbed(agent.network.params['target_critic'],
                                                         jax.random.PRNGKey(11)))


# ------------------------------------------------------------------------------------------- losses
def test_expectile_loss_matches_direct_computation():
    u = np.array([-2.0, -0.5, 0.0, 0.3, 1.5, -1e-3])
    for kappa in (0.9, 0.5, 0.7):
        expected = np.mean([(kappa if x >= 0 else 1 - kappa) * x**2 for x in u])
        np.testing.assert_allclose(rl.expectile_loss(jnp.asarray(u), kappa), expected, rtol=1e-6)
    # κ = 0.5 is half the mean squared error; the gradient is asymmetric: 2κu above, 2(1 − κ)u below.
    np.testing.assert_allclose(rl.expectile_loss(jnp.asarray(u), 0.5), 0.5 * np.mean(u**2), rtol=1e-6)
    grad = jax.grad(lambda x: rl.expectile_loss(x, 0.9))(jnp.asarray(u))
    np.testing.assert_allclose(grad, np.where(u < 0, 0.1, 0.9) * 2 * u / len(u), rtol=1e-6)


def test_value_loss_matches_direct_computation(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    loss, info = jax.jit(type(agent).value_loss)(agent, batch, agent.network.trainable_params)
    target_q = np.asarray(agent.network.apply('target_critic', batch['observations'],
                                              batch['actions'].reshape(B, D)), np.float64)
    q_data = target_q.mean(0) - 0.5 * np.sqrt(np.mean((target_q - target_q.mean(0)) ** 2, axis=0))
    u = q_data - np.asarray(agent.network.apply('value', batch['observations']), np.float64)
    assert (u > 0).any() and (u < 0).any()  # both expectile branches are exercised
    np.testing.assert_allclose(loss, np.mean(np.where(u < 0, 0.1, 0.9) * u**2), rtol=1e-5)  # no valid mask
    assert 'value/v_mean' in info


def test_critic_loss_bootstraps_from_online_value(agent):
    batch = make_batch(jax.random.PRNGKey(1))
    loss, info = jax.jit(type(agent).critic_loss)(agent, batch, agent.network.trainable_params)
    next_v = np.asarray(agent.network.apply('value', batch['next_observation']), np.float64)
    y = np.asarray(batch['chunk_return']) + 0.9**H * np.asarray(batch['bootstrap_mask']) * next_v
    q = np.asarray(agent.network.apply('critic', batch['observations'], batch['actions'].reshape(B, D)), np.float64)
    w = np.asarray(batch['valid'])
    assert w.min() == 0
    np.testing.assert_allclose(loss, np.sum(w * (q - y) ** 2) / (2 * B), rtol=1e-5)
    np.testing.assert_allclose([info['critic/q_mean'], info['critic/q_max'], info['critic/q_min']],
                               [q.mean(), q.max(), q.min()], rtol=1e-5)


def test_total_loss_sums_components_and_routes_gradients(agent):
    batch, key = make_batch(jax.random.PRNGKey(2)), jax.random.PRNGKey(3)
    params = agent.network.trainable_params
    assert set(params) == {'value', 'critic', 'behavior_flow'}
    total, info = jax.jit(type(agent).total_loss)(agent, batch, params, key)
    # The BC flow loss, computed here with the documented (x_0, t) draws.
    x0_key, t_key = jax.random.split(key)
    actions = np.asarray(batch['actions']).reshape(B, D)
    x0, t = np.asarray(jax.random.normal(x0_key, (B, D))), np.asarray(jax.random.uniform(t_key, (B, 1)))
    v = np.asarray(agent.network.apply('behavior_flow', batch['observations'], jnp.asarray((1 - t) * x0 + t * actions),
                                       jnp.asarray(t)))
    bc = np.mean(np.asarray(batch['valid']) * np.mean((v - (actions - x0)) ** 2, axis=-1))
    np.testing.assert_allclose(info['actor/bc_flow_loss'], bc, rtol=1e-4)
    np.testing.assert_allclose(total, info['value/value_loss'] + info['critic/critic_loss'] + bc, rtol=1e-5)
    # Each loss trains only its own network: V(s') and the target critic are fixed calls.
    for loss_fn, trained in [(lambda p: agent.value_loss(batch, p)[0], 'value'),
                             (lambda p: agent.critic_loss(batch, p)[0], 'critic'),
                             (lambda p: agent.actor_loss(batch, p, key)[0], 'behavior_flow')]:
        grads = jax.jit(jax.grad(loss_fn))(params)
        for name in params:
            assert (global_norm(grads[name]) > 0) == (name == trained), (trained, name)


# ---------------------------------------------------------------------------------------------- acting
def test_best_of_samples_for_one_observation_and_a_batch(agent):
    """The batch selection equals the single-observation selection row by row for the same noises (hence the
    same keys), and both equal an argmax of the ensemble minimum over candidates decoded here."""
    select = jax.jit(type(agent).select_best)
    observations = jax.random.normal(jax.random.PRNGKey(4), (5, O)) * 2
    key = jax.random.PRNGKey(5)
    noises = jax.random.normal(key, (5, N, D))
    batch_actions = np.asarray(select(agent, observations, noises))
    np.testing.assert_array_equal(batch_actions, agent.sample_actions(observations, key))  # noises from `key`
    chosen, chosen_by_mean = [], []
    for b in range(5):
        single = np.asarray(select(agent, observations[b], noises[b]))
        assert single.shape == (D,)
        np.testing.assert_allclose(batch_actions[b], single, rtol=1e-5, atol=1e-6)
        repeated = jnp.broadcast_to(observations[b], (N, O))
        candidates = euler_loop(agent.network.select('behavior_flow'), repeated, noises[b])
        q = np.asarray(agent.network.apply('critic', repeated, jnp.asarray(candidates)))  # (K, N)
        chosen.append(int(np.argmax(q.min(axis=0))))
        chosen_by_mean.append(int(np.argmax(q.mean(axis=0))))
        np.testing.assert_allclose(single, candidates[chosen[-1]], rtol=1e-4, atol=1e-5)
    assert len(set(chosen)) > 1  # the argmax is per observation, not one index for the whole batch
    assert chosen != chosen_by_mean  # the ensemble MINIMUM decides (here it differs from the mean's choice)


def test_sample_actions_shapes_and_range(agent):
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    key = jax.random.PRNGKey(6)
    single = sample(agent, jnp.ones(O), key)
    batch = np.asarray(sample(agent, jax.random.normal(key, (7, O)) * 3, key))
    assert single.shape == (D,) and batch.shape == (7, D)
    assert np.abs(batch).max() <= 1.0 and np.abs(np.asarray(single)).max() <= 1.0


# -------------------------------------------------------------------------------- update and targets
def test_update_compiles_once_scans_and_moves_targets_exactly(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    new_agent, info, newer_agent = two_compiled_updates(
        agent, batch, make_batch(jax.random.PRNGKey(1)),
        {'critic/critic_loss', 'critic/q_mean', 'critic/q_max', 'critic/q_min', 'value/value_loss',
         'actor/bc_flow_loss', 'grad/norm'})
    old, new = agent.network.params, new_agent.network.params
    assert set(old) == {'value', 'critic', 'target_critic', 'behavior_flow'}  # no target V, no target flow
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


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_has_its_config_defaults():
    a = ifql.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    for x, y in zip(jax.tree.leaves(a.network.params), jax.tree.leaves(create().network.params)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError):
        create(kappa=1.5)
    config = ifql.get_config()
    assert config.agent_name == 'ifql' and config.kappa == 0.9 and config.num_samples == 32
    assert 'best_of_n' not in config


# ------------------------------------------------------------------------------------------- learning
def test_bandit_best_of_32_prefers_high_reward_mode_over_behaviour_cloning():
    """With num_samples = 1 IFQL acts with its BC flow (about half the samples in each mode). Keeping the best of
    32 BC samples by min-Q must put at least 90% of the actions in the high-reward mode (a margin ≥ 0.3)."""
    bc = bandit.high_mode_fraction(ifql, {'num_samples': 1}, num_updates=300)
    assert 0.35 <= bc <= 0.65
    fraction = bandit.high_mode_fraction(ifql, {}, num_updates=300)
    assert fraction >= 0.9 and fraction >= bc + 0.3, (fraction, bc)
