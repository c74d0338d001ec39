"""BAM (agents/bam.py, ALGORITHMS §3): the gradient of the SDE objective against backpropagation through the chain
unrolled step by step here with the same noises, and against float64 finite differences; with the control cost
zeroed, BAM is Q ascent through QAM's SDE rollout; gradient routing; global-norm clipping 1.0 against an optax
reference; the critic loss, compile-once update and scan, exact Polyak targets, acting, config, and the bandit test.

Direct computations reproduce the agent's random draws by splitting keys the way the agent documents:
total_loss → (critic, actor); actor_loss → (BC flow loss, SDE objective); sde_objective → (x[0], SDE), the SDE key
split into T − 1 step keys; bc_flow_loss → (x_0, t)."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from agents import bam
from tests import bandit
from tests.agent_tools import bc_loss_direct, euler_loop, global_norm, perturbed, to_float64, with_config, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, assert_trees_close, random_batch
from utils import flow, rl

O, A, H = 5, 2, 2
D = H * A
B = 16
T = 10


def small_config(**overrides):
    config = bam.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9, inv_temp=2.0))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return bam.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=B):
    return random_batch(key, O, A, H, batch_size)


def perturb_all(agent, scale=0.3):
    """Every network (and target) moved away from its initialisation, the targets differently from the online ones."""
    for i, name in enumerate(sorted(agent.network.params)):
        agent = with_params(agent, name, perturbed(agent.network.params[name], jax.random.PRNGKey(100 + i), scale))
    return agent


def unrolled_sde_objective(agent, finetuned_params, observations, key, inv_temp=2.0, rho=0.5):
    """L_BAM written out step by step: T − 1 Euler–Maruyama steps of f_θ with the running cost, one deterministic
    base step, then −inv_temp·(mean − ρ·std) of the online critic at the unclipped final state."""
    net, h, n = agent.network, 1.0 / T, observations.shape[0]
    residual = agent.config.residual
    base_name = 'target_behavior_flow' if agent.config.target_actor else 'behavior_flow'
    noise_key, sde_key = jax.random.split(key)
    step_keys = jax.random.split(sde_key, T - 1)
    x = jax.random.normal(noise_key, (n, D))
    cost = jnp.zeros(n)
    for i in range(T - 1):
        t = i * h
        sigma = np.sqrt(2 * (1 - t + h) / (t + h))
        f = net.apply('finetuned_flow', observations, x, jnp.full((n, 1), t), params=finetuned_params)
        f_base = net.apply(base_name, observations, x, jnp.full((n, 1), t))
        velocity, control = (f + f_base, f) if residual else (f, f - f_base)
        cost = cost + 2 / sigma**2 * jnp.sum(control**2, axis=-1)
        x = x + h * (2 * velocity - x / (t + h)) + np.sqrt(h) * sigma * jax.random.normal(step_keys[i], (n, D))
    x = x + h * net.apply(base_name, observations, x, jnp.full((n, 1), (T - 1) * h))
    q = net.apply('critic', observations, x)
    q = jnp.mean(q, axis=0) - rho * jnp.sqrt(jnp.mean((q - jnp.mean(q, axis=0)) ** 2, axis=0))
    return -inv_temp * jnp.mean(q) + jnp.mean(cost), (jnp.mean(q), jnp.mean(cost), x)


TRACES = []  # one entry per trace of `jitted_update`


@jax.jit
def jitted_update(agent, batch):
    TRACES.append(1)
    return agent.update(batch)


@jax.jit
def total_loss_gradients(agent, batch, key):
    return jax.grad(lambda p: agent.total_loss(batch, p, key)[0])(agent.network.trainable_params)


@pytest.fixture(scope='module')
def agent():
    return perturb_all(create())


# ------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize('options', [{}, {'residual': True, 'target_actor': False}])
def test_sde_objective_gradient_equals_backprop_through_the_unrolled_chain(options):
    agent = perturb_all(create(**options))
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    params = agent.network.trainable_params
    loss_fn = jax.jit(lambda p: agent.actor_loss(batch, p, key))
    loss, info = loss_fn(params)
    grads = jax.jit(jax.grad(lambda p: loss_fn(p)[0]))(params)

    bc_key, sde_key = jax.random.split(key)
    s, a, w = batch['observations'], batch['actions'].reshape(B, D), batch['valid']
    unrolled = jax.jit(lambda p: unrolled_sde_objective(agent, p, s, sde_key))
    expected, (q, cost, final) = unrolled(params['finetuned_flow'])
    assert np.abs(np.asarray(final)).max() > 1  # the terminal action enters the critic unclipped
    np.testing.assert_allclose(info['actor/bam_loss'], expected, rtol=1e-4)
    np.testing.assert_allclose(info['actor/terminal_q'], q, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info['actor/control_cost'], cost, rtol=1e-4)
    assert float(cost) > 0

    def bc_term(flow_params):
        return bc_loss_direct(agent.network.select('behavior_flow', flow_params), s, a, w, bc_key)

    np.testing.assert_allclose(loss, bc_term(params['behavior_flow']) + expected, rtol=1e-4)
    expected_grads = jax.jit(jax.grad(lambda p: unrolled(p)[0]))(params['finetuned_flow'])
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(expected_grads))  # float32: relative to the largest
    assert_trees_close(grads['finetuned_flow'], expected_grads, rtol=1e-3, atol=1e-5 * scale)
    assert scale > 0.1
    # f_β learns only from L_BC, even when it is the (online) base flow of the chain; the critic not at all.
    assert_trees_close(grads['behavior_flow'], jax.grad(bc_term)(params['behavior_flow']))
    assert global_norm(grads['critic']) == 0


def test_sde_objective_gradient_matches_finite_differences():
    """Tiny networks in float64: autodiff of the agent's L_BAM w.r.t. every parameter of f_θ equals central
    finite differences of the same objective."""
    agent = perturb_all(create(actor_hidden_dims=(4, 4), value_hidden_dims=(8, 8)), scale=0.5)
    key = jax.random.PRNGKey(3)
    with jax.enable_x64(True):
        agent = to_float64(agent)
        observations = jax.random.normal(jax.random.PRNGKey(0), (6, O), jnp.float64)
        params = agent.network.trainable_params
        flat, unravel = ravel_pytree(params['finetuned_flow'])
        assert flat.dtype == jnp.float64

        def objective(flat):
            return agent.sde_objective(observations, {'finetuned_flow': unravel(flat)}, key)[0]

        autodiff = np.asarray(jax.jit(jax.grad(objective))(flat))
        np.testing.assert_allclose(objective(flat), unrolled_sde_objective(agent, unravel(flat), observations, key)[0],
                                   rtol=1e-6)  # σ_i are float32 constants (shared schedule)
        eps, steps = 1e-6, 1e-6 * jnp.eye(flat.shape[0], dtype=jnp.float64)  # one coordinate per row
        perturbed_objective = jax.jit(jax.vmap(objective))
        finite_differences = (perturbed_objective(flat + steps) - perturbed_objective(flat - steps)) / (2 * eps)
        assert np.abs(autodiff).max() > 1e-2
        np.testing.assert_allclose(autodiff, finite_differences, rtol=1e-5, atol=1e-8)


def test_without_control_cost_bam_is_q_ascent_through_the_sde(agent):
    """With f_θ = f_base the control is zero, so is the cost's gradient (2u·∂u = 0), and the actor gradient equals
    the gradient of −inv_temp·(mean − ρ·std)Q at the end of QAM's (independently written) SDE rollout."""
    agent = with_params(agent, 'finetuned_flow', agent.network.params['target_behavior_flow'])
    observations = jax.random.normal(jax.random.PRNGKey(0), (B, O))
    key = jax.random.PRNGKey(1)
    params = agent.network.trainable_params
    grads, info = jax.jit(jax.grad(lambda p: agent.sde_objective(observations, p, key), has_aux=True))(params)
    assert float(info['actor/control_cost']) == pytest.approx(0.0, abs=1e-10)

    noise_key, sde_key = jax.random.split(key)

    def q_ascent(finetuned_params):
        _, final = flow.memoryless_sde(agent.network.select('finetuned_flow', finetuned_params),
                                       agent.network.select('target_behavior_flow'), observations,
                                       jax.random.normal(noise_key, (B, D)), sde_key, T)
        q = rl.pessimistic_value(agent.network.apply('critic', observations, final), 0.5)
        return -2.0 * jnp.mean(q)

    np.testing.assert_allclose(info['actor/bam_loss'], q_ascent(params['finetuned_flow']), rtol=1e-5)
    assert_trees_close(grads['finetuned_flow'], jax.grad(q_ascent)(params['finetuned_flow']), rtol=1e-3, atol=1e-6)
    assert global_norm(grads['finetuned_flow']) > 0.1


