"""Lockstep evaluation, CSV logging, run directories, checkpoints and atomic file writes."""

import contextlib
import os
import platform
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np

import pytest

from utils import environment, evaluation, experiment, files, training
from utils.checkpoints import Checkpointer
from utils.logger import CsvLogger


class CountingEnv:
    """An episode of `length` steps; success iff the sum of first action coordinates exceeds 0.

    It records every action it receives, so the test can check chunks are executed open-loop in full.
    """

    def __init__(self, length):
        self.length = length
        self.actions = []
        self.reset_seeds = []

    def reset(self, seed=None):
        self.t, self.total = 0, 0.0
        self.reset_seeds.append(seed)
        return np.array([self.length, 0.0], np.float32), {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        self.total += action[0]
        done = self.t >= self.length
        return np.array([self.length, self.t], np.float32), -1.0, False, done, {'success': float(self.total > 0)}


def test_lockstep_evaluation_one_call_per_chunk_and_full_chunks():
    horizon, action_dim = 3, 2
    envs = [CountingEnv(length) for length in (4, 7, 2)]
    calls = []

    def policy(observations, key):
        calls.append(observations.copy())
        n = len(observations)
        # Chunk entries encode (call, env, step) so the test can see which were executed.
        values = np.array([[len(calls) * 100 + i * 10 + s for s in range(horizon) for _ in range(action_dim)] for i in range(n)])
        return np.clip(values / 1000.0, -1, 1)

    metrics, _ = evaluation.evaluate(policy, envs, seed=5, eval_index=2, action_dim=action_dim)
    assert len(calls) == 3  # ceil(7 / 3) chunk calls for the longest episode, each for all envs at once
    assert all(c.shape == (3, 2) for c in calls)
    for i, env in enumerate(envs):
        assert len(env.actions) == env.length
        for t, action in enumerate(env.actions):
            call, step = t // horizon + 1, t % horizon
            np.testing.assert_allclose(action, (call * 100 + i * 10 + step) / 1000.0)
    assert metrics['episode_length'] == np.mean([4, 7, 2]) and metrics['episode_return'] == -np.mean([4, 7, 2])
    assert metrics['success'] == 1.0 and metrics['num_episodes'] == 3
    # reset seeds derive from (seed, evaluation index, episode): reproducible and distinct
    seeds = [env.reset_seeds[0] for env in envs]
    assert len(set(seeds)) == 3 and seeds[1] == evaluation.episode_seed(5, 2, 1)


def test_lockstep_evaluation_executes_one_action_per_call_without_chunking():
    # action_chunking=False: the policy returns one action (D = A) per episode, so every step is a call.
    envs = [CountingEnv(length) for length in (4, 2)]
    calls = []

    def policy(observations, key):
        calls.append(len(calls) + 1)
        return np.full((len(observations), 2), len(calls) / 10, np.float32)

    metrics, _ = evaluation.evaluate(policy, envs, seed=0, eval_index=0, action_dim=2)
    assert len(calls) == 4 and metrics['episode_length'] == 3.0
    np.testing.assert_allclose([a[0] for a in envs[0].actions], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose([a[0] for a in envs[1].actions], [0.1, 0.2])


def test_evaluation_success_is_read_at_episode_end():
    envs = [CountingEnv(3), CountingEnv(3)]

    def policy(observations, key):
        # env 0 pushes +1 then -1 twice: the total ends negative (no success) though it was positive first
        return np.array([[1, 0, -1, 0, -1, 0], [1, 0, 1, 0, 1, 0]], np.float32)

    metrics, _ = evaluation.evaluate(policy, envs, seed=0, eval_index=0, action_dim=2)
    assert metrics['success'] == 0.5


class SeededLengthEnv:
    """Episodes whose length (2 to 6 steps) comes from the reset seed; it records each episode's actions under that
    seed, so episodes can be compared whichever environment hosted them. Observation: (seed % 7, step)."""

    def __init__(self, episodes):
        self.episodes = episodes  # shared: reset seed -> executed actions

    def reset(self, seed=None):
        self.seed, self.t, self.length = seed, 0, 2 + seed % 5
        self.episodes[seed] = []
        return np.array([seed % 7, 0.0], np.float32), {}

    def step(self, action):
        self.episodes[self.seed].append(np.array(action))
        self.t += 1
        success = float(action[0] > 0)
        return (np.array([self.seed % 7, self.t], np.float32), -abs(float(action[1])), False, self.t >= self.length,
                {'success': success})


def evaluate_in_waves(policy, num_envs, num_episodes=5, seeds=(3, 8), action_dim=2):
    episodes = [{} for _ in seeds]
    groups = [[SeededLengthEnv(recorded) for _ in range(num_envs)] for recorded in episodes]
    metrics, _ = evaluation.evaluate_members(policy, groups, list(seeds), 4, action_dim, num_episodes=num_episodes)
    return metrics, episodes


def test_evaluation_in_waves_gives_every_episode_what_it_gets_all_at_once():
    """5 episodes of 2 members on 5, 2 and 1 environments per member: every episode gets the same reset seed and
    executes the same actions (the policy's output depends on its row's observation and on its row of noise, drawn
    for all rows from the chunk's key), so the metrics are identical."""
    calls = []

    def policy(observations, keys):  # (M, N, O), (M, 2) -> (M, N, 2 actions of 2)
        calls.append(observations.shape)
        noise = np.stack([np.asarray(jax.random.normal(key, observations.shape[1:2] + (4,))) for key in keys])
        return np.tanh(noise + observations.sum(-1, keepdims=True) / 10)

    all_at_once, episodes = evaluate_in_waves(policy, num_envs=5)
    assert all(shape == (2, 5, 2) for shape in calls)
    for member, seed in zip(episodes, (3, 8)):
        assert sorted(member) == sorted(evaluation.episode_seed(seed, 4, i) for i in range(5))
        assert [len(actions) for actions in member.values()] == [2 + s % 5 for s in member]
    for num_envs in (2, 1):
        calls.clear()
        metrics, waves = evaluate_in_waves(policy, num_envs)
        assert all(shape == (2, 5, 2) for shape in calls)  # every call still has a row per episode
        assert metrics == [{**m, 'wall_time': w['wall_time']} for m, w in zip(all_at_once, metrics)]
        for member, reference in zip(waves, episodes):
            assert member.keys() == reference.keys()
            for seed, actions in reference.items():
                np.testing.assert_array_equal(member[seed], actions)
    with pytest.raises(ValueError, match='environments'):
        evaluate_in_waves(policy, num_envs=6)


def test_a_flow_policy_evaluated_in_waves_acts_as_all_at_once():
    """The property the waves rely on, for a real policy: QAM's actions for a row do not depend on the other rows of
    the call (two members, acting through main.py's vmapped `act`)."""
    from agents import qam
    from tests.test_qam import small_config

    config = small_config(horizon_length=2)
    members = [qam.Agent.create(seed, np.zeros(2, np.float32), np.zeros(2, np.float32), config) for seed in (0, 1)]
    agents = training.stack(members)
    _, _, act, _ = training.make_train_functions(members[0].config, balanced=False, utd_ratio=1)
    policy = lambda observations, keys: np.asarray(act(agents, jnp.asarray(observations), jnp.asarray(keys)))  # noqa: E731
    _, all_at_once = evaluate_in_waves(policy, num_envs=5)
    _, in_waves = evaluate_in_waves(policy, num_envs=2)
    for member, reference in zip(in_waves, all_at_once):
        for seed, actions in reference.items():
            np.testing.assert_array_equal(member[seed], actions)


def test_csv_logger_keeps_new_columns_and_truncates(tmp_path):
    path = str(tmp_path / 'train.csv')
    log = CsvLogger(path)
    log.log(dict(step=1, phase='offline', a=1.0))
    log.log(dict(step=2, phase='offline', a=2.0, b=3.0))
    log.log(dict(step=3, phase='online', b=4.0))
    rows = CsvLogger(path).read()
    assert [r['step'] for r in rows] == [1, 2, 3]
    assert np.isnan(rows[0]['b']) and rows[1]['b'] == 3.0 and np.isnan(rows[2]['a']) and rows[2]['phase'] == 'online'
    reopened = CsvLogger(path)
    reopened.truncate_after(2)
    reopened.log(dict(step=3, phase='online', a=5.0))
    assert [(r['step'], r['a']) for r in reopened.read()] == [(1, 1.0), (2, 2.0), (3, 5.0)]


def test_run_dir_name_is_deterministic_and_depends_on_settings(tmp_path):
    settings = dict(agent=dict(inv_temp=3.0, hidden=(64, 64)), env_name='x', offline_steps=10)
    a = experiment.run_dir_name('runs', 'qam', 'x', 1, settings)
    assert a == experiment.run_dir_name('runs', 'qam', 'x', 1, dict(settings))
    assert a != experiment.run_dir_name('runs', 'qam', 'x', 1, dict(settings, offline_steps=11))
    assert a != experiment.run_dir_name('runs', 'qam', 'x', 2, settings)
    experiment.write_marker(str(tmp_path), experiment.DONE, dict(summary='ok'))
    assert experiment.read_marker(str(tmp_path), experiment.DONE) == dict(summary='ok')
    assert experiment.read_marker(str(tmp_path), experiment.DIVERGED) is None


@pytest.mark.skipif(shutil.which('lscpu') is None or platform.machine() != 'x86_64',
                    reason='needs lscpu (util-linux) to read the model independently, and an x86-64 /proc/cpuinfo')
def test_flags_record_the_cpu_model_that_lscpu_reports(tmp_path):
    lscpu = subprocess.run(['lscpu'], capture_output=True, text=True, env=dict(os.environ, LC_ALL='C')).stdout
    model = next(line.split(':', 1)[1].strip() for line in lscpu.splitlines() if line.startswith('Model name:'))
    experiment.write_flags(str(tmp_path), flags={}, settings={})
    assert experiment.read_flags(str(tmp_path))['machine']['cpu'] == model != ''


def test_checkpointer_round_trip(tmp_path):
    checkpointer = Checkpointer(str(tmp_path / 'checkpoints'))
    state = {'agent': {'w': jnp.arange(6.0).reshape(2, 3), 'step': jnp.asarray(7, jnp.int32)}}
    checkpointer.save(10, state, dict(phase='offline', online_rows=0))
    checkpointer.save(20, {'agent': {'w': state['agent']['w'] + 1, 'step': jnp.asarray(8, jnp.int32)}}, dict(phase='online'))
    assert checkpointer.latest_step() == 20
    restored, meta = checkpointer.restore(10, state)
    np.testing.assert_array_equal(restored['agent']['w'], state['agent']['w'])
    assert int(restored['agent']['step']) == 7 and meta == dict(phase='offline', online_rows=0)
    assert checkpointer.restore_meta(20) == dict(phase='online')
    checkpointer.close()
    assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10', '20']


def test_atomic_write_replaces_the_file_whole_or_leaves_it_as_it_was(tmp_path):
    path = str(tmp_path / 'sub' / 'record.json')
    with files.atomic_write(path) as f:  # creates the folder
        f.write('first')
    with pytest.raises(RuntimeError):
        with files.atomic_write(path) as f:
            f.write('half of the second')
            raise RuntimeError('killed mid-write')
    with open(path) as f:
        assert f.read() == 'first'
    def refuse():
        raise FileExistsError(path)

    with pytest.raises(FileExistsError):  # before_replace refuses: the file keeps its content
        with files.atomic_write(path, before_replace=refuse) as f:
            f.write('refused')
    with files.atomic_write(path, binary=True) as f:
        f.write(b'second')
    with open(path) as f:
        assert f.read() == 'second'
    assert os.listdir(tmp_path / 'sub') == ['record.json']  # no temporary file is left behind


def test_variables_set_restores_each_variable_as_it_was(monkeypatch):
    """Inside the block the values are set; after it a variable that was set has its old value again and one that
    was not is gone, also when the block raises."""
    monkeypatch.setenv('QAM_TEST_SET_BEFORE', 'old')
    monkeypatch.delenv('QAM_TEST_UNSET_BEFORE', raising=False)
    values = {'QAM_TEST_SET_BEFORE': 'new', 'QAM_TEST_UNSET_BEFORE': 'added'}
    for fails in (False, True):
        with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
            with environment.variables_set(values):
                assert {k: os.environ[k] for k in values} == values
                if fails:
                    raise RuntimeError('inside the block')
        assert os.environ['QAM_TEST_SET_BEFORE'] == 'old'
        assert 'QAM_TEST_UNSET_BEFORE' not in os.environ
