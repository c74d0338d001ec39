"""Evaluation of all episodes in lockstep with one batched policy call per action chunk (PROTOCOL §6).

A policy call returns D values per episode, executed open-loop in full as D / A actions (a chunk of H actions
with action chunking, one action without). Every episode starts together, so all running episodes need their
next policy call at the same steps: one call serves them all. Finished episodes
keep their slot (the batch shape never changes, so the policy compiles once) but are not stepped. Reset
seeds and policy keys derive from (seed, evaluation index, episode index / chunk index), so an evaluation
is reproducible, and a member of a vmapped run (several seeds or hyperparameter values trained in one
program) is evaluated exactly as the same run on its own.

With fewer environments than episodes (an OGBench manipulation environment holds 150-170 MB by
benchmarks/env_memory.py, so 12 vmapped seeds with 50 episodes each would need about 100 GB), the episodes run in
consecutive waves, each environment hosting one episode per wave. Every policy call still has a row for every
episode, and episode i keeps row i: it gets the same reset seed and the same policy noise in any wave, so the
results do not depend on how many environments there are.
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


def evaluate_members(policy, env_groups, seeds, eval_index, action_dim, video_frames=0, num_episodes=None):
    """Run `num_episodes` episodes per member (default: one per environment of its group), all members in lockstep.

    policy: (observations (M, N, O) float32, keys (M, 2)) -> actions (M, N, D), D a multiple of action_dim; member m's
    episodes use the keys and reset seeds that `evaluate` would give a run with seed `seeds[m]`. With fewer
    environments than episodes, the episodes run in waves of len(group); the rows of the episodes outside the current
    wave keep their last observation (zeros before their wave), and their actions are dropped. The first
    `video_frames` episodes are recorded (they must be in the first wave).
    Returns (metrics per member, frames per member).
    """
    start = time.time()
    num_members, num_envs = len(env_groups), len(env_groups[0])
    n = num_envs if num_episodes is None else num_episodes
    if any(len(group) != num_envs for group in env_groups):
        raise ValueError('Every member needs the same number of evaluation environments.')
    if not 1 <= num_envs <= n or video_frames > num_envs:
        raise ValueError(f'{num_envs} environments for {n} episodes, {video_frames} of them recorded: need 1 to {n} '
                         'environments, and one for each recorded episode.')
    observations = None  # (M, N, O), allocated at the first reset
    success, returns = np.zeros((num_members, n)), np.zeros((num_members, n))
    lengths = np.zeros((num_members, n), np.int64)
    frames = [[None] * video_frames for _ in env_groups]
    keys = [jax.random.fold_in(jax.random.PRNGKey(seed), eval_index) for seed in seeds]
    for first in range(0, n, num_envs):
        wave = range(first, min(first + num_envs, n))
        for m, (group, seed) in enumerate(zip(env_groups, seeds)):
            for i in wave:
                observation = group[i - first].reset(seed=episode_seed(seed, eval_index, i))[0]
                if observations is None:
                    observations = np.zeros((num_members, n, *np.shape(observation)), np.float32)
                observations[m, i] = observation
                if i < video_frames:
                    frames[m][i] = [np.array(group[i].render())]
        running = np.zeros((num_members, n), bool)
        running[:, wave.start:wave.stop] = True
        chunk_index = 0
        while running.any():
            chunk_keys = np.stack([jax.random.fold_in(key, chunk_index) for key in keys])
            chunk = np.asarray(policy(observations, chunk_keys))
            chunk = np.clip(chunk.reshape(num_members, n, -1, action_dim), -1.0, 1.0)  # D / A actions per call
            chunk_index += 1
            for step in range(chunk.shape[2]):
                for m, i in zip(*np.nonzero(running)):
                    env = env_groups[m][i - first]
                    observation, reward, terminated, truncated, info = env.step(chunk[m, i, step])
                    observations[m, i] = observation  # copied into the row: the environment's array is not kept
                    returns[m, i] += reward
                    lengths[m, i] += 1
                    if i < video_frames:
                        frames[m][i].append(np.array(env.render()))  # a copy: renderers may reuse a buffer
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
