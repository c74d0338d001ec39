"""D4RL tasks through Minari (envs/minari_data.py), with no network: small Minari datasets are collected here with
Minari's DataCollector on the gymnasium-robotics environments, recording what the environment did at every step, and
loaded through the suite. The conventions (README, "D4RL tasks") are checked against a loop over those records.
"""

import csv
import json
import os
import shutil

import gymnasium
import jax
import numpy as np
import pytest

import agents
from envs import data_sources, env_utils, minari_data, online, tasks
from tests.main_runs import run_main
from utils import environment, evaluation

ANTMAZE, DOOR, PEN = 'D4RL/antmaze/umaze-v1', 'D4RL/door/human-v2', 'D4RL/pen/human-v2'
DOOR_REFERENCE = (-50.0, 2900.0)  # the test dataset's reference scores (D4RL's door: -56.51, 2880.57)


def collect(dataset_id, env_id, episodes, steps, env_kwargs=(), eval_kwargs=(), goal_on_ant=(), ref=(0.0, 1.0)):
    """Collect `episodes` random-action episodes of at most `steps` steps into a Minari dataset (in the folder that
    MINARI_DATASETS_PATH names) and return what the environment did: per episode, the observations (T + 1), actions,
    rewards, terminations and truncations. In the episodes listed in `goal_on_ant` the AntMaze goal is placed on
    the ant after the reset (a scripted task), so that the data holds steps at the goal."""
    env = minari_data.minari.DataCollector(gymnasium.make(env_id, max_episode_steps=steps, **dict(env_kwargs)))
    rng = np.random.default_rng(0)
    records = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=episode)
        if episode in goal_on_ant:
            env.unwrapped.goal = observation['achieved_goal'].copy()
        record = dict(observations=[observation], actions=[], rewards=[], terminations=[], truncations=[])
        while True:
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            observation, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(('observations', 'actions', 'rewards', 'terminations', 'truncations'),
                                  (observation, action, reward, terminated, truncated)):
                record[key].append(value)
            if terminated or truncated:
                break
        records.append(record)
    eval_env = gymnasium.make(env_id, max_episode_steps=steps, **dict(eval_kwargs))
    env.create_dataset(dataset_id, eval_env=eval_env.spec, algorithm_name='random', ref_min_score=ref[0],
                       ref_max_score=ref[1], author='qam-suite tests', author_email='-', code_permalink='-',
                       description='random actions, for tests')
    return records


@pytest.fixture(scope='module')
def minari_datasets(tmp_path_factory):
    """(folder holding D4RL/..., {dataset id: records}): AntMaze umaze (continuing data, goal on the ant in episode
    0), door and pen, each a few random-action episodes of 8 to 25 steps."""
    root = tmp_path_factory.mktemp('minari')
    with environment.variables_set({'MINARI_DATASETS_PATH': str(root)}):
        records = {
            ANTMAZE: collect(ANTMAZE, 'AntMaze_UMaze-v4', 3, 25, dict(continuing_task=True, reset_target=False),
                             dict(continuing_task=True, reset_target=False), goal_on_ant=(0,), ref=(0.0, 400.0)),
            DOOR: collect(DOOR, 'AdroitHandDoor-v1', 3, 20, ref=DOOR_REFERENCE),
            PEN: collect(PEN, 'AdroitHandPen-v1', 2, 8),
        }
    return root, records


def load(root, dataset_id):
    return env_utils.make_env_and_datasets(dataset_id, dataset_dir=str(root), log=lambda message: None)


def expected_transitions(records, observation_of, reward_shift=0.0, goal_masks=False):
    """The D4RL conventions, one recorded step at a time."""
    rows = {k: [] for k in ('observations', 'actions', 'rewards', 'masks', 'terminals', 'next_observations')}
    for record in records:
        length = len(record['actions'])
        for t in range(length):
            at_goal = goal_masks and record['rewards'][t] > 0
            rows['observations'].append(observation_of(record['observations'][t]))
            rows['next_observations'].append(observation_of(record['observations'][t + 1]))
            rows['actions'].append(np.clip(record['actions'][t], -1 + 1e-5, 1 - 1e-5))
            rows['rewards'].append(record['rewards'][t] + reward_shift)
            rows['masks'].append(0.0 if record['terminations'][t] or at_goal else 1.0)
            rows['terminals'].append(1.0 if t == length - 1 else 0.0)
    return {k: np.asarray(v, np.float32) for k, v in rows.items()}


def assert_same_transitions(train, expected):
    assert sorted(train) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(train[key], expected[key], err_msg=key)


