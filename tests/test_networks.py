"""Shared networks (utils/networks.py), flow helpers (utils/flow.py) and RL helpers (utils/rl.py), each checked
against an independent computation (closed forms, numpy float64, loops written here)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from utils import flow, rl
from utils.networks import MLP, CriticEnsemble, LogParam, TanhGaussianPolicy, ValueNetwork, VelocityField

FULL = (512, 512, 512, 512)


def _np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _np_mlp(params, x, num_layers, activate_final, layer_norm):
    """Reference forward pass in float64: Dense → GELU(tanh) → LayerNorm(eps 1e-6, post-activation)."""
    for i in range(num_layers):
        dense = params[f'Dense_{i}']
        x = x @ np.asarray(dense['kernel'], np.float64) + np.asarray(dense['bias'], np.float64)
        if i + 1 < num_layers or activate_final:
            x = _np_gelu_tanh(x)
            if layer_norm:
                ln = params[f'LayerNorm_{i}']
                mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
                x = (x - mean) / np.sqrt(var + 1e-6) * np.asarray(ln['scale']) + np.asarray(ln['bias'])
    return x


# ------------------------------------------------------------------------------------------ networks
def test_parameter_counts_at_full_size():
    obs, chunk = jnp.zeros((1, 45)), jnp.zeros((1, 25))
    key = jax.random.PRNGKey(0)
    critic = jax.eval_shape(lambda: rl.init_params(CriticEnsemble(FULL, num_qs=10), key, obs, chunk))
    flow_params = jax.eval_shape(lambda: rl.init_params(VelocityField(FULL, 25), key, obs, chunk, jnp.zeros((1, 1))))
    member = (70 * 512 + 512) + 3 * (512 * 512 + 512) + (512 + 1) + 4 * 2 * 512  # Dense layers + LayerNorms
    assert member == 828_929
    assert rl.num_params(critic) == 10 * 828_929
    assert rl.num_params(flow_params) == 837_657 == (71 * 512 + 512) + 3 * (512 * 512 + 512) + (512 * 25 + 25)
    one_step = jax.eval_shape(lambda: rl.init_params(VelocityField(FULL, 25), key, obs, chunk))
    assert rl.num_params(one_step) == 837_657 - 512  # no time input


def test_mlp_matches_numpy_forward_and_init():
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    for activate_final, layer_norm in [(False, True), (True, False), (True, True)]:
        module = MLP((16, 16, 3), activate_final=activate_final, layer_norm=layer_norm)
        params = rl.init_params(module, jax.random.PRNGKey(1), x)
        # Perturb LayerNorm scale/bias so that they matter in the comparison.
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: p + 0.1 if 'LayerNorm' in jax.tree_util.keystr(path) else p, params)
        expected = _np_mlp(params, x.astype(np.float64), 3, activate_final, layer_norm)
        np.testing.assert_allclose(module.apply({'params': params}, x), expected, rtol=1e-4, atol=1e-5)
    # Xavier-uniform kernels and zero biases.
    module = MLP((300, 200))
    params = rl.init_params(module, jax.random.PRNGKey(2), jnp.zeros((1, 100)))
    kernel = np.asarray(params['Dense_0']['kernel'])
    limit = np.sqrt(6.0 / (100 + 300))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
    np.testing.assert_allclose(kernel.std(), limit / np.sqrt(3.0), rtol=0.03)
    assert all(np.all(params[f'Dense_{i}']['bias'] == 0) for i in range(2))


def test_critic_ensemble_members_differ_and_shapes():
    module = CriticEnsemble((32, 32), num_qs=3)
    obs, act = jax.random.normal(jax.random.PRNGKey(0), (8, 5)), jax.random.normal(jax.random.PRNGKey(1), (8, 2))
    params = jax.jit(functools.partial(rl.init_params, module))(jax.random.PRNGKey(2), obs, act)
    q = jax.jit(module.apply)({'params': params}, obs, act)
    assert q.shape == (3, 8)
    assert module.apply({'params': params}, obs[0], act[0]).shape == (3,)
    kernels = np.asarray(params['members']['MLP_0']['Dense_0']['kernel'])
    assert kernels.shape == (3, 7, 32)
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    assert np.min(np.std(np.asarray(q), axis=0)) > 1e-4  # members give different outputs on every input
    # Member k equals a single MLP with member k's slice of the parameters.
    member_params = jax.tree.map(lambda p: p[1], params['members'])
    single = MLP((32, 32, 1), layer_norm=True).apply({'params': member_params['MLP_0']},
                                                     jnp.concatenate([obs, act], -1))
    np.testing.assert_allclose(q[1], single[:, 0], rtol=1e-5, atol=1e-6)
    value = ValueNetwork((32, 32))
    assert value.apply({'params': rl.init_params(value, jax.random.PRNGKey(3), obs)}, obs).shape == (8,)


def test_log_param_and_policy_head():
    log_param = LogParam(1.0)
    params = rl.init_params(log_param, jax.random.PRNGKey(0))
    assert params['log_value'].dtype == jnp.float32 and params['log_value'].shape == ()
    assert float(log_param.apply({'params': params})) == 1.0
    assert float(LogParam(2.5).apply({'params': rl.init_params(LogParam(2.5), jax.random.PRNGKey(0))})) == \
        pytest.approx(2.5, rel=1e-6)

    policy = TanhGaussianPolicy((16, 16), 3)
    x = jnp.ones((4, 5))
    params = rl.init_params(policy, jax.random.PRNGKey(1), x)
    params['log_std']['bias'] = jnp.array([100.0, -100.0, 0.0])
    means, log_stds = policy.apply({'params': params}, x)
    assert means.shape == log_stds.shape == (4, 3)
    np.testing.assert_array_equal(log_stds[:, 0], 2.0)
    np.testing.assert_array_equal(log_stds[:, 1], -20.0)
    # Trunk uses activate_final: the heads see a GELU output.
    trunk = _np_mlp(params['MLP_0'], np.ones((4, 5)), 2, True, False)
    np.testing.assert_allclose(means, trunk @ np.asarray(params['mean']['kernel']) + np.asarray(params['mean']['bias']),
                               rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------- tanh-Gaussian
def _np_tanh_gaussian_log_prob(u, mean, log_std):
    """float64: Σ_d log N(u; μ, σ) − log(1 − tanh²u), with log(1 − tanh²u) = −2·log cosh u."""
    u, mean, log_std = (np.asarray(a, np.float64) for a in (u, mean, log_std))
    gaussian = -0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    log_cosh = np.logaddexp(u, -u) - np.log(2.0)
    return np.sum(gaussian + 2.0 * log_cosh, axis=-1)


def test_tanh_gaussian_log_prob_against_float64():
    rng = np.random.default_rng(0)
    means = jnp.asarray(rng.normal(0, 2, (64, 4)), jnp.float32).at[0].set(12.0)  # row 0 saturates tanh
    log_stds = jnp.asarray(rng.uniform(-2, 0.5, (64, 4)), jnp.float32)
    key = jax.random.PRNGKey(3)
    actions, log_probs = rl.tanh_gaussian_sample(key, means, log_stds)
    pre_tanh = np.asarray(means, np.float64) + np.exp(np.asarray(log_stds, np.float64)) * np.asarray(
        jax.random.normal(key, means.shape), np.float64)
    np.testing.assert_allclose(actions, np.tanh(pre_tanh), atol=1e-6)
    expected = _np_tanh_gaussian_log_prob(pre_tanh, means, log_stds)
    assert np.all(np.isfinite(np.asarray(log_probs)))  # finite even where tanh(u) rounds to ±1
    np.testing.assert_allclose(log_probs, expected, rtol=2e-5, atol=2e-3)
    # Log-prob of given actions goes through atanh(clip(y, −1 + 1e-5, 1 − 1e-5)).
    given = jnp.asarray(rng.uniform(-0.99, 0.99, (64, 4)), jnp.float32).at[1, 0].set(1.0)
    clipped = np.clip(np.asarray(given, np.float64), -1 + 1e-5, 1 - 1e-5)
    expected = _np_tanh_gaussian_log_prob(np.arctanh(clipped), means, log_stds)
    np.testing.assert_allclose(rl.tanh_gaussian_log_prob(means, log_stds, given), expected, rtol=1e-4, atol=2e-3)


def test_temperature_loss_value_and_gradient_sign():
    log_probs = jnp.array([-1.0, -3.0])  # entropy estimate 2
    for target, sign in [(1.0, 1.0), (5.0, -1.0)]:  # entropy above target → α decreases, below → α increases
        grad = jax.grad(lambda log_alpha: rl.temperature_loss(jnp.exp(log_alpha), log_probs, target))(jnp.float32(0.3))
        np.testing.assert_allclose(grad, np.exp(0.3) * (2.0 - target), rtol=1e-6)
        assert np.sign(grad) == sign
    # No gradient reaches the log-probs (the policy) through the temperature loss.
    assert np.all(jax.grad(lambda lp: rl.temperature_loss(jnp.float32(2.0), lp, 1.0))(log_probs) == 0)
    assert rl.target_entropy(None, 0.5, 25) == -12.5 and rl.target_entropy(-3, 0.5, 25) == -3.0


# ---------------------------------------------------------------------------------------------- flow
def test_euler_ode_constant_field_and_time_grid():
    z = jax.random.normal(jax.random.PRNGKey(0), (16, 3)) * 0.8
    c = jnp.array([0.3, -0.7, 1.5])
    out = flow.euler_ode(lambda s, x, t: jnp.broadcast_to(c, x.shape), None, z, 10)
    np.testing.assert_allclose(out, np.clip(np.asarray(z) + np.asarray(c), -1, 1), atol=1e-6)
    # v = t: the sum of left endpoints Σ_i (i/T)/T = (T − 1)/(2T); the clip comes only at the end.
    out = flow.euler_ode(lambda s, x, t: jnp.broadcast_to(t, x.shape), None, jnp.zeros((2, 1)), 10, clip=False)
    np.testing.assert_allclose(out, 9 / 20, rtol=1e-6)
    out = flow.euler_ode(lambda s, x, t: 3 * jnp.ones_like(x) - 3 * (t > 0.5), None, jnp.zeros((1, 1)), 10)
    np.testing.assert_allclose(out, 1.0)  # would be 1.5 at i = 5 but clipping only once: min(1, 1.8) = 1


def test_bc_flow_loss_weights_and_denominator():
    rng = np.random.default_rng(0)
    actions = jnp.asarray(rng.uniform(-1, 1, (6, 4)), jnp.float32)
    observations = jnp.arange(6, dtype=jnp.float32)[:, None]  # row index
    valid = jnp.array([1, 0, 1, 1, 0, 1], jnp.float32)
    offsets = jnp.array([0.5, 2.0, -1.0, 0.0, 3.0, 0.25])

    def velocity(s, x_t, t):  # exact target velocity x_1 − x_0 = (x_1 − x_t)/(1 − t), plus a per-row offset
        return (actions - x_t) / (1.0 - t) + offsets[s[:, 0].astype(int), None]

    loss = flow.bc_flow_loss(velocity, observations, actions, valid, jax.random.PRNGKey(4))
    expected = np.sum(np.asarray(valid) * np.asarray(offsets) ** 2) / 6  # w = 0 rows stay in the denominator
    np.testing.assert_allclose(loss, expected, rtol=1e-3)


def test_best_of_n_picks_highest_score_per_observation():
    observations = jnp.zeros((5, 2))

    def sample(s, key):
        return jax.random.uniform(key, (*s.shape[:-1], 3), minval=-1, maxval=1)

    def score(s, a):
        return -jnp.sum((a - 0.2) ** 2, axis=-1)

    key = jax.random.PRNGKey(0)
    out = flow.best_of_n(sample, score, observations, key, 8)
    candidates = np.stack([np.asarray(sample(observations, k)) for k in jax.random.split(key, 8)])
    best = np.argmax(-np.sum((candidates - 0.2) ** 2, -1), axis=0)
    np.testing.assert_allclose(out, candidates[best, np.arange(5)])
    np.testing.assert_array_equal(flow.best_of_n(sample, score, observations, key, 1), sample(observations, key))
    assert flow.best_of_n(sample, score, observations[0], key, 4).shape == (3,)


# ---------------------------------------------------------------------------------------- TD learning
def test_td_target_hand_made_batch():
    next_q = jnp.array([[1.0, 0.0, 2.0], [3.0, 0.0, 6.0]])  # K = 2, B = 3
    rewards, masks = jnp.array([0.5, 1.0, -1.0]), jnp.array([1.0, 1.0, 0.0])
    rho, gamma, horizon = 0.5, 0.9, 2
    y = rl.td_target(next_q, rewards, masks, gamma, horizon, rho)
    # Column 0: Q' = (1, 3) → mean 2, population std 1, v' = 2 − ρ. Column 1: v' = 0. Column 2: mask 0.
    expected = [0.5 + 0.81 * (2.0 - rho), 1.0, -1.0]
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(rl.pessimistic_value(next_q, 1.0)[0], 1.0)


def test_pessimistic_value_gradient_is_finite_where_the_critics_tie():
    """Two members: v = (q1 + q2)/2 − ρ·|q1 − q2|/2, so ∂v/∂q1 = 1/2 − ρ·sign(q1 − q2)/2, and 1/2 at a tie (where
    jnp.std's gradient is NaN). The values equal jnp's mean − ρ·std bit for bit, ties included."""
    rho = 0.5
    q = jnp.array([[1.0, -20.0, 3.0, -7.25], [2.5, -20.0, 3.0, -9.0]])  # columns 1 and 2 tie
    grad = jax.grad(lambda q: rl.pessimistic_value(q, rho).sum())(q)
    sign = np.sign(np.asarray(q[0] - q[1]))
    np.testing.assert_allclose(grad[0], 0.5 - rho * sign / 2, rtol=1e-6)
    np.testing.assert_allclose(grad[1], 0.5 + rho * sign / 2, rtol=1e-6)
    q = jax.random.normal(jax.random.PRNGKey(0), (10, 64)) * 30.0
    q = q.at[:, 0].set(-4.0)  # all ten tie
    np.testing.assert_array_equal(rl.pessimistic_value(q, rho), jnp.mean(q, 0) - rho * jnp.std(q, 0))
    grad = jax.grad(lambda q: rl.pessimistic_value(q, rho).sum())(q)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_allclose(grad[:, 0], 0.1, rtol=1e-6)
    # Elsewhere the gradient is jnp.std's: (1/K) − ρ·(q_k − mean)/(K·std).
    centred = np.asarray(q[:, 1:], np.float64) - np.asarray(q[:, 1:], np.float64).mean(0)
    expected = 0.1 - rho * centred / (10 * np.sqrt((centred**2).mean(0)))
    np.testing.assert_allclose(grad[:, 1:], expected, rtol=1e-4, atol=1e-6)


def test_critic_loss_denominator_is_k_times_b():
    q = np.array([[1.0, 2.0, 0.0, 4.0], [0.0, 2.5, 1.0, 3.0], [2.0, 2.0, 5.0, 3.5]])  # K = 3, B = 4
    y = np.array([1.0, 2.0, 3.0, 3.0])
    w = np.array([1.0, 1.0, 0.0, 1.0])
    total = sum(w[b] * (q[k, b] - y[b]) ** 2 for k in range(3) for b in range(4))
    np.testing.assert_allclose(rl.critic_loss(jnp.asarray(q), jnp.asarray(y), jnp.asarray(w)), total / 12, rtol=1e-6)


# -------------------------------------------------------------------------- optimizer and train state
def test_global_norm_clipping_matches_direct_computation():
    grads = {'a': jnp.array([3.0, -4.0]), 'b': {'c': jnp.array([[12.0]])}}  # global norm 13
    params = jax.tree.map(jnp.zeros_like, grads)
    for clip, scale in [(None, 1.0), (1.0, 1.0 / 13.0), (100.0, 1.0)]:
        tx = rl.make_optimizer(lr=3e-4, clip_grad_norm=clip)
        updates, _ = tx.update(grads, tx.init(params), params)
        direct = optax.adam(3e-4).update(optax.clip_by_global_norm(clip).update(grads, None)[0] if clip else grads,
                                         optax.adam(3e-4).init(params))[0]
        for leaf, direct_leaf, grad in zip(jax.tree.leaves(updates), jax.tree.leaves(direct), jax.tree.leaves(grads)):
            g = np.asarray(grad) * scale  # first Adam step: −lr·ĝ/(|ĝ| + ε) with ĝ the clipped gradient
            np.testing.assert_allclose(leaf, -3e-4 * g / (np.abs(g) + 1e-8), rtol=1e-5)
            np.testing.assert_allclose(leaf, direct_leaf, rtol=1e-6)
    # With clipping at 1, the clipped gradient has norm 1.
    clipped, _ = optax.clip_by_global_norm(1.0).update(grads, None)
    np.testing.assert_allclose(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(clipped))), 1.0, rtol=1e-6)


def _small_state(clip=None):
    critic = CriticEnsemble((8, 8), num_qs=2)
    actor = VelocityField((8,), 2)
    obs, act, t = jnp.ones((1, 3)), jnp.ones((1, 2)), jnp.ones((1, 1))
    params = {'critic': rl.init_params(critic, jax.random.PRNGKey(0), obs, act),
              'actor': rl.init_params(actor, jax.random.PRNGKey(1), obs, act, t)}
    return rl.TrainState.create({'critic': critic, 'actor': actor}, params, rl.make_optimizer(1e-2, clip),
                                targets={'target_critic': 'critic'})


def test_train_state_targets_are_not_optimized_and_polyak_is_exact():
    state = _small_state(clip=1.0)
    assert state.trainable_names == ('actor', 'critic')
    assert set(state.params) == {'actor', 'critic', 'target_critic'}
    for a, b in zip(jax.tree.leaves(state.params['critic']), jax.tree.leaves(state.params['target_critic'])):
        np.testing.assert_array_equal(a, b)  # the target starts as an exact copy
    obs, act, t = jnp.ones((4, 3)), jnp.zeros((4, 2)), jnp.zeros((4, 1))

    def loss(grad_params):
        q = state.apply('critic', obs, act, params=grad_params['critic'])
        v = state.apply('actor', obs, act, t, params=grad_params['actor'])
        target = state.apply('target_critic', obs, act)  # fixed call
        return jnp.sum((q - 1.0) ** 2) + jnp.sum(v**2) + jnp.sum(target)

    grads = jax.jit(jax.grad(loss))(state.trainable_params)
    grads_with_target = {**grads, 'target_critic': jax.tree.map(jnp.ones_like, state.params['target_critic'])}
    new_state, grad_norm = jax.jit(type(state).apply_gradients)(state, grads_with_target)  # target entry ignored
    np.testing.assert_allclose(grad_norm, np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads))),
                               rtol=1e-5)
    assert int(new_state.step) == 1 and new_state.step.dtype == jnp.int32
    for a, b in zip(jax.tree.leaves(state.params['target_critic']), jax.tree.leaves(new_state.params['target_critic'])):
        np.testing.assert_array_equal(a, b)  # the optimizer never touches targets
    assert not np.allclose(jax.tree.leaves(new_state.params['critic'])[0], jax.tree.leaves(state.params['critic'])[0])
    # Polyak: the target moves by exactly λ·(online_new − target_old).
    tau = 0.05
    updated = jax.jit(type(state).update_targets, static_argnums=1)(new_state, tau)
    for old, online, new in zip(jax.tree.leaves(state.params['target_critic']),
                                jax.tree.leaves(new_state.params['critic']),
                                jax.tree.leaves(updated.params['target_critic'])):
        old, online = np.asarray(old, np.float64), np.asarray(online, np.float64)
        np.testing.assert_allclose(new, old + tau * (online - old), rtol=2e-7, atol=1e-9)  # float32 rounding only
    # Stored vs given parameters.
    np.testing.assert_array_equal(updated.apply('critic', obs, act),
                                  updated.apply('critic', obs, act, params=updated.params['critic']))
    select = updated.select('actor')
    np.testing.assert_array_equal(select(obs, act, t), updated.apply('actor', obs, act, t))


def test_train_state_compiles_once_under_jit():
    state = _small_state()
    obs, act = jnp.ones((4, 3)), jnp.zeros((4, 2))

    @jax.jit
    def step(state):
        grads = jax.grad(lambda p: jnp.sum(state.apply('critic', obs, act, params=p['critic']) ** 2)
                         + jnp.sum(state.apply('actor', obs, act, jnp.zeros((4, 1)), params=p['actor']) ** 2))(
            state.trainable_params)
        state, norm = state.apply_gradients(grads)
        return state.update_targets(0.005), norm

    for _ in range(3):
        state, _ = step(state)
    assert step._cache_size() == 1


def test_partial_velocity_function_usable_with_flow_helpers():
    state = _small_state()
    velocity = functools.partial(state.apply, 'actor')
    out = flow.euler_ode(velocity, jnp.ones((5, 3)), jnp.zeros((5, 2)), 4)
    assert out.shape == (5, 2) and np.all(np.abs(np.asarray(out)) <= 1)
