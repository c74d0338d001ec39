"""Evaluation of all episodes in lockstep with one batched policy call per action chunk (PROTOCOL §6).

A policy call returns D values per episode, executed open-loop in full as D / A actions (a chunk of H actions
with action chunking, one action without). Every episode starts together, so all running episodes need their
next policy call at the same steps: one call serves them all. Finished episodes
keep their slot (the batch shape never changes, so the policy compiles once) but are not stepped. Reset
seeds and policy keys derive from (seed, evaluation index, episode index / chunk index), so an evaluation
is reproducible, and a member of a vmapped run (several seeds or hyperparameter values trained in one
program) is evaluated exactly as the same run on its own.
"""

import time

import jax
import numpy as np


def episode_seed(seed, eval_index, episode):
    return int(np.random.SeedSequence([seed, eval_index, episode]).generate_state(1)[0])


def evaluate(policy, envs, seed, eval_index, action_dim, video_frames=0):
    """Run one episode in each env of `envs` in lockstep.

    policy: (observations (N, O) float32, key) -> actions (N, D), D a multiple of action_dim.
    Returns (metrics dict, frames) where frames is a list of (T, h, w, 3) arrays for the first
    `video_frames` episodes (their envs must render rgb_array).
    """
    member_policy = lambda observations, keys: np.asarray(policy(observations[0], keys[0]))[None]  # noqa: E731
    (metrics,), (frames,) = evaluate_members(member_policy, [envs], [seed], eval_index, action_dim, video_frames)
    return metrics, frames


def evaluate_members(policy, env_groups, seeds, eval_index, action_dim, video_frames=0):
    """Run one episode in every env of every member's group, all in lockstep.

    policy: (observations (M, N, O) float32, keys (M, 2)) -> actions (M, N, D), D a multiple of action_dim; member m's
    episodes use the keys and reset seeds that `evaluate` would give a run with seed `seeds[m]`.
    Returns (metrics per member, frames per member).
    """
    start = time.time()
    num_members, n = len(env_groups), len(env_groups[0])
    if any(len(group) != n for group in env_groups):
        raise ValueError('Every member needs the same number of evaluation environments.')
    observations = np.stack([
        np.stack([env.reset(seed=episode_seed(seed, eval_index, i))[0] for i, env in enumerate(group)])
        for group, seed in zip(env_groups, seeds)
    ]).astype(np.float32)
    running = np.ones((num_members, n), bool)
    success, returns = np.zeros((num_members, n)), np.zeros((num_members, n))
    lengths = np.zeros((num_members, n), np.int64)
    frames = [[[np.array(env.render())] for env in group[:video_frames]] for group in env_groups]
    keys = [jax.random.fold_in(jax.random.PRNGKey(seed), eval_index) for seed in seeds]
    chunk_index = 0
    while running.any():
        chunk_keys = np.stack([jax.random.fold_in(key, chunk_index) for key in keys])
        chunk = np.asarray(policy(observations, chunk_keys))
        chunk = np.clip(chunk.reshape(num_members, n, -1, action_dim), -1.0, 1.0)  # D / A actions per call
        chunk_index += 1
        for step in range(chunk.shape[2]):
            for m, i in zip(*np.nonzero(running)):
                observation, reward, terminated, truncated, info = env_groups[m][i].step(chunk[m, i, step])
                observations[m, i] = observation  # copied into the row: the environment's array is not kept
                returns[m, i] += reward
                lengths[m, i] += 1
                if i < video_frames:
                    frames[m][i].append(np.array(env_groups[m][i].render()))  # a copy: renderers may reuse a buffer
                if terminated or truncated:
                    running[m, i] = False
                    success[m, i] = float(info['success'])
            if not running.any():
                break
    wall_time = time.time() - start
    metrics = [
        {'success': float(success[m].mean()), 'episode_return': float(returns[m].mean()),
         'episode_length': float(lengths[m].mean()), 'num_episodes': n, 'wall_time': wall_time}
        for m in range(num_members)
    ]
    return metrics, [[np.stack(f) for f in member_frames] for member_frames in frames]