# ------------------------------------------------------------------------------------------------ names
def test_d4rl_ids_parse_with_their_domain_and_unknown_ones_are_refused():
    task = tasks.parse_env_name('D4RL/antmaze/large-diverse-v1')
    assert task.is_minari and task.dataset_name == 'D4RL/antmaze/large-diverse-v1'
    assert (task.domain.name, task.domain.horizon_length, task.domain.discount, task.domain.sparse) == \
        ('D4RL/antmaze', 1, 0.99, False)
    assert tasks.parse_env_name('D4RL/door/human-v2').domain.name == 'D4RL/door'
    assert not tasks.parse_env_name('scene-play-singletask-task1-v0').is_minari
    for bad in ('D4RL/antmaze/large-v1', 'D4RL/antmaze/umaze-v0', 'D4RL/kitchen/mixed-v2', 'D4RL/door/human'):
        with pytest.raises(ValueError, match='Unknown D4RL dataset id.*D4RL/antmaze/umaze-v1'):
            tasks.parse_env_name(bad)
    assert len(tasks.minari_ids()) == 6 + 4 * 3
    assert set(minari_data.CONVENTIONS) == set(tasks.MINARI_DOMAINS)


# ------------------------------------------------------------------------------------------ conventions
def test_antmaze_transitions_follow_d4rl_conventions(minari_datasets):
    root, records = minari_datasets
    env, _, train, val, info = load(root, ANTMAZE)
    expected = expected_transitions(
        records[ANTMAZE], lambda o: np.concatenate([o['achieved_goal'], o['observation']]), reward_shift=-1.0,
        goal_masks=True)
    assert_same_transitions(train, expected)
    # The scripted episode reached the goal: those steps are terminal for the TD target (mask 0, reward 0).
    assert 0 < (train['masks'] == 0).sum() < len(train['masks']) and set(np.unique(train['rewards'])) == {-1.0, 0.0}
    assert train['observations'].shape[1] == 29 and env.observation_space.shape == (29,)
    assert val is None and info['source'] == 'dir' and info['reward_shift'] == -1.0


def test_adroit_transitions_follow_d4rl_conventions(minari_datasets):
    root, records = minari_datasets
    for dataset_id in (DOOR, PEN):
        _, _, train, _, info = load(root, dataset_id)
        assert_same_transitions(train, expected_transitions(records[dataset_id], np.asarray))
        assert info['reward_shift'] == 0.0


def test_antmaze_evaluation_ends_at_the_goal_and_scores_its_success(minari_datasets):
    """D4RL's AntMaze: the episode ends when the ant reaches the goal, and the normalised score is 100 x success
    (reference scores 0 and 1, not the dataset's, which are returns of an environment that goes on at the goal)."""
    root, _ = minari_datasets
    _, make_eval_env, _, _, info = load(root, ANTMAZE)
    env = make_eval_env()
    observation, _ = env.reset(seed=0)
    raw = env.unwrapped
    raw.goal = observation[:2].astype(np.float64).copy()  # the flat observation starts with the ant's position
    next_observation, reward, terminated, truncated, step_info = env.step(np.zeros(8, np.float32))
    assert terminated and not truncated and step_info['success'] and reward == 1.0
    assert next_observation.shape == (29,) and next_observation.dtype == np.float32
    assert info['normalized_score'](1.0) == 100.0 and info['normalized_score'](0.25) == 25.0


def test_adroit_scores_use_the_dataset_reference_and_pen_lasts_d4rl_100_steps(minari_datasets):
    root, _ = minari_datasets
    _, _, _, _, info = load(root, DOOR)
    low, high = DOOR_REFERENCE
    assert info['normalized_score'](1000.0) == pytest.approx(100 * (1000.0 - low) / (high - low))
    _, make_eval_env, _, _, _ = load(root, PEN)
    assert make_eval_env().spec.max_episode_steps == 100  # the data was collected with 8-step episodes


def test_door_rewards_are_d4rl_dense_rewards(minari_datasets):
    """gymnasium-robotics's AdroitHandDoor-v1 adds +0.1·distance(palm, handle); D4RL's door subtracts it. The
    suite's environment gives D4RL's reward, computed here from the simulator state."""
    root, _ = minari_datasets
    _, make_eval_env, _, _, _ = load(root, DOOR)
    env = make_eval_env()
    env.reset(seed=1)
    raw, rng = env.unwrapped, np.random.default_rng(1)
    for _ in range(10):
        _, reward, _, _, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        hinge = raw.data.qpos[raw.door_hinge_addrs]
        palm, handle = raw.data.site_xpos[raw.grasp_site_id], raw.data.site_xpos[raw.handle_site_id]
        d4rl = -0.1 * np.linalg.norm(palm - handle) - 0.1 * (hinge - 1.57) ** 2 - 1e-5 * np.sum(raw.data.qvel ** 2)
        d4rl += 2 * (hinge > 0.2) + 8 * (hinge > 1.0) + 10 * (hinge > 1.35)
        assert reward == pytest.approx(float(d4rl), abs=1e-9)


