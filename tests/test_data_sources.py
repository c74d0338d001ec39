"""Environment names, dataset sources, file validation, relabelling, sparse rewards and shard streaming."""

import gc
import os
import time
import weakref

import numpy as np
import pytest

from envs import data_sources, env_utils, tasks

PAPER_DOMAINS = (
    'antmaze-large-navigate', 'antmaze-giant-navigate', 'humanoidmaze-medium-navigate', 'humanoidmaze-large-navigate',
    'scene-play', 'puzzle-3x3-play', 'puzzle-4x4-play', 'cube-double-play', 'cube-triple-play', 'cube-quadruple-play',
)


def test_every_paper_task_parses_with_protocol_settings():
    for base in PAPER_DOMAINS:
        for n in range(1, 6):
            task = tasks.parse_env_name(f'{base}-singletask-task{n}-v0')
            assert task.task_id == n and task.dataset_name == f'{base}-v0'
            maze = 'maze' in base
            assert task.domain.horizon_length == (1 if maze else 5)
            assert task.domain.discount == (0.995 if ('giant' in base or 'humanoid' in base) else 0.99)
            assert task.domain.rho == (0.0 if 'humanoid' in base else 0.5)
            assert task.domain.sparse == ('scene' in base or 'puzzle' in base)
    assert tasks.parse_env_name('cube-quadruple-play-singletask-task1-v0').sharded_dataset_name == 'cube-quadruple-play-100m-v0'
    assert tasks.parse_env_name('puzzle-4x4-play-singletask-task3-v0').sharded_dataset_name == 'puzzle-4x4-play-100m-v0'
    assert tasks.parse_env_name('cube-triple-noisy-singletask-task2-v0').gym_id == 'cube-triple-singletask-task2-v0'
    assert tasks.parse_env_name('antmaze-large-stitch-singletask-task1-v0').dataset_name == 'antmaze-large-stitch-v0'
    assert tasks.parse_env_name('cube-single-play-singletask-task4-v0').domain.name == 'cube-single'


@pytest.mark.parametrize(
    'name', ['cube-double-singletask-task2-v0', 'cube-double-play-singletask-task6-v0', 'antmaze-large-play-singletask-task1-v0',
             'cube-octuple-play-singletask-task1-v0', 'hopper-medium-v2']
)
def test_unknown_env_name_lists_valid_ones(name):
    with pytest.raises(ValueError, match='cube-triple-play-singletask-task2-v0') as error:
        tasks.parse_env_name(name)
    assert name in str(error.value) and 'cube-double-play' in str(error.value)


def test_sparse_conversion():
    np.testing.assert_array_equal(data_sources.to_sparse([-3.0, -1.0, 0.0, -2.0]), [-1, -1, 0, -1])


@pytest.fixture(scope='module')
def cube_double_env():
    return env_utils.make_env(tasks.parse_env_name('cube-double-play-singletask-task2-v0'))