def test_critic_loss_matches_direct_computation(agent):
    batch = make_batch(jax.random.PRNGKey(2))
    key = jax.random.PRNGKey(3)
    loss, info = jax.jit(type(agent).critic_loss)(agent, batch, agent.network.trainable_params, key)
    next_observations = batch['next_observation']
    next_actions = euler_loop(agent.network.select('finetuned_flow'), next_observations,  # acting ODE, critic key
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
def test_update_compiles_once_is_finite_and_moves_targets_exactly(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    new_agent, info = jitted_update(agent, batch)
    traces = len(TRACES)
    newer_agent, _ = jitted_update(new_agent, make_batch(jax.random.PRNGKey(1)))
    assert len(TRACES) == traces  # the updated agent reuses the first trace
    assert {'critic/critic_loss', 'critic/q_mean', 'critic/q_max', 'critic/q_min', 'actor/actor_loss',
            'actor/bc_flow_loss', 'actor/bam_loss', 'actor/control_cost', 'actor/terminal_q', 'grad/norm'} <= set(info)
    assert all(np.isfinite(np.asarray(value)).all() for value in info.values())
    assert int(newer_agent.network.step) == 2 and newer_agent.network.step.dtype == jnp.int32

    old, new = agent.network.params, new_agent.network.params
    assert set(old) == {'critic', 'target_critic', 'behavior_flow', 'target_behavior_flow', 'finetuned_flow'}
    for target, online in [('target_critic', 'critic'), ('target_behavior_flow', 'behavior_flow')]:
        for t_old, o_new, t_new in zip(jax.tree.leaves(old[target]), jax.tree.leaves(new[online]),
                                       jax.tree.leaves(new[target])):
            t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
            np.testing.assert_allclose(t_new, t_old + 0.005 * (o_new - t_old), rtol=2e-7, atol=1e-9)
    for name in ('critic', 'behavior_flow', 'finetuned_flow'):
        assert not np.allclose(jax.tree.leaves(new[name])[0], jax.tree.leaves(old[name])[0])
    _, loss_key = jax.random.split(agent.rng)
    np.testing.assert_allclose(info['grad/norm'], global_norm(total_loss_gradients(agent, batch, loss_key)), rtol=1e-4)


def test_update_always_clips_the_global_norm_at_one(agent):
    """Three updates equal clip_by_global_norm(1.0) + Adam applied to the total-loss gradients, and differ from
    plain Adam (the gradient norms are well above 1, so clipping is active)."""
    params = agent.network.trainable_params
    clipped_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-4, b1=0.9, b2=0.999, eps=1e-8))
    plain_tx = optax.adam(3e-4, b1=0.9, b2=0.999, eps=1e-8)
    clipped, plain = (params, clipped_tx.init(params)), (params, plain_tx.init(params))
    for step in range(3):
        batch = make_batch(jax.random.PRNGKey(step))
        grads = total_loss_gradients(agent, batch, jax.random.split(agent.rng)[1])
        agent, info = jitted_update(agent, batch)
        assert float(info['grad/norm']) > 2.0
        for (p, state), tx in [(clipped, clipped_tx), (plain, plain_tx)]:
            updates, state = tx.update(grads, state, p)
            if tx is clipped_tx:
                clipped = (optax.apply_updates(p, updates), state)
            else:
                plain = (optax.apply_updates(p, updates), state)
    assert_trees_close(agent.network.trainable_params, clipped[0], rtol=1e-4, atol=1e-6)
    difference = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                     for x, y in zip(jax.tree.leaves(clipped[0]), jax.tree.leaves(plain[0])))
    assert difference > 1e-5  # plain Adam would fail the comparison above
    assert 'clip_grad' not in bam.get_config()  # not configurable