def test_online_rewards_and_masks_are_those_of_the_data(minari_datasets):
    root, _ = minari_datasets
    env, _, _, _, info = load(root, ANTMAZE)
    environments = online.OnlineEnvironments([env], [7], 8, False, info['reward_shift'])
    environments.start(1)
    environments.enqueue(0, np.zeros(8, np.float32))
    transition = environments.step(0, 1)  # away from the goal: -1, bootstraps
    assert transition['rewards'] == -1.0 and transition['masks'] == 1.0
    env.unwrapped.goal = environments.observations[0][:2].astype(np.float64).copy()
    environments.enqueue(0, np.zeros(8, np.float32))
    transition = environments.step(0, 2)  # at the goal: 0, terminal, and a new episode starts
    assert transition['rewards'] == 0.0 and transition['masks'] == 0.0 and transition['terminals'] == 1.0
    assert environments.pop_finished(0) == [(1.0, -1.0)]


def test_evaluation_is_lockstep_and_reproducible_on_d4rl(minari_datasets):
    """The same evaluation index gives the same episodes (reset seeds and policy keys), another one other episodes."""
    root, _ = minari_datasets
    _, make_eval_env, _, _, _ = load(root, ANTMAZE)
    weights = np.random.default_rng(0).normal(size=(29, 8)) / 10

    def policy(observations, key):  # a fixed function of the observation, plus noise from the evaluation's key
        noise = np.asarray(jax.random.uniform(key, (len(observations), 8), minval=-0.5, maxval=0.5))
        return np.tanh(observations @ weights) + noise

    def run(eval_index):
        envs = [make_eval_env() for _ in range(3)]
        metrics, _ = evaluation.evaluate(policy, envs, seed=11, eval_index=eval_index, action_dim=8)
        return metrics['episode_return'], metrics['episode_length'], [env.unwrapped.data.qpos.copy() for env in envs]

    first, again, other = run(1), run(1), run(2)
    assert first[:2] == again[:2] and all(np.array_equal(a, b) for a, b in zip(first[2], again[2]))
    assert not all(np.array_equal(a, b) for a, b in zip(first[2], other[2]))


# ----------------------------------------------------------------------------------------------- bad input
def test_download_without_a_network_fails_within_seconds(minari_datasets, tmp_path, monkeypatch):
    monkeypatch.setattr(minari_data, 'DOWNLOAD_HOST', 'http://127.0.0.1:9')  # nothing listens there
    task = tasks.parse_env_name(ANTMAZE)
    for source in ('download', 'auto'):  # auto downloads what is not in the folder
        with pytest.raises(data_sources.DatasetError, match="Cannot reach Minari's download server"):
            data_sources.locate_dataset(task, source=source, dataset_dir=str(tmp_path), log=lambda m: None)


def test_download_writes_into_the_dataset_dir_and_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    """Minari's download writes where MINARI_DATASETS_PATH names: --dataset_dir during the download, the caller's
    value again after it, also when the download fails."""
    monkeypatch.setenv('MINARI_DATASETS_PATH', '/callers/own/folder')
    monkeypatch.setattr(minari_data, '_check_network', lambda: None)
    seen = []

    def failing_download(dataset_id):
        seen.append((dataset_id, os.environ['MINARI_DATASETS_PATH']))
        raise OSError('disk full')

    monkeypatch.setattr(minari_data.minari, 'download_dataset', failing_download)
    with pytest.raises(data_sources.DatasetError, match="Minari's download failed.*disk full"):
        data_sources.locate_dataset(tasks.parse_env_name(ANTMAZE), source='download', dataset_dir=str(tmp_path),
                                    log=lambda m: None)
    assert seen == [(ANTMAZE, str(tmp_path))]
    assert os.environ['MINARI_DATASETS_PATH'] == '/callers/own/folder'


def test_missing_and_mismatched_datasets_are_refused_with_the_fix(minari_datasets, tmp_path):
    root, _ = minari_datasets
    task = tasks.parse_env_name(ANTMAZE)
    with pytest.raises(data_sources.DatasetError, match='no dataset folder.*--dataset_dir'):
        data_sources.locate_dataset(task, source='dir', dataset_dir=str(tmp_path), log=lambda m: None)
    with pytest.raises(data_sources.DatasetError, match='cannot be generated'):
        data_sources.locate_dataset(task, source='generate', dataset_dir=str(root), log=lambda m: None)
    # A door dataset whose metadata names the pen environment: 39-dimensional data, a 45-dimensional environment.
    shutil.copytree(os.path.join(root, 'D4RL'), tmp_path / 'D4RL')
    metadata_path = tmp_path / 'D4RL' / 'door' / 'human-v2' / 'data' / 'metadata.json'
    metadata = json.loads(metadata_path.read_text())
    for key in ('env_spec', 'eval_env_spec'):
        metadata[key] = metadata[key].replace('AdroitHandDoor-v1', 'AdroitHandPen-v1').replace(
            'adroit_door:AdroitHandDoorEnv', 'adroit_pen:AdroitHandPenEnv')
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(data_sources.DatasetError, match='does not match its environment.*observations'):
        load(tmp_path, DOOR)