def synthetic_file(path, env, episodes=2, length=11, seed=0, **overrides):
    """A small file in the official layout with random states; a few rows put both cubes on the goal."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    env.reset()
    goal = env.unwrapped._data.mocap_pos.copy()  # (2, 3) cube targets of the fixed task
    qpos = rng.normal(size=(n, env.unwrapped.model.nq)).astype(np.float32)
    at_goal = np.arange(n) % 4 == 0
    for c in range(2):
        qpos[at_goal, 14 + 7 * c : 17 + 7 * c] = goal[c]
    one_on_goal = np.arange(n) % 4 == 1
    qpos[one_on_goal, 14:17] = goal[0]
    terminals = np.zeros(n, bool)
    terminals[length - 1 :: length] = True
    arrays = dict(
        observations=rng.normal(size=(n, env.observation_space.shape[0])).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 5)).astype(np.float32),
        terminals=terminals,
        qpos=qpos,
        qvel=rng.normal(size=(n, env.unwrapped.model.nv)).astype(np.float32),
    )
    arrays['actions'][0] = [1.0, -1.0, 0.5, 1.0, -1.0]
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez_compressed(path, **arrays)
    return arrays


def test_load_transitions_relabels_like_ogbench(tmp_path, cube_double_env):
    path = str(tmp_path / 'cube-double-play-v0.npz')
    raw = synthetic_file(path, cube_double_env)
    data = data_sources.load_transitions(path, cube_double_env, sparse=False)
    keep = ~raw['terminals']
    assert set(data) == {'observations', 'actions', 'rewards', 'masks', 'terminals', 'next_observations'}
    assert len(data['observations']) == 20 and all(v.dtype == np.float32 for v in data.values())
    np.testing.assert_array_equal(data['observations'], raw['observations'][keep])
    # next observation = the following stored row of the same episode
    np.testing.assert_array_equal(data['next_observations'][:10], raw['observations'][1:11])
    np.testing.assert_array_equal(data['terminals'], np.tile([0] * 9 + [1], 2))
    # rewards and masks computed from each row's own state (PROTOCOL §9.3), written out independently here
    row = np.arange(22)[keep]
    expected_rewards = np.where(row % 4 == 0, 0.0, np.where(row % 4 == 1, -1.0, -2.0))
    np.testing.assert_array_equal(data['rewards'], expected_rewards)
    np.testing.assert_array_equal(data['masks'], (row % 4 != 0).astype(np.float32))
    assert np.abs(data['actions']).max() <= 1 - 1e-5 and data['actions'][0, 0] == np.float32(1 - 1e-5)
    sparse = data_sources.load_transitions(path, cube_double_env, sparse=True)
    np.testing.assert_array_equal(sparse['rewards'], -(expected_rewards != 0).astype(np.float32))
    np.testing.assert_array_equal(sparse['masks'], data['masks'])


@pytest.mark.parametrize(
    'problem, overrides, message',
    [
        ('missing key', dict(qpos=None), 'missing keys'),
        ('wrong obs dim', dict(observations=np.zeros((22, 40), np.float32)), 'observations has shape'),
        ('wrong qpos dim', dict(qpos=np.zeros((22, 35), np.float32)), 'qpos has shape'),
        ('nan', dict(actions=np.full((22, 5), np.nan, np.float32)), 'NaN or inf'),
        ('incomplete episode', dict(terminals=np.zeros(22, bool)), 'terminals'),
    ],
)
def test_bad_files_are_rejected_with_path(tmp_path, cube_double_env, problem, overrides, message):
    path = str(tmp_path / 'bad.npz')
    synthetic_file(path, cube_double_env, **overrides)
    with pytest.raises(data_sources.DatasetError, match=message) as error:
        data_sources.load_transitions(path, cube_double_env, sparse=False)
    assert path in str(error.value)


@pytest.mark.parametrize('damage', ['truncated', 'not a zip', 'absent'])
def test_corrupt_files_are_rejected(tmp_path, cube_double_env, damage):
    path = str(tmp_path / 'bad.npz')
    synthetic_file(path, cube_double_env)
    if damage == 'truncated':
        content = open(path, 'rb').read()
        open(path, 'wb').write(content[: len(content) // 2])
    elif damage == 'not a zip':
        open(path, 'w').write('<html>not found</html>')
    else:
        os.remove(path)
    with pytest.raises(data_sources.DatasetError) as error:
        data_sources.load_transitions(path, cube_double_env, sparse=False)
    assert path in str(error.value)


def test_download_fails_fast_without_network(monkeypatch):
    monkeypatch.setattr(data_sources.ogbench.utils, 'DATASET_URL', 'http://127.0.0.1:9/ogbench')
    start = time.time()
    with pytest.raises(data_sources.DatasetError, match='generate'):
        data_sources._check_network()
    assert time.time() - start < 10


@pytest.fixture
def no_network(monkeypatch):
    def refuse():
        raise data_sources.DatasetError('no network in this test')

    monkeypatch.setattr(data_sources, '_check_network', refuse)


def test_locomotion_without_files_says_where_to_put_them(tmp_path, no_network):
    task = tasks.parse_env_name('antmaze-large-navigate-singletask-task1-v0')
    for source in ('auto', 'generate'):
        with pytest.raises(data_sources.DatasetError, match='antmaze-large-navigate-v0-val.npz') as error:
            data_sources.locate_dataset(task, source=source, dataset_dir=str(tmp_path), cache_dir=str(tmp_path / 'c'), log=lambda m: None)
        assert str(tmp_path) in str(error.value) and 'cannot be generated' in str(error.value)
    with pytest.raises(data_sources.DatasetError, match='expected the official files'):
        data_sources.locate_dataset(task, source='dir', dataset_dir=str(tmp_path), log=lambda m: None)
    with pytest.raises(data_sources.DatasetError, match='no network'):
        data_sources.locate_dataset(task, source='download', dataset_dir=str(tmp_path), log=lambda m: None)
    with pytest.raises(ValueError, match='auto|dir|download|generate'):
        data_sources.locate_dataset(task, source='web')


def test_auto_prefers_official_files_then_complete_cache_then_generation(tmp_path, no_network, monkeypatch, cube_double_env):
    task = tasks.parse_env_name('cube-double-play-singletask-task2-v0')
    official, cache = tmp_path / 'official', tmp_path / 'cache'
    calls = []

    def fake_generate(name, out_dir, num_episodes, seed, num_workers):
        calls.append((name, num_episodes, seed))
        os.makedirs(out_dir, exist_ok=True)
        synthetic_file(os.path.join(out_dir, f'{name}-val.npz'), cube_double_env)
        synthetic_file(os.path.join(out_dir, f'{name}.npz'), cube_double_env)

    from envs import generate

    monkeypatch.setattr(generate, 'generate_dataset', fake_generate)
    locate = lambda: data_sources.locate_dataset(  # noqa: E731
        task, source='auto', dataset_dir=str(official), cache_dir=str(cache), episodes=3, seed=7, log=lambda m: None
    )
    # A cache left by a killed generator (val written, train missing) is not used: generation runs again.
    partial = data_sources.generated_dir(str(cache), 'cube-double-play-v0', 3, 7)
    os.makedirs(partial)
    open(os.path.join(partial, 'cube-double-play-v0.npz.tmp-123'), 'w').write('half')
    synthetic_file(os.path.join(partial, 'cube-double-play-v0-val.npz'), cube_double_env)
    assert locate()['source'] == 'generate' and calls == [('cube-double-play-v0', 3, 7)]
    assert locate()['source'] == 'cache' and len(calls) == 1
    official.mkdir()
    for suffix in ('', '-val'):
        synthetic_file(str(official / f'cube-double-play-v0{suffix}.npz'), cube_double_env)
    located = locate()
    assert located['source'] == 'dir' and located['train_path'] == str(official / 'cube-double-play-v0.npz')


def test_sharded_dataset_cycles_and_holds_at_most_two_shards(tmp_path):
    alive = set()

    class Shard(dict):
        pass

    def load(path):
        shard = Shard(name=path)
        alive.add(path)
        weakref.finalize(shard, alive.discard, path)
        time.sleep(0.01)
        return shard

    paths = [str(tmp_path / f'shard-{i:03d}.npz') for i in range(4)]
    stream = env_utils.ShardedDataset(paths, load)
    seen = [stream.current['name']]
    peak = 0
    for _ in range(9):
        seen.append(stream.advance()['name'])
        gc.collect()
        peak = max(peak, len(alive))
    assert seen == [paths[i % 4] for i in range(10)]
    assert peak <= 2


def test_list_shards_excludes_validation_files(tmp_path):
    for name in ('b-001.npz', 'b-000.npz', 'b-000-val.npz', 'notes.txt'):
        (tmp_path / name).write_text('x')
    assert [os.path.basename(p) for p in data_sources.list_shards(str(tmp_path))] == ['b-000.npz', 'b-001.npz']
