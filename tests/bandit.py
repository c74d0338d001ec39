"""A one-step bandit with a known answer, reusable by every agent's learning test.

The observation is constant, H = 1, and the behaviour data has two well-separated action modes in equal
proportion: every action dimension near +0.5 (reward 1) or every dimension near −0.5 (reward 0), with tiny
Gaussian noise. Every transition is terminal (bootstrap_mask 0, valid 1), so Q(s, a) = r. Behaviour cloning puts
half of its samples in each mode; a policy improved with the critic should prefer the +0.5 mode.

    fraction = high_mode_fraction(agent_module, {'inv_temp': 3.0}, num_updates=300)
    agent = train(agent_module, {'inv_temp': 3.0})  # or in two steps
    fraction = agent_high_mode_fraction(agent)

`high_mode_fraction` trains `agent_module.Agent` (created from `agent_module.get_config()` updated with
small networks and the given overrides) for `num_updates` updates on batches drawn uniformly from the
dataset, with the update loop jitted as one `lax.scan`, and returns the fraction of sampled actions whose
mean over dimensions is positive (i.e. closer to the high-reward mode). `train` and
`agent_high_mode_fraction` are its two halves (e.g. to also score a trained agent's BC policy).
"""

import jax
import jax.numpy as jnp
import numpy as np

OBS_DIM = 4
ACTION_DIM = 2
HIGH_MODE, LOW_MODE = 0.5, -0.5

# Small, fast settings shared by every agent's bandit test (keys an agent lacks are skipped).
SMALL_CONFIG = dict(
    actor_hidden_dims=(64, 64),
    value_hidden_dims=(64, 64),
    num_qs=2,
    horizon_length=1,
    action_chunking=True,
    batch_size=64,
)


def make_dataset(num_samples=1024, noise=0.05, seed=0):
    """The bandit data in the sampler's batch format (utils/datasets.py) with H = 1; exactly half per mode."""
    rng = np.random.default_rng(seed)
    high = np.arange(num_samples) % 2 == 0
    centres = np.where(high, HIGH_MODE, LOW_MODE)[:, None]
    actions = np.clip(centres + noise * rng.standard_normal((num_samples, ACTION_DIM)), -1, 1)
    observations = np.full((num_samples, OBS_DIM), 0.5)
    rewards = high.astype(np.float64)
    data = dict(
        observations=observations,
        actions=actions[:, None, :],
        chunk_return=rewards,
        bootstrap_mask=np.zeros(num_samples),
        valid=np.ones(num_samples),
        next_observation=observations,
    )
    return {key: jnp.asarray(value, jnp.float32) for key, value in data.items()}


def sample_batch(dataset, key, batch_size):
    indices = jax.random.randint(key, (batch_size,), 0, dataset['observations'].shape[0])
    return jax.tree.map(lambda x: x[indices], dataset)


def make_config(agent_module, overrides=None):
    """The agent's default config with SMALL_CONFIG (where the agent has the key) and `overrides` applied."""
    config = agent_module.get_config()
    for key, value in SMALL_CONFIG.items():
        if key in config:
            config[key] = value
    for key, value in (overrides or {}).items():
        config[key] = value
    return config


def train(agent_module, overrides=None, num_updates=300, seed=0):
    """An agent trained for `num_updates` updates on the bandit data (one jitted scan)."""
    config = make_config(agent_module, overrides)
    dataset = make_dataset(seed=seed)
    agent = agent_module.Agent.create(seed, dataset['observations'][0], dataset['actions'][0, 0], config)

    @jax.jit
    def run(agent, key):
        def body(agent, key):
            agent, _ = agent.update(sample_batch(dataset, key, config.batch_size))
            return agent, None

        agent, _ = jax.lax.scan(body, agent, jax.random.split(key, num_updates))
        return agent

    return run(agent, jax.random.PRNGKey(seed + 1))


def agent_high_mode_fraction(agent, seed=0, num_samples=512):
    """Fraction of `num_samples` actions sampled by a (trained) agent that fall in the high-reward mode."""
    observations = jnp.full((num_samples, OBS_DIM), 0.5, jnp.float32)
    actions = jax.jit(lambda agent, s, key: agent.sample_actions(s, key))(agent, observations,
                                                                         jax.random.PRNGKey(seed + 2))
    return float(jnp.mean(jnp.mean(actions, axis=-1) > 0))


def high_mode_fraction(agent_module, overrides=None, num_updates=300, seed=0, num_samples=512):
    """Fraction of `num_samples` actions sampled after training that fall in the high-reward mode."""
    return agent_high_mode_fraction(train(agent_module, overrides, num_updates, seed), seed, num_samples)
