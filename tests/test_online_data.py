"""The online phase stores what the environment actually did.

main.py runs through tests/recorded_main.py, which wraps each member's training environment in a recorder (and
makes its episodes short, so that a short run crosses many episode ends). The online rows of the replay buffer, as
saved in the run's checkpoint, are compared row by row with the recorded steps: observation, executed action, reward
after the sparse conversion, terminal, mask and next observation. This is what a test of the loop's own bookkeeping
missed when every stored row had s == s' (a view of the observation row that the loop then overwrote).
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from envs import online
from tests.main_runs import ROOT, TINY_AGENT, assert_same_results, read_csv
from utils import datasets

FQL_ONLINE = [
    '--agent=fql', '--env_name=cube-double-play-singletask-task2-v0', '--seed=3', '--offline_steps=0',
    '--online_steps=60', '--start_training=10', '--eval_interval=60', '--eval_episodes=2', '--log_interval=10',
    '--save_interval=30', '--progress=false', '--keep_checkpoints', *TINY_AGENT,
]


def run_recorded(args, record_dir, save_dir, dataset_dir):
    os.makedirs(record_dir, exist_ok=True)
    env = dict(os.environ, JAX_PLATFORMS='cpu', MUJOCO_GL='egl', QAM_RECORD_DIR=str(record_dir),
               JAX_COMPILATION_CACHE_DIR=os.environ['QAM_TEST_JAX_CACHE'])
    command = [sys.executable, 'tests/recorded_main.py', *args, f'--save_dir={save_dir}', '--dataset_source=dir',
               f'--dataset_dir={dataset_dir}']
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise AssertionError(f'main.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}')
    return result


def recorded_events(record_dir, seed):
    with open(os.path.join(record_dir, f'seed{seed}.pkl'), 'rb') as f:
        return pickle.load(f)


def join_resumed(first, second):
    """The steps of an environment over a stop and a resume: the resumed process resets with the seed of the episode
    in progress and replays its steps (they must be exactly the recorded ones), then goes on."""
    last_reset = max(i for i, event in enumerate(first) if event['kind'] == 'reset')
    in_progress = first[last_reset + 1:]
    assert second[0]['kind'] == 'reset' and second[0]['seed'] == first[last_reset]['seed']
    np.testing.assert_array_equal(second[0]['observation'], first[last_reset]['observation'])
    replayed = second[1:1 + len(in_progress)]
    for original, replay in zip(in_progress, replayed, strict=True):
        for key in ('observation', 'action', 'next_observation'):
            np.testing.assert_array_equal(replay[key], original[key])
        assert (replay['reward'], replay['terminated'], replay['truncated']) == \
            (original['reward'], original['terminated'], original['truncated'])
    return first + second[1 + len(in_progress):]


def expected_rows(events, sparse):
    """PROTOCOL §4.2's transition of every recorded step, and the episode each belongs to."""
    steps = [event for event in events if event['kind'] == 'step']
    rewards = np.array([event['reward'] for event in steps], np.float32)
    rows = dict(
        observations=np.array([event['observation'] for event in steps], np.float32),
        actions=np.array([event['action'] for event in steps], np.float32),
        rewards=-(rewards != 0).astype(np.float32) if sparse else rewards,  # §2: 0 at the goal, -1 elsewhere
        terminals=np.array([event['terminated'] or event['truncated'] for event in steps], np.float32),
        masks=np.array([not event['terminated'] for event in steps], np.float32),
        next_observations=np.array([event['next_observation'] for event in steps], np.float32),
    )
    episode, episodes = 0, []
    for event in events:  # a reset starts a new episode; the first reset starts episode 0
        if event['kind'] == 'reset' and episodes:
            episode += 1
        elif event['kind'] == 'step':
            episodes.append(episode)
    return rows, np.array(episodes)


def saved_rows(run_dir, step):
    state = ocp.PyTreeCheckpointer().restore(os.path.join(run_dir, 'checkpoints', str(step), 'state'))
    return {k: np.asarray(state['online_rows'][k]) for k in datasets.TRANSITION_KEYS}


def run_dir_of(save_dir, agent, env_name, seed):
    root = os.path.join(save_dir, agent, env_name)
    (name,) = [n for n in os.listdir(root) if n.startswith(f'seed{seed}-')]
    return os.path.join(root, name)


