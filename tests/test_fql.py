"""FQL (agents/fql.py, ALGORITHMS §4): distillation target against an explicit Euler loop, actor and critic
losses and their gradient routing against direct recomputations, compile-once update and scan, exact Polyak
target, acting, config, and the bandit learning test.

Direct computations reproduce the agent's random draws by splitting keys the way the agent documents:
total_loss → (critic, actor); actor_loss → (BC flow loss, noise z); bc_flow_loss → (x_0, t)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import fql
from tests import bandit
from tests.agent_tools import bc_loss_direct, euler_loop, global_norm, perturbed, two_compiled_updates, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, assert_trees_close, random_batch

O, A, H = 5, 2, 2
D = H * A
B = 16


def small_config(**overrides):
    config = fql.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9, alpha=3.0))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return fql.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=B):
    return random_batch(key, O, A, H, batch_size)


@pytest.fixture(scope='module')
def agent():
    """A small agent with perturbed BC flow and critic, so that neither is near its initialisation."""
    agent = create()
    agent = with_params(agent, 'behavior_flow', perturbed(agent.network.params['behavior_flow'], jax.random.PRNGKey(7)))
    return with_params(agent, 'critic', perturbed(agent.network.params['critic'], jax.random.PRNGKey(8)))


# ------------------------------------------------------------------------------------------- losses
def test_distillation_target_is_the_bc_flows_euler_ode_for_the_same_noise(agent):
    observations = jax.random.normal(jax.random.PRNGKey(0), (B, O))
    noises = 1.5 * jax.random.normal(jax.random.PRNGKey(1), (B, D))
    targets = jax.jit(type(agent).distillation_targets)(agent, observations, noises)
    expected = euler_loop(agent.network.select('behavior_flow'), observations, noises)
    np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(targets)).max() <= 1 and np.mean(np.abs(np.asarray(targets)) == 1) > 0  # clipped once
    # A different noise gives a different target: the target really depends on z.
    assert not np.allclose(targets, jax.jit(type(agent).distillation_targets)(agent, observations, noises + 0.5))


def test_actor_loss_and_gradients_match_direct_recomputation(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    params = agent.network.trainable_params
    loss_fn = jax.jit(lambda p: agent.actor_loss(batch, p, key))
    loss, info = loss_fn(params)

    bc_key, noise_key = jax.random.split(key)
    s, a, w = batch['observations'], batch['actions'].reshape(B, D), batch['valid']
    noises = jax.random.normal(noise_key, (B, D))
    net = agent.network

    def bc_term(flow_params):
        return bc_loss_direct(net.select('behavior_flow', flow_params), s, a, w, bc_key)

    targets = euler_loop(net.select('behavior_flow'), s, noises)

    def policy_terms(actor_params):
        mu = net.apply('one_step_actor', s, noises, params=actor_params)
        q = jnp.mean(net.apply('critic', s, jnp.clip(mu, -1, 1)), axis=0)
        return 3.0 * jnp.mean((mu - targets) ** 2) - jnp.mean(q), (jnp.mean((mu - targets) ** 2), jnp.mean(q))

    bc = bc_term(params['behavior_flow'])
    policy, (distill, q) = policy_terms(params['one_step_actor'])
    np.testing.assert_allclose(info['actor/bc_flow_loss'], bc, rtol=1e-5)
    np.testing.assert_allclose(info['actor/distill_loss'], distill, rtol=1e-5)
    np.testing.assert_allclose(info['actor/q'], q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info['actor/q_loss'], -q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, bc + policy, rtol=1e-5)
    np.testing.assert_allclose(info['actor/actor_loss'], loss, rtol=1e-6)

    # Gradient routing: the BC flow learns only from L_BC (its ODE target is a constant), μ_ω from the
    # distillation and Q terms (through the critic's input), the critic not at all (fixed call).
    grads = jax.jit(jax.grad(lambda p: loss_fn(p)[0]))(params)
    assert_trees_close(grads['behavior_flow'], jax.grad(bc_term)(params['behavior_flow']))
    assert_trees_close(grads['one_step_actor'], jax.grad(lambda p: policy_terms(p)[0])(params['one_step_actor']))
    assert global_norm(grads['critic']) == 0 and global_norm(grads['one_step_actor']) > 0


def test_critic_loss_matches_direct_computation(agent):
    batch = make_batch(jax.random.PRNGKey(2))
    key = jax.random.PRNGKey(3)
    agent = with_params(agent, 'target_critic', perturbed(agent.network.params['target_critic'], jax.random.PRNGKey(4)))
    loss, info = jax.jit(type(agent).critic_loss)(agent, batch, agent.network.trainable_params, key)
    next_observations = batch['next_observation']
    next_actions = np.clip(np.asarray(agent.network.apply(  # the one-step policy with the critic's key
        'one_step_actor', next_observations, jax.random.normal(key, (B, D)))), -1, 1)
    next_q = np.asarray(agent.network.apply('target_critic', next_observations, next_actions), np.float64)
    v = next_q.mean(0) - 0.5 * np.sqrt(np.mean((next_q - next_q.mean(0)) ** 2, axis=0))
    y = np.asarray(batch['chunk_return']) + 0.9**H * np.asarray(batch['bootstrap_mask']) * v
    q = np.asarray(agent.network.apply('critic', batch['observations'], batch['actions'].reshape(B, D)))
    w = np.asarray(batch['valid'])
    assert w.min() == 0  # rows with w = 0 stay in the denominator K·B
    np.testing.assert_allclose(loss, np.sum(w * (q - y) ** 2) / (2 * B), rtol=1e-5)
    np.testing.assert_allclose([info['critic/q_mean'], info['critic/q_max'], info['critic/q_min']],
                               [q.mean(), q.max(), q.min()], rtol=1e-5)


# -------------------------------------------------------------------------------- update and targets
def test_update_compiles_once_is_finite_and_moves_the_target_critic_exactly(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    new_agent, info, newer_agent = two_compiled_updates(
        agent, batch, make_batch(jax.random.PRNGKey(1)),
        {'critic/critic_loss', 'critic/q_mean', 'critic/q_max', 'critic/q_min', 'actor/actor_loss',
         'actor/bc_flow_loss', 'actor/distill_loss', 'actor/q_loss', 'grad/norm'})

    old, new = agent.network.params, new_agent.network.params
    assert set(old) == {'critic', 'target_critic', 'behavior_flow', 'one_step_actor'}  # only the critic's target
    for t_old, o_new, t_new in zip(jax.tree.leaves(old['target_critic']), jax.tree.leaves(new['critic']),
                                   jax.tree.leaves(new['target_critic'])):
        t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
        np.testing.assert_allclose(t_new, t_old + 0.005 * (o_new - t_old), rtol=2e-7, atol=1e-9)
    for name in ('critic', 'behavior_flow', 'one_step_actor'):
        assert not np.allclose(jax.tree.leaves(new[name])[0], jax.tree.leaves(old[name])[0])
    # grad/norm is the true global norm of the total-loss gradient.
    _, loss_key = jax.random.split(agent.rng)
    grads = jax.jit(jax.grad(lambda p: agent.total_loss(batch, p, loss_key)[0]))(agent.network.trainable_params)
    np.testing.assert_allclose(info['grad/norm'], global_norm(grads), rtol=1e-4)


def test_fused_updates_match_sequential_updates(agent):
    """tests/batches.py: scan of updates = sequential updates (mean info), vmapped over two seeds."""
    batches = jax.tree.map(lambda *x: jnp.stack(x), *[make_batch(jax.random.PRNGKey(i)) for i in range(3)])
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches)


# ---------------------------------------------------------------------------------------------- acting
def test_sample_actions_shapes_range_and_one_step_policy(agent):
    key = jax.random.PRNGKey(3)
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    observations = 3 * jax.random.normal(key, (7, O))
    single, batch = sample(agent, jnp.ones(O), key), sample(agent, observations, key)
    assert single.shape == (D,) and batch.shape == (7, D)
    expected = jnp.clip(agent.network.apply('one_step_actor', observations, jax.random.normal(key, (7, D))), -1, 1)
    np.testing.assert_allclose(batch, expected, rtol=1e-5, atol=1e-6)
    many = np.asarray(sample(agent, 3 * jax.random.normal(key, (300, O)), key))
    assert np.abs(many).max() <= 1.0 and np.abs(single).max() <= 1.0
    # Best-of-4: per observation, the candidate with the highest online-critic mean.
    best = fql.Agent.create(0, np.zeros(O), np.zeros(A), small_config(best_of_n=4))
    best = with_params(best, 'one_step_actor', agent.network.params['one_step_actor'])
    best = with_params(best, 'critic', agent.network.params['critic'])
    chosen = sample(best, observations, key)
    candidates = np.stack([np.clip(agent.network.apply('one_step_actor', observations, jax.random.normal(k, (7, D))),
                                   -1, 1) for k in jax.random.split(key, 4)])
    scores = np.stack([np.asarray(agent.network.apply('critic', observations, c)).mean(0) for c in candidates])
    np.testing.assert_allclose(chosen, candidates[scores.argmax(0), np.arange(7)], rtol=1e-5, atol=1e-6)
    assert sample(best, jnp.ones(O), key).shape == (D,)


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_has_its_config_defaults():
    a = fql.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    assert_trees_close(a.network.params, create().network.params, rtol=0, atol=0)
    assert a.config.ob_dims == O and a.config.action_dim == A
    with pytest.raises(ValueError):
        create(alpha=-1.0)
    config = fql.get_config()
    assert config.agent_name == 'fql' and config.alpha == 100.0 and config.flow_steps == 10 and config.best_of_n == 1
    assert config.action_chunking is True and config.num_qs == 10 and tuple(config.actor_hidden_dims) == (512,) * 4


# ------------------------------------------------------------------------------------------- learning
def test_bandit_prefers_the_high_reward_mode():
    """Behaviour cloning samples each mode half of the time (tests/bandit.py builds the data 50/50); with a
    light distillation weight FQL must put at least 80% of its actions in the high-reward mode (margin ≥ 0.3)."""
    fraction = bandit.high_mode_fraction(fql, {'alpha': 1.0}, num_updates=300)
    assert fraction >= 0.8, fraction
