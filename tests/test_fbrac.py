"""FBRAC (agents/fbrac.py, ALGORITHMS §5): the actor gradient through the Euler ODE (and its final clip) against
finite differences of a loss written out here in float64, gradient routing, the critic loss against a direct
computation, compile-once update and scan, exact Polyak target, acting, config, and the bandit learning test.

Direct computations reproduce the agent's random draws by splitting keys the way the agent documents:
total_loss → (critic, actor); actor_loss → (BC flow loss, noise z); bc_flow_loss → (x_0, t)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from agents import fbrac
from tests import bandit
from tests.agent_tools import (bc_loss_direct, euler_loop, global_norm, perturbed, to_float64, two_compiled_updates,
                               with_params)
from tests.batches import assert_fused_updates_match_sequential_updates, assert_trees_close, random_batch

O, A, H = 5, 2, 2
D = H * A
B = 16


def small_config(**overrides):
    config = fbrac.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9, alpha=0.5))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return fbrac.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=B):
    return random_batch(key, O, A, H, batch_size)


@pytest.fixture(scope='module')
def agent():
    """A small agent with perturbed flow and critic, so that neither is near its initialisation."""
    agent = create()
    agent = with_params(agent, 'actor_flow', perturbed(agent.network.params['actor_flow'], jax.random.PRNGKey(7)))
    return with_params(agent, 'critic', perturbed(agent.network.params['critic'], jax.random.PRNGKey(8)))


# ------------------------------------------------------------------------------------------- losses
def test_actor_gradient_matches_finite_differences_through_the_flow_ode():
    """Tiny networks in float64: the agent's autodiff gradient of its actor loss w.r.t. every flow parameter equals
    central finite differences of L_BC − Q̄(s, clip(Euler loop))/alpha written out here."""
    agent = create(actor_hidden_dims=(4, 4), value_hidden_dims=(8, 8), alpha=0.5)
    agent = with_params(agent, 'actor_flow', perturbed(agent.network.params['actor_flow'], jax.random.PRNGKey(1), 0.5))
    agent = with_params(agent, 'critic', perturbed(agent.network.params['critic'], jax.random.PRNGKey(2), 0.5))
    key = jax.random.PRNGKey(3)
    with jax.enable_x64(True):
        agent, batch = to_float64(agent), to_float64(make_batch(jax.random.PRNGKey(0), batch_size=8))
        params = agent.network.trainable_params
        loss, info = jax.jit(lambda p: agent.actor_loss(batch, p, key))(params)
        grads = jax.jit(jax.grad(lambda p: agent.actor_loss(batch, p, key)[0]))(params)

        bc_key, noise_key = jax.random.split(key)
        s, a, w = batch['observations'], batch['actions'].reshape(8, D), batch['valid']
        noises = jax.random.normal(noise_key, (8, D))
        flat, unravel = ravel_pytree(params['actor_flow'])
        assert flat.dtype == jnp.float64

        @jax.jit
        def loss_direct(flat):
            velocity = agent.network.select('actor_flow', unravel(flat))
            actions = euler_loop(velocity, s, noises)
            q = jnp.mean(agent.network.apply('critic', s, actions), axis=0)
            return bc_loss_direct(velocity, s, a, w, bc_key) - jnp.mean(q) / 0.5, actions

        expected, actions = loss_direct(flat)
        np.testing.assert_allclose(loss, expected, rtol=1e-12)
        clipped = np.abs(np.asarray(actions)) >= 1
        assert 0 < clipped.mean() < 1  # the test covers saturated and free coordinates of the final clip
        np.testing.assert_allclose(info['actor/clipped_fraction'], clipped.mean())
        eps, steps = 1e-6, 1e-6 * jnp.eye(flat.shape[0], dtype=jnp.float64)  # one coordinate per row
        perturbed_losses = jax.jit(jax.vmap(lambda flat: loss_direct(flat)[0]))
        finite_differences = (perturbed_losses(flat + steps) - perturbed_losses(flat - steps)) / (2 * eps)
        autodiff = np.asarray(ravel_pytree(grads['actor_flow'])[0])
        assert np.abs(autodiff).max() > 1e-3
        np.testing.assert_allclose(autodiff, finite_differences, rtol=1e-5, atol=1e-8)
        assert global_norm(grads['critic']) == 0  # the critic is a fixed call in the actor loss


def test_actor_loss_value_and_alpha_divides_the_q_term(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    _, info = jax.jit(lambda agent: agent.actor_loss(batch, agent.network.trainable_params, key))(agent)
    bc_key, noise_key = jax.random.split(key)
    s, a, w = batch['observations'], batch['actions'].reshape(B, D), batch['valid']
    velocity = agent.network.select('actor_flow')
    q = jnp.mean(agent.network.apply('critic', s, euler_loop(velocity, s, jax.random.normal(noise_key, (B, D)))), 0)
    bc = bc_loss_direct(velocity, s, a, w, bc_key)
    np.testing.assert_allclose(info['actor/q'], q.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info['actor/q_loss'], -q.mean() / 0.5, rtol=1e-5, atol=1e-6)  # divided by alpha
    np.testing.assert_allclose(info['actor/bc_flow_loss'], bc, rtol=1e-5)
    np.testing.assert_allclose(info['actor/actor_loss'], bc - q.mean() / 0.5, rtol=1e-5)


def test_critic_loss_matches_direct_computation(agent):
    batch = make_batch(jax.random.PRNGKey(2))
    key = jax.random.PRNGKey(3)
    agent = with_params(agent, 'target_critic', perturbed(agent.network.params['target_critic'], jax.random.PRNGKey(4)))
    loss, info = jax.jit(type(agent).critic_loss)(agent, batch, agent.network.trainable_params, key)
    next_observations = batch['next_observation']
    next_actions = euler_loop(agent.network.select('actor_flow'), next_observations,  # the acting ODE, critic key
                              jax.random.normal(key, (B, D)))
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
         'actor/bc_flow_loss', 'actor/q_loss', 'grad/norm'})

    old, new = agent.network.params, new_agent.network.params
    assert set(old) == {'critic', 'target_critic', 'actor_flow'}  # only the critic has a target
    for t_old, o_new, t_new in zip(jax.tree.leaves(old['target_critic']), jax.tree.leaves(new['critic']),
                                   jax.tree.leaves(new['target_critic'])):
        t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
        np.testing.assert_allclose(t_new, t_old + 0.005 * (o_new - t_old), rtol=2e-7, atol=1e-9)
    for name in ('critic', 'actor_flow'):
        assert not np.allclose(jax.tree.leaves(new[name])[0], jax.tree.leaves(old[name])[0])
    _, loss_key = jax.random.split(agent.rng)
    grads = jax.jit(jax.grad(lambda p: agent.total_loss(batch, p, loss_key)[0]))(agent.network.trainable_params)
    np.testing.assert_allclose(info['grad/norm'], global_norm(grads), rtol=1e-4)


def test_fused_updates_match_sequential_updates(agent):
    """tests/batches.py: scan of updates = sequential updates (mean info), vmapped over two seeds."""
    batches = jax.tree.map(lambda *x: jnp.stack(x), *[make_batch(jax.random.PRNGKey(i)) for i in range(3)])
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches)


# ---------------------------------------------------------------------------------------------- acting
def test_sample_actions_shapes_range_and_euler_ode(agent):
    key = jax.random.PRNGKey(3)
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    observations = 3 * jax.random.normal(key, (7, O))
    single, batch = sample(agent, jnp.ones(O), key), sample(agent, observations, key)
    assert single.shape == (D,) and batch.shape == (7, D)
    expected = euler_loop(agent.network.select('actor_flow'), observations, jax.random.normal(key, (7, D)))
    np.testing.assert_allclose(batch, expected, rtol=1e-5, atol=1e-6)
    many = np.asarray(sample(agent, 3 * jax.random.normal(key, (300, O)), key))
    assert np.abs(many).max() <= 1.0 and np.abs(single).max() <= 1.0 and np.mean(np.abs(many) == 1) > 0.01
    best = fbrac.Agent.create(0, np.zeros(O), np.zeros(A), small_config(best_of_n=4))
    assert sample(best, jnp.ones(O), key).shape == (D,) and sample(best, observations, key).shape == (7, D)


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_has_its_config_defaults():
    a = fbrac.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    assert_trees_close(a.network.params, create().network.params, rtol=0, atol=0)
    assert a.config.ob_dims == O and a.config.action_dim == A
    with pytest.raises(ValueError):
        create(alpha=0.0)
    config = fbrac.get_config()
    assert config.agent_name == 'fbrac' and config.alpha == 100.0 and config.flow_steps == 10
    assert config.best_of_n == 1 and config.action_chunking is True and config.num_qs == 10


# ------------------------------------------------------------------------------------------- learning
def test_bandit_prefers_the_high_reward_mode():
    """Behaviour cloning samples each mode half of the time (tests/bandit.py builds the data 50/50); with a strong
    Q term (alpha = 0.3) FBRAC must put at least 80% of its actions in the high-reward mode (margin ≥ 0.3)."""
    fraction = bandit.high_mode_fraction(fbrac, {'alpha': 0.3}, num_updates=300)
    assert fraction >= 0.8, fraction
