"""Flow-matching machinery shared by the flow agents (ALGORITHMS §1.5, §1.10, §2.3).

Conventions: x_0 ~ N(0, I) is noise, x_1 the data (a flat action chunk), x_t = (1 − t)·x_0 + t·x_1. A
velocity function is any callable `velocity_fn(observations, x, times)` with times of shape (*batch, 1),
e.g. `functools.partial(train_state.apply, 'behavior_flow')`.

* `step_time`, `time_grid`: the times t_i = i·h (h = 1/T) of every T-step discretisation (ODE, SDE, adjoint,
  matching loss), for one step index inside a scan or for all T at once.
* `euler_ode`: deterministic T-step Euler sampler (time input t_i, one clip at the end).
* `bc_flow_loss`: the valid-weighted behaviour-cloning flow-matching loss.
* `best_of_n`: draw N candidate actions per observation and keep the critic's favourite.
* Memoryless SDE and lean adjoint (QAM; the σ schedule and SDE step are shared with BAM):
  `memoryless_sigmas`, `memoryless_sde_step`, `sde_noises`, `memoryless_sde`, `lean_adjoint`,
  `adjoint_matching_loss`.
* `memoryless_sde_rollout` (BAM): the same SDE, differentiable end to end, with its running control cost.
"""

import jax
import jax.numpy as jnp


def _times(x, t):
    """The scalar time t broadcast to shape (*batch, 1) of the state x."""
    return jnp.full((*x.shape[:-1], 1), t, dtype=x.dtype)


def step_time(step, num_steps, dtype=jnp.float32):
    """t_i = i·h, h = 1/T, for step index (or indices) i, in `dtype`: the one time grid of the Euler ODE, the memoryless
    SDE, the lean adjoint (which evaluates at t_i + h) and the adjoint-matching loss (ALGORITHMS §1.5, §2.3).
    Computed where it is used, inside each scan, so that XLA compiles t_i + h the same way everywhere."""
    return jnp.asarray(step).astype(dtype) * (1.0 / num_steps)


def time_grid(num_steps, dtype=jnp.float32):
    """t_0 … t_{T−1} of `step_time` (shape (T,))."""
    return step_time(jnp.arange(num_steps), num_steps, dtype)


def euler_ode(velocity_fn, observations, noises, num_steps, clip=True):
    """x = z; x ← x + v(s, x, t_i)/T for i = 0 … T−1; return clip(x) (clip once, at the end, if `clip`).

    Differentiable (a `lax.scan`), so FBRAC can backpropagate through it."""

    def step(x, i):
        return x + velocity_fn(observations, x, _times(x, step_time(i, num_steps, x.dtype))) / num_steps, None

    x, _ = jax.lax.scan(step, noises, jnp.arange(num_steps))
    return jnp.clip(x, -1.0, 1.0) if clip else x


def bc_flow_loss(velocity_fn, observations, actions, valid, rng):
    """(1/B) Σ_b w_b · (1/D) Σ_d (v(s, x_t, t) − (x_1 − x_0))², x_0 ~ N(0, I), t ~ U[0, 1] per sample.

    observations (B, O), actions = x_1 (B, D) flat chunks, valid = w (B,)."""
    noise_key, time_key = jax.random.split(rng)
    x0 = jax.random.normal(noise_key, actions.shape, actions.dtype)
    t = jax.random.uniform(time_key, (*actions.shape[:-1], 1), actions.dtype)
    x_t = (1.0 - t) * x0 + t * actions
    per_sample = jnp.mean((velocity_fn(observations, x_t, t) - (actions - x0)) ** 2, axis=-1)
    return jnp.mean(valid * per_sample)


def best_of_n(sample_fn, score_fn, observations, rng, num_samples):
    """Per observation, the highest-scoring of `num_samples` candidates (§1.10); N = 1 is the identity.

    sample_fn(observations, key) → actions (*batch, D); score_fn(observations, actions) → (*batch,) (e.g. the
    online critic's ensemble mean)."""
    if num_samples == 1:
        return sample_fn(observations, rng)
    keys = jax.random.split(rng, num_samples)
    candidates = jax.vmap(lambda key: sample_fn(observations, key))(keys)  # (N, *batch, D)
    scores = jax.vmap(lambda actions: score_fn(observations, actions))(candidates)  # (N, *batch)
    best = jnp.argmax(scores, axis=0)  # (*batch,)
    return jnp.take_along_axis(candidates, best[None, ..., None], axis=0)[0]


# ------------------------------------------------------------------------- memoryless SDE, lean adjoint
def memoryless_sigmas(num_steps):
    """σ_i = sqrt(2·(1 − t_i + h)/(t_i + h)), t_i = i/T (`time_grid`), h = 1/T, i = 0 … T−1 (float32, shape (T,))."""
    h = 1.0 / num_steps
    t = time_grid(num_steps)
    return jnp.sqrt(2.0 * (1.0 - t + h) / (t + h))


def memoryless_sde_step(x, velocity, t, sigma, noise, num_steps):
    """One Euler–Maruyama step x + h·(2v − x/(t + h)) + sqrt(h)·σ·ε of the memoryless SDE (h = 1/T)."""
    h = 1.0 / num_steps
    return x + h * (2.0 * velocity - x / (t + h)) + jnp.sqrt(h) * sigma * noise


