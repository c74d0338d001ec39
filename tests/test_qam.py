"""QAM (agents/qam.py, ALGORITHMS §2): memoryless schedule, SDE and lean adjoint identities, losses against
direct computations written here, compile-once update, targets, sampling, configs, and a bandit learning test.

Where a direct computation must reproduce the agent's random draws, it splits the keys the way the agent
documents: total_loss → (critic, actor); actor_loss → (bc, adjoint, noise, edit); adjoint → (x[0], SDE),
the SDE key split into T − 1 step keys; sample_actions → (noise, edit)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import qam
from tests import bandit
from tests.agent_tools import euler_loop, global_norm, perturbed, to_float64, with_config, with_params
from tests.batches import assert_fused_updates_match_sequential_updates, random_batch
from utils import flow, rl
from utils.networks import VelocityField

O, A, H = 5, 2, 2
D = H * A
SIGMAS_T10 = [4.690, 3.162, 2.449, 2.000, 1.673, 1.414, 1.195, 1.000, 0.816, 0.632]  # spec §2.3
HALF_SIGMA_SQUARED_T10 = [11, 5, 3, 2, 1.4, 1, 0.714, 0.5, 0.333, 0.2]


def small_config(**overrides):
    config = qam.get_config()
    config.update(dict(actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, horizon_length=H,
                       discount=0.9, inv_temp=2.0))
    config.update(overrides)
    return config


def create(seed=0, **overrides):
    return qam.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), small_config(**overrides))


def make_batch(key, batch_size=16, horizon=H):
    return random_batch(key, O, A, horizon, batch_size)


def zero_output_layer(params, num_hidden=2):
    """A VelocityField whose output layer is zero, i.e. the field ≡ 0."""
    mlp = dict(params['MLP_0'])
    mlp[f'Dense_{num_hidden}'] = jax.tree.map(jnp.zeros_like, mlp[f'Dense_{num_hidden}'])
    return {**params, 'MLP_0': mlp}


# One jitted function each, shared by the tests: agents with equal configs reuse the compiled programs.
UPDATE_TRACES = []  # one entry per trace of `update`


@jax.jit
def update(agent, batch):
    UPDATE_TRACES.append(1)  # Python side effect: runs only while tracing
    return agent.update(batch)


sample = jax.jit(lambda agent, observations, key: agent.sample_actions(observations, key))


@pytest.fixture(scope='module')
def agent():
    return create()


# --------------------------------------------------------------------------- schedule, SDE, adjoint
def test_memoryless_sigma_table():
    sigmas = np.asarray(flow.memoryless_sigmas(10))
    np.testing.assert_allclose(sigmas, SIGMAS_T10, atol=6e-4)
    np.testing.assert_allclose(sigmas**2 / 2, HALF_SIGMA_SQUARED_T10, atol=6e-4)


def test_lean_adjoint_with_zero_base_flow_scales_linearly():
    T = 10
    states = jax.random.normal(jax.random.PRNGKey(0), (T, 6, 3))
    terminal = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    adjoints = flow.lean_adjoint(lambda s, x, t: jnp.zeros_like(x), None, states, terminal, T)
    expected = np.arange(T)[:, None, None] / T * np.asarray(terminal)[None]  # g[i] = (i/T)·g[T], g[0] = 0
    np.testing.assert_allclose(adjoints, expected, rtol=1e-5, atol=1e-6)


def test_lean_adjoint_with_linear_base_flow_follows_recursion():
    T, c = 7, 0.7
    states = jax.random.normal(jax.random.PRNGKey(0), (T, 4, 2))
    terminal = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    adjoints = flow.lean_adjoint(lambda s, x, t: c * x, None, states, terminal, T)
    h, g, expected = 1.0 / T, np.asarray(terminal, np.float64), [None] * T
    for i in reversed(range(T)):
        g = (1 + h * (2 * c - 1 / (i * h + h))) * g
        expected[i] = g
    np.testing.assert_allclose(adjoints, np.stack(expected), rtol=1e-5, atol=1e-6)


def test_lean_adjoint_vjp_matches_finite_differences():
    T, B = 4, 3
    h = 1.0 / T
    field = VelocityField((8, 8), 2)
    with jax.enable_x64(True):
        params = to_float64(rl.init_params(field, jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 2)),
                                           jnp.zeros((1, 1))))
        base = lambda s, x, t: field.apply({'params': params}, s, x, t)  # noqa: E731
        observations = jax.random.normal(jax.random.PRNGKey(1), (B, 3), jnp.float64)
        states = jax.random.normal(jax.random.PRNGKey(2), (T, B, 2), jnp.float64)
        terminal = jax.random.normal(jax.random.PRNGKey(3), (B, 2), jnp.float64)
        adjoints = np.asarray(flow.lean_adjoint(base, observations, states, terminal, T))
        eps = 1e-6
        for i in range(T):
            t = i * h + h  # the VJP at x[i] uses time t_i + h

            def drift(x):
                return np.asarray(2 * base(observations, x, jnp.full((B, 1), t)) - x / t)

            g_next = np.asarray(terminal) if i == T - 1 else adjoints[i + 1]
            jtg = np.zeros((B, 2))
            for j in range(2):
                step = np.zeros((B, 2))
                step[:, j] = eps
                column = (drift(states[i] + step) - drift(states[i] - step)) / (2 * eps)  # ∂b/∂x_j per sample
                jtg[:, j] = np.sum(column * g_next, axis=-1)
            np.testing.assert_allclose(adjoints[i], g_next + h * jtg, rtol=1e-7, atol=1e-8)


def test_memoryless_sde_forgets_initial_noise_when_control_is_zero():
    T, B = 10, 4000
    h = 1.0 / T
    zero = lambda s, x, t: jnp.zeros_like(x)  # noqa: E731
    x0_a = jax.random.normal(jax.random.PRNGKey(0), (B, 2))
    x0_b = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (B, 2))
    key = jax.random.PRNGKey(2)
    states_a, final_a = flow.memoryless_sde(zero, lambda s, x, t: jnp.broadcast_to(t, x.shape), None, x0_a, key, T)
    states_b, _ = flow.memoryless_sde(zero, zero, None, x0_b, key, T)
    assert states_a.shape == (T, B, 2)
    np.testing.assert_array_equal(states_a[0], x0_a)
    np.testing.assert_allclose(states_a[1], states_b[1], atol=1e-5)  # x[1] does not depend on x[0]
    # Per-step noise: ε_i = (x[i+1] − x[i] + h·x[i]/(t_i + h))/(sqrt(h)·σ_i) is standard normal and uncorrelated
    # with x[0] and with the other steps' noise.
    sigmas = np.asarray(SIGMAS_T10)
    x = np.asarray(states_a, np.float64)
    noises = np.stack([(x[i + 1] - x[i] + h * x[i] / (i * h + h)) / (np.sqrt(h) * sigmas[i]) for i in range(T - 1)])
    np.testing.assert_allclose(noises.std(axis=(1, 2)), 1.0, atol=0.05)
    flat = np.concatenate([x[0].reshape(1, -1), noises.reshape(T - 1, -1)])
    off_diagonal = np.corrcoef(flat) - np.eye(T)
    assert np.abs(off_diagonal).max() < 0.05
    # The last step is one deterministic Euler step of the base flow at t_{T−1} (here f_base = t).
    np.testing.assert_allclose(final_a, states_a[-1] + h * (T - 1) / T, atol=1e-6)


def test_sde_noises_are_the_draws_of_one_key_per_step():
    """Drawn together, the step noises are exactly those of one split key per step, drawn one at a time."""
    initial_noise = jnp.zeros((3, 4, 5))
    key = jax.random.PRNGKey(11)
    noises = jax.jit(flow.sde_noises, static_argnums=2)(key, initial_noise, 6)
    expected = [jax.random.normal(step_key, (3, 4, 5)) for step_key in jax.random.split(key, 5)]
    assert noises.shape == (5, 3, 4, 5)
    np.testing.assert_array_equal(noises, np.stack(expected))
    assert len({float(n[0, 0, 0]) for n in noises}) == 5  # a different draw per step


def test_agent_adjoint_equals_unrolled_loop(agent):
    """Forward SDE with f_θ, deterministic last step and lean adjoint with the EMA target flow, unrolled here."""
    agent = with_params(agent, 'target_behavior_flow',
                        perturbed(agent.network.params['target_behavior_flow'], jax.random.PRNGKey(5)))
    agent = with_params(agent, 'target_critic', perturbed(agent.network.params['target_critic'], jax.random.PRNGKey(6)))
    observations = jax.random.normal(jax.random.PRNGKey(7), (8, O))
    key = jax.random.PRNGKey(8)
    states, adjoints = jax.jit(type(agent).adjoint)(agent, observations, key)

    @jax.jit
    def unrolled(net):  # Python loops, unrolled at trace time
        T, h, inv_temp = 10, 0.1, agent.config.inv_temp
        base = lambda x, t: net.apply('target_behavior_flow', observations, x, jnp.full((8, 1), t))  # noqa: E731
        noise_key, sde_key = jax.random.split(key)
        step_keys = jax.random.split(sde_key, T - 1)
        x = [jax.random.normal(noise_key, (8, D))]
        for i in range(T - 1):
            t = i * h
            sigma = np.sqrt(2 * (1 - t + h) / (t + h))
            v = net.apply('finetuned_flow', observations, x[i], jnp.full((8, 1), t))
            noise = jax.random.normal(step_keys[i], (8, D))
            x.append(x[i] + h * (2 * v - x[i] / (t + h)) + np.sqrt(h) * sigma * noise)
        x_final = x[-1] + h * base(x[-1], (T - 1) * h)
        g = -inv_temp * jax.grad(lambda a: jnp.sum(jnp.mean(
            net.apply('target_critic', observations, jnp.clip(a, -1, 1)), axis=0)))(x_final)
        adjoints = [None] * T
        for i in reversed(range(T)):
            t = i * h + h
            _, vjp = jax.vjp(lambda y: 2 * base(y, t) - y / t, x[i])
            g = g + h * vjp(g)[0]
            adjoints[i] = g
        return jnp.stack(x), jnp.stack(adjoints)

    expected_states, expected_adjoints = unrolled(agent.network)
    np.testing.assert_allclose(states, expected_states, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(adjoints, expected_adjoints, rtol=1e-3, atol=1e-4)


def test_terminal_adjoint_zero_in_clipped_coordinates_and_from_target_critic(agent):
    agent = with_config(agent, inv_temp=2.5)
    agent = with_params(agent, 'target_critic', perturbed(agent.network.params['target_critic'], jax.random.PRNGKey(1)))
    observations = jax.random.normal(jax.random.PRNGKey(2), (6, O))
    x = jax.random.uniform(jax.random.PRNGKey(3), (6, D), minval=-0.9, maxval=0.9)
    x = x.at[0, 0].set(1.4).at[1, 2].set(-2.0).at[3, 3].set(1.01)
    outside = np.abs(np.asarray(x)) > 1
    with jax.enable_x64(True):
        agent64, obs64, x64 = to_float64(agent), to_float64(observations), to_float64(x)
        for use_target_grad, critic in [(True, 'target_critic'), (False, 'critic')]:
            candidate = with_config(agent64, use_target_grad=use_target_grad)
            g = np.asarray(jax.jit(type(candidate).terminal_adjoint)(candidate, obs64, x64))
            assert np.all(g[outside] == 0.0) and np.all(np.abs(g[~outside]) > 0)

            @jax.jit
            def q(a):
                return jnp.mean(candidate.network.apply(critic, obs64, jnp.clip(a, -1, 1)), axis=0)

            eps, fd = 1e-6, np.zeros((6, D))
            for j in range(D):
                step = np.zeros((6, D))
                step[:, j] = eps
                fd[:, j] = (q(np.asarray(x64) + step) - q(np.asarray(x64) - step)) / (2 * eps)
            np.testing.assert_allclose(g, -2.5 * fd, rtol=1e-6, atol=1e-9)


def test_adjoint_matching_loss_vanishes_at_its_minimiser():
    T, B = 10, 5
    sigmas = flow.memoryless_sigmas(T)
    adjoints = jax.random.normal(jax.random.PRNGKey(0), (T, B, 3))
    optimum = -(np.asarray(sigmas)[:, None, None] ** 2 / 2) * np.asarray(adjoints)  # f_θ − f_base = −(σ²/2)·g
    assert float(flow.adjoint_matching_loss(jnp.asarray(optimum), adjoints, sigmas)) == pytest.approx(0, abs=1e-8)
    expected = np.sum(np.asarray(sigmas)[:, None, None] ** 2 * np.asarray(adjoints) ** 2) / B  # control = 0
    np.testing.assert_allclose(flow.adjoint_matching_loss(jnp.zeros((T, B, 3)), adjoints, sigmas), expected, rtol=1e-5)
    nudged = optimum.copy()
    nudged[3, 1, 2] += 0.1
    np.testing.assert_allclose(flow.adjoint_matching_loss(jnp.asarray(nudged), adjoints, sigmas),
                               (2 / SIGMAS_T10[3] * 0.1) ** 2 / B, rtol=2e-3)


# ------------------------------------------------------------------------------------------- losses
def test_critic_loss_matches_direct_computation(agent):
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    agent = with_params(agent, 'target_critic', perturbed(agent.network.params['target_critic'], jax.random.PRNGKey(2)))
    loss, info = jax.jit(type(agent).critic_loss)(agent, batch, agent.network.trainable_params, key)
    next_observations = batch['next_observation']
    next_actions = agent.sample_actions(next_observations, key)
    next_q = np.asarray(agent.network.apply('target_critic', next_observations, next_actions), np.float64)
    v = next_q.mean(0) - 0.5 * np.sqrt(np.mean((next_q - next_q.mean(0)) ** 2, axis=0))
    y = np.asarray(batch['chunk_return']) + 0.9**H * np.asarray(batch['bootstrap_mask']) * v
    q = np.asarray(agent.network.apply('critic', batch['observations'], batch['actions'].reshape(16, D)))
    w = np.asarray(batch['valid'])
    assert w.min() == 0  # rows with w = 0 count in the denominator
    np.testing.assert_allclose(loss, np.sum(w * (q - y) ** 2) / (2 * 16), rtol=1e-5)
    np.testing.assert_allclose([info['critic/q_mean'], info['critic/q_max'], info['critic/q_min']],
                               [q.mean(), q.max(), q.min()], rtol=1e-5)


def test_actor_loss_adjoint_matching_term_matches_loop(agent):
    agent = with_params(agent, 'target_behavior_flow',
                        perturbed(agent.network.params['target_behavior_flow'], jax.random.PRNGKey(3)))
    batch = make_batch(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(4)
    loss, info = jax.jit(type(agent).actor_loss)(agent, batch, agent.network.trainable_params, key)
    _, adjoint_key, _, _ = jax.random.split(key, 4)
    states, adjoints = jax.jit(type(agent).adjoint)(agent, batch['observations'], adjoint_key)

    @jax.jit
    def velocities(net):
        times = [jnp.full((16, 1), i / 10) for i in range(10)]
        return [(net.apply('finetuned_flow', batch['observations'], states[i], times[i]),
                 net.apply('target_behavior_flow', batch['observations'], states[i], times[i])) for i in range(10)]

    total = 0.0
    for i, (f_theta, f_base) in enumerate(velocities(agent.network)):
        sigma = SIGMAS_T10[i]
        total += np.sum(((2 / sigma) * np.asarray(f_theta - f_base) + sigma * np.asarray(adjoints[i])) ** 2)
    np.testing.assert_allclose(info['actor/adjoint_matching_loss'], total / 16, rtol=2e-3)
    np.testing.assert_allclose(loss, info['actor/adjoint_matching_loss'] + info['actor/bc_flow_loss'], rtol=1e-6)


def test_qam_f_loss_matches_direct_computation():
    agent = create(fql_alpha=3.0)
    observations = jax.random.normal(jax.random.PRNGKey(0), (16, O))
    noises = jax.random.normal(jax.random.PRNGKey(1), (16, D))
    params = agent.network.trainable_params
    loss_fn = jax.jit(lambda agent, p: agent.one_step_loss(observations, noises, p))
    loss, info = loss_fn(agent, params)
    flow_actions = euler_loop(agent.network.select('finetuned_flow'), observations, noises)
    mu = np.asarray(agent.network.apply('one_step_actor', observations, noises))
    q = np.asarray(agent.network.apply('critic', observations, np.clip(mu, -1, 1))).mean(0)
    np.testing.assert_allclose(loss, -q.mean() + 3.0 * np.mean((mu - flow_actions) ** 2), rtol=1e-4)
    np.testing.assert_allclose(info['actor/distill_loss'], np.mean((mu - flow_actions) ** 2), rtol=1e-4)
    grads = jax.jit(jax.grad(lambda p: loss_fn(agent, p)[0]))(params)  # only the one-step actor is trained
    assert global_norm(grads['one_step_actor']) > 0
    for name in ('critic', 'finetuned_flow', 'behavior_flow'):
        assert global_norm(grads[name]) == 0


def test_qam_e_loss_matches_direct_computation():
    agent = create(edit_scale=0.3)
    agent = with_params(agent, 'edit_alpha', {'log_value': jnp.float32(np.log(0.7))})
    observations = jax.random.normal(jax.random.PRNGKey(0), (16, O))
    noises = jax.random.normal(jax.random.PRNGKey(1), (16, D))
    key = jax.random.PRNGKey(2)
    params = agent.network.trainable_params
    loss_fn = jax.jit(lambda agent, p: agent.edit_loss(observations, noises, key, p))
    loss, info = loss_fn(agent, params)

    flow_actions = euler_loop(agent.network.select('finetuned_flow'), observations, noises)
    means, log_stds = (np.asarray(a, np.float64) for a in agent.network.apply('edit_actor', observations, flow_actions))
    u = means + np.exp(log_stds) * np.asarray(jax.random.normal(key, means.shape), np.float64)
    log_probs = np.sum(-0.5 * ((u - means) / np.exp(log_stds)) ** 2 - log_stds - 0.5 * np.log(2 * np.pi)
                       + 2 * (np.logaddexp(u, -u) - np.log(2)), axis=-1)
    edited = np.clip(flow_actions + 0.3 * np.tanh(u), -1, 1)
    q = np.asarray(agent.network.apply('critic', observations, edited.astype(np.float32))).mean(0)
    alpha, target = 0.7, -0.5 * D
    expected = -q.mean() + log_probs.mean() * alpha + alpha * (-log_probs.mean() - target)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(info['actor/edit_alpha'], alpha, rtol=1e-6)
    np.testing.assert_allclose(info['actor/edit_entropy'], -log_probs.mean(), rtol=1e-4)
    grads = jax.jit(jax.grad(lambda p: loss_fn(agent, p)[0]))(params)
    # The temperature gets only the temperature loss: d/dℓ [α·(−mean lp − H)] = α·(−mean lp − H).
    np.testing.assert_allclose(grads['edit_alpha']['log_value'], alpha * (-log_probs.mean() - target), rtol=1e-4)
    assert global_norm(grads['edit_actor']) > 0
    for name in ('critic', 'finetuned_flow', 'behavior_flow'):
        assert global_norm(grads[name]) == 0


# -------------------------------------------------------------------------------- update and targets
@pytest.mark.parametrize('variant', [{}, {'fql_alpha': 3.0}, {'edit_scale': 0.3}])
def test_update_compiles_once_is_finite_and_moves_targets_exactly(variant):
    agent = create(**variant)
    batch = make_batch(jax.random.PRNGKey(0))
    traces_before, cache_before = len(UPDATE_TRACES), update._cache_size()
    new_agent, info = update(agent, batch)
    newer_agent, _ = update(new_agent, make_batch(jax.random.PRNGKey(1)))
    # At most one trace and compilation for this config (none if an earlier test compiled it); none on the 2nd call.
    assert len(UPDATE_TRACES) - traces_before == update._cache_size() - cache_before <= 1
    _, _ = update(newer_agent, batch)
    assert len(UPDATE_TRACES) - traces_before == update._cache_size() - cache_before <= 1
    assert {'critic/critic_loss', 'critic/q_mean', 'critic/q_max', 'critic/q_min', 'actor/bc_flow_loss',
            'actor/adjoint_matching_loss', 'grad/norm'} <= set(info)
    if 'edit_scale' in variant:
        assert {'actor/edit_alpha', 'actor/edit_entropy', 'actor/edit_loss'} <= set(info)
        assert new_agent.network.params['edit_alpha']['log_value'].dtype == jnp.float32
    if 'fql_alpha' in variant:
        assert 'actor/one_step_loss' in info
    assert all(np.isfinite(np.asarray(value)).all() for value in info.values())
    assert int(newer_agent.network.step) == 2 and newer_agent.network.step.dtype == jnp.int32
    assert not np.array_equal(newer_agent.rng, agent.rng)

    old, new = agent.network.params, new_agent.network.params
    assert set(old) == {'critic', 'target_critic', 'behavior_flow', 'target_behavior_flow', 'finetuned_flow'} | (
        {'one_step_actor'} if 'fql_alpha' in variant else set()) | (
        {'edit_actor', 'edit_alpha'} if 'edit_scale' in variant else set())
    for target, online in [('target_critic', 'critic'), ('target_behavior_flow', 'behavior_flow')]:
        for t_old, o_new, t_new in zip(jax.tree.leaves(old[target]), jax.tree.leaves(new[online]),
                                       jax.tree.leaves(new[target])):
            t_old, o_new = np.asarray(t_old, np.float64), np.asarray(o_new, np.float64)
            np.testing.assert_allclose(t_new, t_old + 0.005 * (o_new - t_old), rtol=2e-7, atol=1e-9)
        assert not np.allclose(jax.tree.leaves(new[online])[0], jax.tree.leaves(old[online])[0])
    if variant:
        return
    # grad/norm is the true global norm of the total-loss gradient (before clipping).
    _, loss_key = jax.random.split(agent.rng)
    grads = jax.jit(jax.grad(lambda p: agent.total_loss(batch, p, loss_key)[0]))(agent.network.trainable_params)
    np.testing.assert_allclose(info['grad/norm'], global_norm(grads), rtol=1e-4)


def test_fused_updates_match_sequential_updates(agent):
    """tests/batches.py: scan of updates = sequential updates (mean info), vmapped over two seeds."""
    batches = jax.tree.map(lambda *x: jnp.stack(x), *[make_batch(jax.random.PRNGKey(i)) for i in range(3)])
    assert_fused_updates_match_sequential_updates(agent, create(seed=1), batches, update)


@pytest.mark.parametrize('overrides', [
    {'residual': True, 'target_actor': False, 'use_target_grad': False, 'clip_adj': False, 'clip_grad': False},
    {'flow_steps': 1, 'action_chunking': False}])
def test_other_options_update_finite(overrides):
    agent = create(**overrides)
    new_agent, info = update(agent, make_batch(jax.random.PRNGKey(0)))
    assert all(np.isfinite(np.asarray(value)).all() for value in info.values())
    size = A if not agent.config.action_chunking else D
    assert new_agent.sample_actions(jnp.zeros(O), jax.random.PRNGKey(0)).shape == (size,)


# ---------------------------------------------------------------------------------------------- acting
@pytest.mark.parametrize('overrides', [{}, {'inv_temp': 0.0}, {'fql_alpha': 3.0}, {'edit_scale': 0.3},
                                       {'best_of_n': 4}])
def test_sample_actions_shapes_and_range(overrides):
    agent = create(**overrides)
    if 'fql_alpha' in overrides:  # a freshly initialised one-step actor's outputs are small: enlarge them
        params = agent.network.params['one_step_actor']
        agent = with_params(agent, 'one_step_actor', {'MLP_0': {**params['MLP_0'], 'Dense_2': jax.tree.map(
            lambda p: 50 * p, params['MLP_0']['Dense_2'])}})
    key = jax.random.PRNGKey(3)
    single = sample(agent, jnp.ones(O), key)
    batch = sample(agent, jax.random.normal(key, (7, O)) * 3, key)
    assert single.shape == (D,) and batch.shape == (7, D)
    many = np.asarray(sample(agent, jnp.zeros((200, O)), key))
    assert np.abs(many).max() <= 1.0 and np.abs(batch).max() <= 1.0
    assert np.mean(np.abs(many) == 1.0) > 0.01  # unclipped samples would leave [−1, 1]: the clip is active
    if not overrides or overrides == {'inv_temp': 0.0}:  # the ODE of f_θ, or of the BC flow when inv_temp = 0
        observations = jax.random.normal(key, (7, O)) * 3
        noise_key, _ = jax.random.split(key)
        name = 'behavior_flow' if overrides else 'finetuned_flow'
        expected = euler_loop(agent.network.select(name), observations, jax.random.normal(noise_key, (7, D)))
        np.testing.assert_allclose(batch, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- config
def test_create_accepts_both_example_shapes_and_rejects_invalid_configs():
    a = qam.Agent.create(0, np.zeros((1, O)), np.zeros((1, A)), small_config())
    b = create()
    for x, y in zip(jax.tree.leaves(a.network.params), jax.tree.leaves(b.network.params)):
        np.testing.assert_array_equal(x, y)
    assert a.config.ob_dims == O and a.config.action_dim == A
    with pytest.raises(ValueError, match='At most one of fql_alpha'):
        create(fql_alpha=1.0, edit_scale=0.1)
    with pytest.raises(ValueError):
        create(fql_alpha=-1.0)
    with pytest.raises(ValueError):
        create(flow_steps=0)


def test_get_config_defaults():
    config = qam.get_config()
    assert config.agent_name == 'qam' and config.horizon_length == 5 and config.action_chunking is True
    assert config.batch_size == 256 and tuple(config.actor_hidden_dims) == (512,) * 4
    assert tuple(config.value_hidden_dims) == (512,) * 4 and config.num_qs == 10 and config.flow_steps == 10
    assert config.inv_temp == 0.3 and config.fql_alpha == 0.0 and config.edit_scale == 0.0 and config.clip_grad


# ------------------------------------------------------------------------------------------- learning
def test_bandit_qam_variants_prefer_high_reward_mode_over_behaviour_cloning():
    """300 updates. BC (the same run's behaviour flow, i.e. the inv_temp = 0 policy) samples both modes about
    equally (asserted within [0.35, 0.65]); QAM, QAM-F and QAM-E (inv_temp = 10) must put at least 85% of
    their samples in the high-reward mode and beat BC by at least 0.3."""
    trained = bandit.train(qam, {'inv_temp': 10.0}, num_updates=300)
    bc = bandit.agent_high_mode_fraction(with_config(trained, inv_temp=0.0))
    assert 0.35 <= bc <= 0.65
    fractions = {'qam': bandit.agent_high_mode_fraction(trained)}
    for name, variant in [('qam-f', {'fql_alpha': 1.0}), ('qam-e', {'edit_scale': 0.3})]:
        fractions[name] = bandit.high_mode_fraction(qam, {'inv_temp': 10.0, **variant}, num_updates=300)
    for name, fraction in fractions.items():
        assert fraction >= 0.85 and fraction >= bc + 0.3, (name, fraction, bc)