def check_rows(rows, expected, episodes, horizon, discount):
    assert len(rows['observations']) == len(expected['observations'])
    for key in datasets.TRANSITION_KEYS:
        np.testing.assert_array_equal(rows[key], expected[key], err_msg=key)
    # What went wrong before: s == s' in every row, and no chaining from one row to the next.
    assert not np.all(rows['observations'] == rows['next_observations'], axis=1).any()
    same_episode = episodes[1:] == episodes[:-1]
    np.testing.assert_array_equal(rows['next_observations'][:-1][same_episode], rows['observations'][1:][same_episode])
    assert same_episode.sum() > 0 and (~same_episode).sum() >= 2  # crossed episode ends
    assert rows['terminals'][:-1][~same_episode].all() and not rows['terminals'][:-1][same_episode].any()
    assert (rows['masks'] == 0).any() and ((rows['masks'] == 1) & (rows['terminals'] == 1)).any()  # both end kinds
    # Every chunk that a batch can draw from these rows: H consecutive steps of one episode while valid. A chunk of
    # length h ends at step h - 1, so lengths 1..H check every step.
    for length in range(1, horizon + 1):
        starts = np.arange(len(episodes) - length + 1)
        chunks = datasets.sample_chunks_at_np(rows, starts, length, discount)
        for t in starts:
            steps = [t + i for i in range(length) if episodes[t + i] == episodes[t]]  # the valid steps
            assert chunks['valid'][t] == float(len(steps) == length)
            np.testing.assert_array_equal(chunks['actions'][t], expected['actions'][t:t + length])
            np.testing.assert_array_equal(chunks['next_observation'][t], expected['next_observations'][steps[-1]])
            np.testing.assert_allclose(chunks['chunk_return'][t], sum(
                discount**(row - t) * expected['rewards'][row] for row in steps), rtol=1e-6)
            assert chunks['bootstrap_mask'][t] == min(expected['masks'][row] for row in steps)
            np.testing.assert_array_equal(chunks['observations'][t], expected['observations'][t])


def test_online_rows_are_the_recorded_steps_for_vmapped_members_across_a_resume(tmp_path, generated_datasets_dir):
    # Two vmapped seeds from --offline_steps=0 (uniform single actions, then the policy's chunks from step 10),
    # stopped at step 37 (inside an episode and a chunk) and resumed; then the same run without the stop.
    args = FQL_ONLINE + ['--num_seeds=2']
    stopped = run_recorded(args + ['--stop_at_step=37'], tmp_path / 'first', tmp_path / 'runs', generated_datasets_dir)
    assert 'Stopped at step 37' in stopped.stdout
    resumed = run_recorded(args, tmp_path / 'second', tmp_path / 'runs', generated_datasets_dir)
    assert 'Resumed from the checkpoint at step 37' in resumed.stdout
    run_recorded(args, tmp_path / 'whole', tmp_path / 'uninterrupted', generated_datasets_dir)
    env_name = 'cube-double-play-singletask-task2-v0'
    for seed in (3, 10004):
        events = join_resumed(recorded_events(tmp_path / 'first', seed), recorded_events(tmp_path / 'second', seed))
        expected, episodes = expected_rows(events, sparse=False)
        run_dir = run_dir_of(tmp_path / 'runs', 'fql', env_name, seed)
        check_rows(saved_rows(run_dir, 60), expected, episodes, horizon=5, discount=0.99)
        at_stop = saved_rows(run_dir, 37)  # the checkpoint the run resumed from holds the first 37 rows
        assert all(np.array_equal(at_stop[k], expected[k][:37]) for k in datasets.TRANSITION_KEYS)
        # The resume is exact: the uninterrupted run stored the same rows and logged the same metrics.
        uninterrupted = run_dir_of(tmp_path / 'uninterrupted', 'fql', env_name, seed)
        whole_rows = saved_rows(uninterrupted, 60)
        assert all(np.array_equal(whole_rows[k], expected[k]) for k in datasets.TRANSITION_KEYS)
        assert_same_results(run_dir, uninterrupted, rtol=0)
        assert 'online/episode_success' in read_csv(os.path.join(run_dir, 'train.csv'))[-1]


def test_online_rows_with_balanced_sampling_and_sparse_rewards(tmp_path, generated_datasets_dir):
    # RLPD online only on scene (sparse rewards), its batches half from the dataset and half from these rows.
    args = [a.replace('--agent=fql', '--agent=rlpd').replace('cube-double', 'scene') for a in FQL_ONLINE
            if a != '--agent.flow_steps=3']  # a Gaussian policy
    run_recorded(args + ['--balanced_sampling=true', '--agent.bc_alpha=0'], tmp_path / 'record', tmp_path / 'runs',
                 generated_datasets_dir)
    expected, episodes = expected_rows(recorded_events(tmp_path / 'record', 3), sparse=True)
    assert set(np.unique(expected['rewards'])) <= {-1.0, 0.0}
    run_dir = run_dir_of(tmp_path / 'runs', 'rlpd', 'scene-play-singletask-task2-v0', 3)
    check_rows(saved_rows(run_dir, 60), expected, episodes, horizon=5, discount=0.99)