def test_main_refuses_unknown_ids_missing_data_and_sparse(minari_datasets, tmp_path):
    root, _ = minari_datasets
    base = ['--agent=qam', f'--save_dir={tmp_path}/runs', '--offline_steps=2', '--online_steps=0', '--progress=false']
    for args, message in (
        (['--env_name=D4RL/antmaze/huge-v1', f'--dataset_dir={root}'], 'Unknown D4RL dataset id'),
        ([f'--env_name={ANTMAZE}', '--dataset_source=dir', f'--dataset_dir={tmp_path}'], 'no dataset folder'),
        ([f'--env_name={ANTMAZE}', f'--dataset_dir={root}', '--sparse=true'], 'OGBench rewards'),
        ([f'--env_name={ANTMAZE}', f'--dataset_dir={root}', '--dataset_episodes=5'], 'used whole'),
    ):
        result = run_main(base + args, tmp_path, check=False)
        assert result.returncode != 0 and message in result.stderr + result.stdout, result.stderr[-2000:]
    assert not os.path.exists(tmp_path / 'runs')


# --------------------------------------------------------------------------------------------- training
TINY = {'actor_hidden_dims': '(16, 16)', 'value_hidden_dims': '(16, 16)', 'num_qs': '2', 'batch_size': '8',
        'flow_steps': '3', 'diffusion_steps': '3'}


def train_on_d4rl(agent, dataset_id, horizon_length, action_chunking, root, tmp_path):
    """A tiny offline-then-online run (online only for RLPD) through main.py; returns the evaluation rows."""
    config = agents.load_agent(agent).get_config()
    online_only = agent == 'rlpd'
    args = [
        f'--agent={agent}', f'--env_name={dataset_id}', f'--dataset_dir={root}', f'--save_dir={tmp_path}',
        f'--horizon_length={horizon_length}', f'--agent.action_chunking={action_chunking}', '--eval_episodes=2',
        '--offline_steps=0' if online_only else '--offline_steps=10', '--online_steps=10', '--start_training=5',
        '--eval_interval=5', '--log_interval=5', '--save_interval=5', '--progress=false',
        *(['--balanced_sampling=true'] if online_only else []),
        *[f'--agent.{key}={value}' for key, value in TINY.items() if key in config],
    ]
    result = run_main(args, tmp_path)
    (run_dir,) = [root_dir for root_dir, _, files in os.walk(tmp_path) if 'DONE' in files]
    done = json.load(open(os.path.join(run_dir, 'DONE')))
    assert 'normalised score' in done['summary'] and 'normalised score' in result.stdout
    with open(os.path.join(run_dir, 'eval.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [r['phase'] for r in rows] == ['online'] * 2 if online_only else ['offline'] * 2 + ['online'] * 2
    assert all(np.isfinite(float(r['normalized_score'])) for r in rows)
    return rows


@pytest.mark.parametrize('agent, dataset_id, horizon_length, action_chunking', [
    ('qam', ANTMAZE, 5, True),  # chunks of 5 actions
    ('fql', DOOR, 5, False),  # one action per call, 5-step TD target
    ('rebrac', ANTMAZE, 1, True),  # D4RL's default: no chunks
    ('dac', PEN, 1, True),
    ('rlpd', DOOR, 1, True),  # online only, half offline data
])
def test_agents_train_and_evaluate_on_d4rl(agent, dataset_id, horizon_length, action_chunking, minari_datasets,
                                            tmp_path):
    root, _ = minari_datasets
    rows = train_on_d4rl(agent, dataset_id, horizon_length, action_chunking, root, tmp_path)
    if dataset_id == ANTMAZE:  # the score is the success rate
        assert all(float(r['normalized_score']) == 100 * float(r['success']) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize('agent', agents.available_agents())
@pytest.mark.parametrize('dataset_id, action_chunking', [(ANTMAZE, True), (DOOR, False)])
def test_every_agent_trains_on_d4rl(agent, dataset_id, action_chunking, minari_datasets, tmp_path):
    root, _ = minari_datasets
    train_on_d4rl(agent, dataset_id, 5, action_chunking, root, tmp_path)
