"""Chunk samplers against the PROTOCOL §5 worked example and a slow reference loop; the replay buffer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from utils import datasets


def reference_chunk(d, t, horizon, discount):
    """PROTOCOL §5 written as the step-by-step recursion, one start index at a time."""
    terminals, valid, rewards, masks, next_obs = [], [], [], [], []
    for i in range(horizon):
        c = t + i
        if i == 0:
            terminals.append(d['terminals'][t])
            valid.append(1.0)
            rewards.append(d['rewards'][t])
            masks.append(d['masks'][t])
            next_obs.append(d['next_observations'][t])
            continue
        terminals.append(max(terminals[-1], d['terminals'][c]))
        valid.append(1.0 - terminals[i - 1])
        rewards.append(rewards[-1] + discount**i * d['rewards'][c] * valid[i])
        masks.append(min(masks[-1], d['masks'][c]) if valid[i] else masks[-1])
        next_obs.append(d['next_observations'][c] if valid[i] else next_obs[-1])
    # The batch holds what the recursion reached at the chunk's last step.
    return dict(
        observations=d['observations'][t],
        actions=np.stack([d['actions'][t + i] for i in range(horizon)]),
        chunk_return=rewards[-1],
        bootstrap_mask=masks[-1],
        valid=valid[-1],
        next_observation=next_obs[-1],
    )


def random_dataset(rng, n=60, obs_dim=3, action_dim=2):
    terminals = (rng.random(n) < 0.2).astype(np.float32)  # many episode ends inside chunks
    terminals[-1] = 1.0
    return dict(
        observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, action_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        masks=(rng.random(n) < 0.7).astype(np.float32),
        terminals=terminals,
        next_observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
    )


def worked_example():
    n = 8
    return dict(
        observations=np.arange(n, dtype=np.float32)[:, None],
        actions=np.arange(n, dtype=np.float32)[:, None],
        rewards=-np.ones(n, np.float32),
        masks=np.array([1, 1, 0, 1, 1, 1, 1, 1], np.float32),
        terminals=np.array([0, 0, 0, 1, 0, 0, 0, 1], np.float32),
        next_observations=100 + np.arange(n, dtype=np.float32)[:, None],  # s'k = 100 + k
    )


# PROTOCOL §5 table: start -> (rewards, masks, valid, terminals, next-observation rows) at steps i = 0, 1, 2. A chunk of
# length h ends at step h - 1, so sampling with h = 1, 2, 3 reads every column of the table.
WORKED_TABLE = {
    0: ([-1, -1.9, -2.71], [1, 1, 0], [1, 1, 1], [0, 0, 0], [0, 1, 2]),
    1: ([-1, -1.9, -2.71], [1, 0, 0], [1, 1, 1], [0, 0, 1], [1, 2, 3]),
    2: ([-1, -1.9, -1.9], [0, 0, 0], [1, 1, 0], [0, 1, 1], [2, 3, 3]),
    3: ([-1, -1, -1], [1, 1, 1], [1, 0, 0], [1, 1, 1], [3, 3, 3]),
    4: ([-1, -1.9, -2.71], [1, 1, 1], [1, 1, 1], [0, 0, 0], [4, 5, 6]),
    5: ([-1, -1.9, -2.71], [1, 1, 1], [1, 1, 1], [0, 0, 1], [5, 6, 7]),
}


@pytest.mark.parametrize('backend', ['numpy', 'jax'])
@pytest.mark.parametrize('horizon', [1, 2, 3])
def test_worked_example(backend, horizon):
    data = worked_example()
    starts = np.arange(6)
    if backend == 'numpy':
        batch = datasets.sample_chunks_at_np(data, starts, horizon, 0.9)
    else:
        batch = jax.tree.map(np.asarray,
                             datasets.sample_chunks_at(datasets.to_device(data), jnp.asarray(starts), horizon, 0.9))
    end = horizon - 1
    for t, (rewards, masks, valid, _, next_rows) in WORKED_TABLE.items():
        np.testing.assert_allclose(batch['chunk_return'][t], rewards[end], atol=1e-6)
        assert batch['bootstrap_mask'][t] == masks[end]
        assert batch['valid'][t] == valid[end]
        assert batch['next_observation'][t, 0] == 100 + next_rows[end]
        np.testing.assert_array_equal(batch['actions'][t, :, 0], t + np.arange(horizon))
        assert batch['observations'][t, 0] == t


@pytest.mark.parametrize('horizon', [1, 4, 7])
def test_samplers_match_reference_loop(horizon):
    rng = np.random.default_rng(horizon)
    data = random_dataset(rng)
    discount = 0.97
    starts = np.arange(len(data['observations']) - horizon + 1)
    host = datasets.sample_chunks_at_np(data, starts, horizon, discount)
    device = jax.tree.map(
        np.asarray, jax.jit(datasets.sample_chunks_at, static_argnums=2)(datasets.to_device(data), starts, horizon, discount)
    )
    for row, t in enumerate(starts):
        expected = reference_chunk(data, t, horizon, discount)
        for key, value in expected.items():
            np.testing.assert_allclose(host[key][row], value, rtol=1e-5, atol=1e-6, err_msg=f'numpy {key} t={t}')
            np.testing.assert_allclose(device[key][row], value, rtol=1e-5, atol=1e-6, err_msg=f'jax {key} t={t}')
    if horizon == 1:
        np.testing.assert_array_equal(host['valid'], 1.0)


def test_random_starts_cover_range_and_shapes():
    data = random_dataset(np.random.default_rng(0), n=20, obs_dim=4, action_dim=3)
    host = datasets.sample_chunks_np(data, np.random.default_rng(1), 500, 5, 0.99)
    device = datasets.sample_chunks(datasets.to_device(data), jax.random.PRNGKey(0), 500, 5, 0.99)
    for batch in (host, device):
        assert batch['observations'].shape == (500, 4)
        assert batch['actions'].shape == (500, 5, 3)
        assert batch['next_observation'].shape == (500, 4)
        for key in ('chunk_return', 'bootstrap_mask', 'valid'):
            assert batch[key].shape == (500,)
        assert all(batch[k].dtype == np.float32 for k in batch)
        # Starts lie in {0..N-H}: every first observation is one of those rows, and all of them occur.
        first = np.asarray(batch['observations'])
        matches = (first[:, None, :] == data['observations'][None]).all(-1)
        rows = matches.argmax(1)
        assert rows.max() <= 15 and set(rows) == set(range(16))


def test_replay_buffer_behind_the_shared_dataset_samples_as_their_concatenation():
    rng = np.random.default_rng(3)
    offline = random_dataset(rng, n=30)
    online = random_dataset(rng, n=10)
    buffer = datasets.ReplayBuffer.create({k: online[k][0] for k in datasets.TRANSITION_KEYS}, capacity=15)
    assert int(buffer.size) == 0
    add = jax.jit(lambda b, tr: b.add(tr))
    for k in range(10):
        buffer = add(buffer, {key: online[key][k] for key in datasets.TRANSITION_KEYS})
    assert int(buffer.size) == 10 and buffer.capacity == 15
    np.testing.assert_array_equal(np.asarray(buffer.data['observations'][:10]), online['observations'])
    combined = {k: np.concatenate([offline[k], online[k]]) for k in datasets.TRANSITION_KEYS}
    offline_device = datasets.to_device(offline)
    assert datasets.concatenate_rows(offline_device, buffer.data)['observations'].shape == (45, 3)
    # Every start, including chunks that run from the dataset's last rows into the online ones, gives the chunk
    # of the materialised concatenation (the host sampler on NumPy arrays).
    starts = np.arange(38)
    chunks_at = jax.jit(lambda a, b, starts: datasets.sample_chunks_at(datasets.concatenate_rows(a, b), starts, 3, 0.9))
    device = chunks_at(offline_device, buffer.data, jnp.asarray(starts))
    host = datasets.sample_chunks_at_np(combined, starts, 3, 0.9)
    for key in host:
        np.testing.assert_allclose(np.asarray(device[key]), host[key], rtol=1e-6)
    # Sampling with the traced size never starts in the empty tail of the buffer.
    sample = jax.jit(lambda a, b, size, key: datasets.sample_chunks(datasets.concatenate_rows(a, b), key, 256, 3, 0.9,
                                                                    size=size))
    batch = sample(offline_device, buffer.data, 30 + buffer.size, jax.random.PRNGKey(0))
    first_actions = np.round(np.asarray(batch['actions'][:, 0, 0]), 6)
    assert set(first_actions) <= set(np.round(combined['actions'][:38, 0], 6))
    assert set(first_actions) & set(np.round(online['actions'][:8, 0], 6))  # online rows are drawn too
