"""Chunked sequence sampling (PROTOCOL §5) on the host and on the accelerator, and the replay buffer.

A dataset is a dict of per-row arrays: observations, actions, rewards, masks, terminals (1 on the last
transition of an episode) and next_observations. A batch row starts at a uniformly drawn t in
{0, ..., N - H} and covers rows t .. t + H - 1. Within it, step i is valid when no episode ended strictly
before it (d[t..t+i-1] all 0); steps after an episode's end are cut off. A batch holds what the losses need,
the TD target's fields already taken at the chunk's end:

  observations      o[t]                                   (B, O)
  actions           a[t .. t + H - 1] (never masked)       (B, H, A)
  chunk_return      sum_{valid i} gamma^i r[t + i]         (B,)    the H-step discounted reward sum
  bootstrap_mask    min_{valid i} m[t + i]                 (B,)    0 when a valid step reached a terminal state
  valid             1 when the chunk's last step is valid  (B,)    the weight of the row in every loss
  next_observation  s'[t + i] at the last valid step i     (B, O)  the state the target bootstraps from

The NumPy and the JAX version compute the same thing from the same start indices; the JAX one runs
inside `jit`/`lax.scan` on arrays already on the device, so training needs no host round trip.
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

TRANSITION_KEYS = ('observations', 'actions', 'rewards', 'masks', 'terminals', 'next_observations')


def _chunk_fields(xp, data, starts, horizon, discount):
    """Gather and combine one chunk per start index; `xp` is numpy or jax.numpy."""
    rows = starts[:, None] + xp.arange(horizon)[None, :]  # (B, H)
    # ended[i] = max(d[t..t+i]): an episode ended at or before step i, so steps after i are invalid.
    ended = xp.maximum.accumulate(data['terminals'][rows], axis=1) if xp is np else (
        jax.lax.cummax(data['terminals'][rows], axis=1)
    )
    valid = xp.concatenate([xp.ones_like(ended[:, :1]), 1.0 - ended[:, :-1]], axis=1)  # 1...1 0...0
    step_discounts = discount ** xp.arange(horizon, dtype=xp.float32)
    chunk_return = xp.sum(data['rewards'][rows] * step_discounts * valid, axis=1)
    # Invalid steps are replaced by 1, which never lowers the minimum.
    bootstrap_mask = xp.min(xp.where(valid > 0, data['masks'][rows], 1.0), axis=1)
    last_valid = valid.sum(axis=1).astype(xp.int32) - 1
    return dict(
        observations=data['observations'][starts],
        actions=data['actions'][rows],
        chunk_return=chunk_return.astype(xp.float32),
        bootstrap_mask=bootstrap_mask.astype(xp.float32),
        valid=valid[:, -1].astype(xp.float32),
        next_observation=data['next_observations'][starts + last_valid],
    )


def sample_chunks_np(dataset, rng, batch_size, horizon, discount, size=None):
    """Host sampler. `rng` is a np.random.Generator; `size` limits sampling to the first `size` rows."""
    size = len(dataset['observations']) if size is None else size
    if size < horizon:
        raise ValueError(f'Cannot sample chunks of length {horizon} from {size} rows.')
    starts = rng.integers(0, size - horizon + 1, size=batch_size)
    return sample_chunks_at_np(dataset, starts, horizon, discount)


def sample_chunks_at_np(dataset, starts, horizon, discount):
    """Host chunks at given start rows (float32)."""
    data = {k: np.asarray(dataset[k], dtype=np.float32) for k in TRANSITION_KEYS}
    return _chunk_fields(np, data, np.asarray(starts), horizon, np.float32(discount))


def sample_chunks(data, key, batch_size, horizon, discount, size=None):
    """Device sampler, jit-able: `data` holds jax arrays, `size` (int or traced int32) bounds the start rows.

    With a traced `size` a growing replay buffer is sampled without recompiling.
    """
    size = data['observations'].shape[0] if size is None else size
    starts = jax.random.randint(key, (batch_size,), 0, size - horizon + 1)
    return sample_chunks_at(data, starts, horizon, discount)


def sample_chunks_at(data, starts, horizon, discount):
    """Device chunks at given start rows."""
    return _chunk_fields(jnp, data, starts, horizon, discount)


def to_device(dataset):
    """The transition arrays of a host dataset as float32 device arrays."""
    return {k: jnp.asarray(dataset[k], dtype=jnp.float32) for k in TRANSITION_KEYS}


class _ConcatenatedRows:
    """The rows of `first` followed by those of `second`, for integer-array indexing inside jit (see
    `concatenate_rows`): each lookup gathers from both and keeps the right one, so neither is copied."""

    def __init__(self, first, second):
        self.first, self.second = first, second
        self.shape = (first.shape[0] + second.shape[0],) + first.shape[1:]

    def __getitem__(self, rows):
        split = self.first.shape[0]
        from_first = self.first[jnp.clip(rows, 0, split - 1)]
        from_second = self.second[jnp.clip(rows - split, 0, self.second.shape[0] - 1)]
        in_first = (rows < split).reshape(rows.shape + (1,) * (from_first.ndim - rows.ndim))
        return jnp.where(in_first, from_first, from_second)


def concatenate_rows(first, second):
    """Two datasets (dicts of device arrays) as one that `sample_chunks` can sample, rows of `first` first,
    without materialising the concatenation: the offline dataset is shared by every member of a vmapped run
    while each member's replay buffer holds only its own online rows."""
    return {k: _ConcatenatedRows(first[k], second[k]) for k in TRANSITION_KEYS}


class ReplayBuffer(flax.struct.PyTreeNode):
    """Fixed-capacity transition store that lives on the device and is updated functionally.

    Rows [0, size) are filled. `add` writes at `size` (jit-able, no retracing as the buffer grows);
    nothing is evicted. It holds a run's online transitions; the protocol's buffer (dataset + online
    transitions) is sampled as `sample_chunks(concatenate_rows(dataset, buffer.data), key, B, H, gamma,
    size=len(dataset) + buffer.size)`, so the dataset is stored once however many members share it.
    """

    data: dict
    size: jax.Array  # int32 scalar

    @property
    def capacity(self):
        return self.data['observations'].shape[0]

    @classmethod
    def create(cls, example_transition, capacity):
        """An empty buffer shaped after one transition (a dict of per-row arrays without the row axis)."""
        data = {
            k: jnp.zeros((capacity,) + np.shape(example_transition[k]), jnp.float32) for k in TRANSITION_KEYS
        }
        return cls(data=data, size=jnp.zeros((), jnp.int32))

    def add(self, transition):
        """Append one transition (a dict of per-row arrays). Adding to a full buffer is an error on the host
        side (`is_full`); inside jit the write is clamped to the last row."""
        index = jnp.minimum(self.size, self.capacity - 1)
        data = {
            k: jax.lax.dynamic_update_index_in_dim(self.data[k], jnp.asarray(transition[k], jnp.float32), index, 0)
            for k in TRANSITION_KEYS
        }
        return self.replace(data=data, size=jnp.minimum(self.size + 1, self.capacity))

    def is_full(self):
        return int(self.size) >= self.capacity