def sde_noises(rng, initial_noise, num_steps):
    """ε_i ~ N(0, I) shaped like x[0] for the SDE steps i = 0 … T−2, each drawn from its own split of `rng` (the
    split the steps would make one at a time). Drawn together before the scan: XLA:CPU runs threefry as a rolled
    loop, whose fixed cost per draw made a draw per step a large share of a small network's SDE."""
    keys = jax.random.split(rng, num_steps - 1)
    return jax.vmap(lambda key: jax.random.normal(key, initial_noise.shape, initial_noise.dtype))(keys)


def memoryless_sde(velocity_fn, base_velocity_fn, observations, initial_noise, rng, num_steps):
    """Forward memoryless SDE (§2.3): T − 1 stochastic steps driven by `velocity_fn`, then one deterministic
    Euler step of the base flow.

    initial_noise: x[0] (*batch, D); rng: split into one independent key per SDE step.
    Returns (states x[0 … T−1] of shape (T, *batch, D), final state x[T] of shape (*batch, D))."""
    h = 1.0 / num_steps
    sigmas = memoryless_sigmas(num_steps)

    def step(x, inputs):
        i, noise = inputs
        t = step_time(i, num_steps, x.dtype)
        x_next = memoryless_sde_step(x, velocity_fn(observations, x, _times(x, t)), t, sigmas[i], noise, num_steps)
        return x_next, x

    noises = sde_noises(rng, initial_noise, num_steps)
    x_last, states = jax.lax.scan(step, initial_noise, (jnp.arange(num_steps - 1), noises))
    states = jnp.concatenate([states, x_last[None]], axis=0)
    t_last = step_time(num_steps - 1, num_steps, x_last.dtype)
    x_final = x_last + h * base_velocity_fn(observations, x_last, _times(x_last, t_last))
    return states, x_final


def lean_adjoint(base_velocity_fn, observations, states, terminal_adjoint, num_steps):
    """Lean adjoint (§2.3), base drift only: g[i] = g[i+1] + h·J_{b_i}(x[i])ᵀ g[i+1] for i = T−1 … 0, with
    b_i(x) = 2·f_base(s, x, t_i + h) − x/(t_i + h) (one vector–Jacobian product per step).

    states: x[0 … T−1] (T, *batch, D); terminal_adjoint: g[T] (*batch, D). Returns g[0 … T−1] (T, *batch, D).
    The VJP of a batched drift is per sample because the drift of one sample does not depend on another."""
    h = 1.0 / num_steps

    def step(g, inputs):
        i, x = inputs
        t = step_time(i, num_steps, x.dtype) + h  # the VJP at x[i] takes the time argument t_i + h (KEEP, §2.3)

        def drift(y):
            return 2.0 * base_velocity_fn(observations, y, _times(y, t)) - y / t

        _, vjp = jax.vjp(drift, x)
        g = g + h * vjp(g)[0]
        return g, g

    _, adjoints = jax.lax.scan(step, terminal_adjoint, (jnp.arange(num_steps), states), reverse=True)
    return adjoints


def adjoint_matching_loss(controls, adjoints, sigmas):
    """(1/B) Σ_b Σ_i Σ_d [(2/σ_i)·u[i] + σ_i·g[i]]², u = f_θ − f_base (the control), shapes (T, B, D).

    No valid mask and no factor h (KEEP, §2.4); zero iff u[i] = −(σ_i²/2)·g[i]."""
    sigmas = sigmas.reshape((-1,) + (1,) * (controls.ndim - 1))
    residuals = (2.0 / sigmas) * controls + sigmas * adjoints
    return jnp.mean(jnp.sum(residuals**2, axis=(0, -1)))


def memoryless_sde_rollout(velocity_fn, base_velocity_fn, observations, initial_noise, rng, num_steps,
                           residual=False):
    """Forward memoryless SDE with its running control cost, differentiable end to end (BAM, ALGORITHMS §3).

    The discretisation and the keys are those of `memoryless_sde` (T − 1 stochastic steps, `rng` split into one
    key per step, then one deterministic Euler step of the base flow), but gradients flow through every step,
    into `velocity_fn` and through the state inputs of `base_velocity_fn`. Along the way it accumulates the
    per-sample cost C = Σ_{i=0}^{T−2} (2/σ_i²)·Σ_d u_i,d² of the control u_i = v_i − f_base(s, x[i], t_i), where
    v_i = velocity_fn(s, x[i], t_i) drives the SDE; with `residual` the SDE is driven by v_i = velocity_fn + f_base
    and the control is velocity_fn itself. No factor h and no cost for the last step (KEEP).

    Returns (x[T] of shape (*batch, D), C of shape (*batch,))."""
    h = 1.0 / num_steps
    sigmas = memoryless_sigmas(num_steps)

    def step(carry, inputs):
        x, cost = carry
        i, noise = inputs
        t = step_time(i, num_steps, x.dtype)
        base = base_velocity_fn(observations, x, _times(x, t))
        velocity = velocity_fn(observations, x, _times(x, t))
        control = velocity if residual else velocity - base
        velocity = velocity + base if residual else velocity
        cost = cost + (2.0 / sigmas[i] ** 2) * jnp.sum(control**2, axis=-1)
        return (memoryless_sde_step(x, velocity, t, sigmas[i], noise, num_steps), cost), None

    initial_cost = jnp.zeros(initial_noise.shape[:-1], initial_noise.dtype)
    noises = sde_noises(rng, initial_noise, num_steps)
    (x_last, cost), _ = jax.lax.scan(step, (initial_noise, initial_cost), (jnp.arange(num_steps - 1), noises))
    t_last = step_time(num_steps - 1, num_steps, x_last.dtype)
    return x_last + h * base_velocity_fn(observations, x_last, _times(x_last, t_last)), cost