# --------------------------------------------------------------------------- OnlineEnvironments alone
class InPlaceEnv:
    """Returns its one observation array, mutated in place at every step and reset (as an environment that reuses
    its buffers may): a stored transition that kept it would change afterwards."""

    observation_space = type('Space', (), {'shape': (2,)})()

    def __init__(self, length):
        self.length, self.observation, self.actions = length, np.zeros(2, np.float32), []

    def reset(self, seed=None):
        self.t, self.seed = 0, seed
        self.observation[:] = [seed % 1000, 0]
        return self.observation, {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        self.observation[1] = self.t
        return self.observation, -1.0, False, self.t == self.length, {'success': 0.0}


def policy_output(call, chunk, action_dim=2):
    """D = chunk · A values that name the call and the position: call / 10 + position / 100."""
    return call / 10 + np.arange(chunk * action_dim, dtype=np.float32) / 100


@pytest.mark.parametrize('chunk, first_coordinates', [
    (1, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),  # one action per call (action_chunking=False)
    # chunks of 3 in episodes of 4 steps: steps 1-3 from call 1, step 4 from call 2, whose rest is dropped at the end
    # of the episode; steps 5-7 from call 3, step 8 from call 4, steps 9-10 from call 5
    (3, [0.1, 0.12, 0.14, 0.2, 0.3, 0.32, 0.34, 0.4, 0.5, 0.52]),
])
def test_each_policy_output_is_executed_as_its_actions_and_transitions_own_their_arrays(chunk, first_coordinates):
    env = InPlaceEnv(length=4)
    environments = online.OnlineEnvironments([env], [7], action_dim=2, sparse=False)
    environments.start(1)
    transitions, calls = [], 0
    for i in range(1, 11):
        if environments.needs_actions([0]):
            calls += 1
            environments.enqueue(0, policy_output(calls, chunk))
        transitions.append(environments.step(0, i))
    np.testing.assert_allclose([a[0] for a in env.actions], first_coordinates, rtol=1e-6)
    for t, transition in enumerate(transitions):
        episode_step = t % 4  # the environment mutated its one array since: every transition kept its own copy
        assert transition['observations'][1] == episode_step and transition['next_observations'][1] == episode_step + 1
        assert transition['terminals'] == float(episode_step == 3) and transition['masks'] == 1.0
        np.testing.assert_array_equal(transition['actions'], env.actions[t])
    # the episode starting at step 5 was reset with the seed of (member seed, 5)
    assert transitions[4]['observations'][0] == online.reset_seed(7, 5) % 1000
    assert environments.pop_finished(0) == [(0.0, -4.0), (0.0, -4.0)] and environments.pop_finished(0) == []


def test_executed_and_stored_actions_are_clipped_and_sparse_rewards_converted():
    environments = online.OnlineEnvironments([InPlaceEnv(length=4)], [7], action_dim=2, sparse=True)
    environments.start(1)
    environments.enqueue(0, [2.0, -3.0, 0.5, 0.25])
    transition = environments.step(0, 1)
    np.testing.assert_array_equal(transition['actions'], [1.0, -1.0])
    assert transition['rewards'] == -1.0 and len(environments.queues[0]) == 1
    with pytest.raises(ValueError, match='whole number'):
        environments.enqueue(0, np.zeros(3))


def test_restore_replays_the_episode_in_progress():
    environments = online.OnlineEnvironments([InPlaceEnv(length=6)], [7], action_dim=2, sparse=False)
    environments.start(1)
    environments.enqueue(0, policy_output(1, chunk=3))
    for i in range(1, 9):  # one episode of 6 steps ends, and 2 steps of the next one
        if environments.needs_actions([0]):
            environments.enqueue(0, policy_output(i, chunk=3))
        environments.step(0, i)
    state = environments.state(0)
    assert state['episode_start'] == 7 and len(state['episode_actions']) == 2 and len(state['queue']) == 1
    fresh_env = InPlaceEnv(length=6)
    restored = online.OnlineEnvironments([fresh_env], [7], action_dim=2, sparse=False)
    notes = restored.restore([state])
    assert fresh_env.seed == online.reset_seed(7, 7) and len(fresh_env.actions) == 2
    np.testing.assert_array_equal(restored.observations, environments.observations)
    assert restored.state(0) == state and restored.episode_returns == environments.episode_returns
    assert notes == {}  # replayed exactly
    state['observation'][0] += 0.5  # as if written where MuJoCo rounds otherwise: said, not hidden
    inexact = online.OnlineEnvironments([InPlaceEnv(length=6)], [7], action_dim=2, sparse=False).restore([state])
    assert 'differs from the checkpoint by up to 5.00e-01' in inexact[0] and 'not an exact resume' in inexact[0]