def test_fused_updates_match_sequential_updates(agent):
    """tests/batches.py: scan of updates = sequential updates (mean info), vmapped over two seeds."""
    batches = jax.tree.map(lambda *x: jnp.stack(x), *[make_batch(jax.random.PRNGKey(i)) for i in range(3)])
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches, jitted_update)


def test_single_flow_step_is_one_deterministic_base_step_without_running_cost(agent):
    agent = with_config(agent, flow_steps=1)
    observations = jax.random.normal(jax.random.PRNGKey(0), (B, O))
    key = jax.random.PRNGKey(1)
    loss, info = agent.sde_objective(observations, agent.network.trainable_params, key)
    x0 = jax.random.normal(jax.random.split(key)[0], (B, D))
    final = x0 + agent.network.apply('target_behavior_flow', observations, x0, jnp.zeros((B, 1)))
    q = rl.pessimistic_value(agent.network.apply('critic', observations, final), 0.5)
    assert float(info['actor/control_cost']) == 0.0  # T = 1: no stochastic step, so no running cost
    np.testing.assert_allclose(loss, -2.0 * jnp.mean(q), rtol=1e-5)


def test_without_chunking_only_the_first_action_is_used():
    agent = create(action_chunking=False)
    batch = make_batch(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(agent.flat_actions(batch['actions']), batch['actions'][:, 0])
    assert agent.sample_actions(jnp.zeros(O), jax.random.PRNGKey(0)).shape == (A,)


# ---------------------------------------------------------------------------------------------- acting
@pytest.mark.parametrize('overrides', [{}, {'inv_temp': 0.0}])
def test_sample_actions_shapes_range_and_euler_ode(agent, overrides):
    candidate = with_config(agent, **overrides)
    key = jax.random.PRNGKey(3)
    sample = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))
    observations = 3 * jax.random.normal(key, (7, O))
    single, batch = sample(candidate, jnp.ones(O), key), sample(candidate, observations, key)
    assert single.shape == (D,) and batch.shape == (7, D)
    name = 'behavior_flow' if overrides else 'finetuned_flow'  # inv_temp = 0 acts with the BC flow
    expected = euler_loop(agent.network.select(name), observations, jax.random.normal(key, (7, D)))
    np.testing.assert_allclose(batch, expected, rtol=1e-5, atol=1e-6)
    many = np.asarray(sample(candidate, 3 * jax.random.normal(key, (300, O)), key))
    assert np.abs(many).max() <= 1.0 and np.abs(single).max() <= 1.0 and np.mean(np.abs(many) == 1) > 0.01
    if not overrides:
        best = bam.Agent.create(0, np.zeros(O), np.zeros(A), small_config(best_of_n=4))
        assert sample(best, jnp.ones(O), key).shape == (D,) and sample(best, observations, key).shape == (7, D)


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_has_its_config_defaults():
    a = bam.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    assert_trees_close(a.network.params, create().network.params, rtol=0, atol=0)
    assert a.config.ob_dims == O and a.config.action_dim == A
    with pytest.raises(ValueError):
        create(flow_steps=0)
    config = bam.get_config()
    assert config.agent_name == 'bam' and config.inv_temp == 0.3 and config.flow_steps == 10
    assert config.target_actor is True and config.residual is False and config.best_of_n == 1
    assert config.action_chunking is True and config.num_qs == 10


# ------------------------------------------------------------------------------------------- learning
def test_bandit_prefers_the_high_reward_mode():
    """Behaviour cloning samples each mode half of the time (tests/bandit.py builds the data 50/50); BAM with
    inv_temp = 100 (its running cost has no factor h, so this compares to QAM's 10) must put at least 85% of its
    actions in the high-reward mode (margin ≥ 0.35)."""
    fraction = bandit.high_mode_fraction(bam, {'inv_temp': 100.0}, num_updates=300)
    assert fraction >= 0.85, fraction
