"""Evaluation of all episodes in lockstep with one batched policy call per action chunk (PROTOCOL §6).

Every episode starts together, so all running episodes need a new chunk at the same steps (every H
steps): one `policy(observations (N, O), key)` call serves them all, and each chunk is executed
open-loop in full. Finished episodes keep their slot (the batch shape never changes, so the policy
compiles once) but are not stepped. Reset seeds and policy keys derive from (seed, evaluation index,
episode index / chunk index), so an evaluation is reproducible.
"""

import time

import jax
import numpy as np


def episode_seed(seed, eval_index, episode):
    return int(np.random.SeedSequence([seed, eval_index, episode]).generate_state(1)[0])


def evaluate(policy, envs, seed, eval_index, horizon, action_dim, video_frames=0):
    """Run one episode in each env of `envs` in lockstep.

    policy: (observations (N, O) float32, key) -> actions (N, H * action_dim), already in [-1, 1].
    Returns (metrics dict, frames) where frames is a list of (T, h, w, 3) arrays for the first
    `video_frames` episodes (their envs must render rgb_array).
    """
    start = time.time()
    n = len(envs)
    observations = np.stack(
        [env.reset(seed=episode_seed(seed, eval_index, i))[0] for i, env in enumerate(envs)]
    ).astype(np.float32)
    running = np.ones(n, bool)
    success = np.zeros(n)
    returns = np.zeros(n)
    lengths = np.zeros(n, np.int64)
    frames = [[env.render()] for env in envs[:video_frames]]
    key = jax.random.fold_in(jax.random.PRNGKey(seed), eval_index)
    chunk_index = 0
    while running.any():
        chunk = np.asarray(policy(observations, jax.random.fold_in(key, chunk_index)))
        chunk = np.clip(chunk.reshape(n, horizon, action_dim), -1.0, 1.0)
        chunk_index += 1
        for step in range(horizon):
            for i in np.flatnonzero(running):
                observation, reward, terminated, truncated, info = envs[i].step(chunk[i, step])
                observations[i] = observation
                returns[i] += reward
                lengths[i] += 1
                if i < video_frames:
                    frames[i].append(envs[i].render())
                if terminated or truncated:
                    running[i] = False
                    success[i] = float(info['success'])
            if not running.any():
                break
    metrics = {
        'success': float(success.mean()),
        'episode_return': float(returns.mean()),
        'episode_length': float(lengths.mean()),
        'num_episodes': n,
        'wall_time': time.time() - start,
    }
    return metrics, [np.stack(f) for f in frames]
