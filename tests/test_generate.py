"""Local generation of the OGBench manipulation datasets (envs/generate.py, PROTOCOL §9.6).

The generated files are checked through ogbench's own loader and relabeller; determinism across worker counts
and seeds is checked byte for byte; the noisy settings are checked by replaying each episode's random stream; and
oracle rollouts in the single-task evaluation environments show that success, the environment's reward and the
relabelled dataset reward agree on the rows the generator records.
"""

import glob
import os
import subprocess
import sys

import gymnasium
import numpy as np
import ogbench  # noqa: F401  (registers the environments)
import ogbench.utils
import pytest
from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
from ogbench.relabel_utils import relabel_dataset

from envs import generate

L = generate.EPISODE_LENGTH
# PROTOCOL §10: observation dim, qpos dim, qvel dim, buttons.
DIMS = {
    'cube-double-play-v0': (37, 28, 26, 0),
    'scene-play-v0': (40, 25, 24, 2),
    'puzzle-3x3-play-v0': (55, 23, 23, 9),
}
XYZ_CENTER, XYZ_SCALE = np.array([0.425, 0.0, 0.0]), 10.0  # how manipspace observations encode positions
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raw(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def episode(arrays, i):
    return {k: v[i * L : (i + 1) * L] for k, v in arrays.items()}


# ---------------------------------------------------------------------------------------------------------------
# Names, sizes, errors.


def test_table_of_names_and_sizes():
    domains = ['cube-single', 'cube-double', 'cube-triple', 'cube-quadruple', 'scene', 'puzzle-3x3', 'puzzle-4x4']
    expected = {f'{d}-{t}-v0' for d in domains for t in ('play', 'noisy')}
    expected |= {'cube-quadruple-play-100m-v0', 'puzzle-4x4-play-100m-v0'}
    assert set(generate.GENERATABLE_DATASETS) == expected
    assert set(generate.STANDARD_EPISODES) == expected
    assert generate.STANDARD_EPISODES['cube-double-play-v0'] == 1000
    assert generate.STANDARD_EPISODES['cube-triple-noisy-v0'] == 3000
    assert generate.STANDARD_EPISODES['puzzle-4x4-play-100m-v0'] == 1000  # per shard
    assert generate.is_generatable('scene-noisy-v0')
    assert not generate.is_generatable('antmaze-large-navigate-v0')
    assert not generate.is_generatable('visual-cube-double-play-v0')


def test_locomotion_name_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError) as e:
        generate.generate_dataset('antmaze-large-navigate-v0', str(tmp_path))
    message = str(e.value)
    assert 'official files' in message and 'expert' in message
    assert 'cube-double-play-v0' in message and 'puzzle-4x4-play-100m-v0' in message  # lists what can be generated
    with pytest.raises(ValueError, match='Generatable datasets'):
        generate.generate_dataset('cube-double-expert-v0', str(tmp_path))
    with pytest.raises(ValueError, match='generate_shards'):
        generate.generate_dataset('puzzle-4x4-play-100m-v0', str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_episode_parameters_follow_the_protocol():
    """p_stack ranges per cube domain, xi ~ U(0, 0.1), noise std [xi, xi, xi, 3xi, 10xi], p_random_action."""
    rng = np.random.default_rng(0)
    p_stack_ranges = {'cube-double': (0.0, 0.25), 'cube-triple': (0.05, 0.35), 'cube-quadruple': (0.1, 0.5)}
    for domain in generate.COLLECTION_DOMAINS:
        for dataset_type in ('play', 'noisy'):
            draws = [generate.episode_parameters(f'{domain}-{dataset_type}-v0', rng) for _ in range(400)]
            p_stack = np.array([d['p_stack'] for d in draws])
            low, high = p_stack_ranges.get(domain, (0.5, 0.5))
            assert p_stack.min() >= low and p_stack.max() <= high
            if high > low:
                assert p_stack.max() - p_stack.min() > 0.8 * (high - low)
            xi = np.array([d['xi'] for d in draws])
            if dataset_type == 'play':
                assert np.all(xi == 0) and all(d['p_random_action'] == 0 and d['noise_std'] is None for d in draws)
                continue
            assert xi.min() >= 0 and xi.max() < 0.1 and xi.max() > 0.09
            for d in draws:
                np.testing.assert_allclose(d['noise_std'], d['xi'] * np.array([1, 1, 1, 3, 10]))
                assert d['p_random_action'] == (0.2 if domain.startswith('puzzle') else 0.1)


def test_select_action_mixes_random_and_noisy_oracle_actions():
    class ZeroOracle:
        def select_action(self, ob, info):
            return np.zeros(5)

    xi = 0.02
    params = dict(p_stack=0.5, xi=xi, noise_std=xi * np.array([1, 1, 1, 3, 10]), p_random_action=0.1)
    rng = np.random.default_rng(1)
    actions = np.array([generate.select_action(ZeroOracle(), None, None, rng, params) for _ in range(20000)])
    assert np.all(np.abs(actions) <= 1)
    random_rows = np.any(np.abs(actions[:, :3]) > 10 * xi, axis=1)  # noise never gets there (10 sigma)
    assert abs(random_rows.mean() - 0.1) < 0.01
    np.testing.assert_allclose(actions[~random_rows].std(axis=0), params['noise_std'], rtol=0.05)
    assert np.all(np.abs(actions[random_rows]).max(axis=0) > 0.95)  # uniform on [-1, 1]


def test_scene_rejection_rule():
    def qpos_with_cube(*xyzs):
        qpos = np.zeros((len(xyzs), 25), np.float32)
        qpos[:, 14:17] = xyzs
        return qpos

    on_table = (0.4, 0.0, 0.02)
    assert not generate.scene_episode_rejected(qpos_with_cube(on_table, (0.4, 0.28, 0.02), (0.4, -0.29, 0.02)))
    assert generate.scene_episode_rejected(qpos_with_cube(on_table, (0.4, 0.29, 0.02)))  # y >= 0.29
    assert generate.scene_episode_rejected(qpos_with_cube(on_table, (0.4, 0.35, 0.07)))
    assert generate.scene_episode_rejected(qpos_with_cube(on_table, (0.4, -0.3, 0.02)))  # y <= -0.3, z < 0.06
    assert generate.scene_episode_rejected(qpos_with_cube(on_table, (0.4, -0.32, 0.09)))  # z > 0.08
    assert not generate.scene_episode_rejected(qpos_with_cube(on_table, (0.4, -0.32, 0.07)))  # z in [0.06, 0.08]
    assert not generate.scene_episode_rejected(qpos_with_cube(on_table, (0.4, -0.3, 0.06), (0.4, -0.31, 0.08)))


# ---------------------------------------------------------------------------------------------------------------
# The shared fixture's files.


def test_generated_files_have_the_protocol_format(generated_datasets_dir):
    assert sorted(os.listdir(generated_datasets_dir)) == sorted(
        f'{name}{suffix}.npz' for name in DIMS for suffix in ('', '-val')
    )  # and nothing else: no temporary file left behind
    for name, (obs_dim, nq, nv, n_buttons) in DIMS.items():
        train_path, val_path = generate.dataset_paths(name, str(generated_datasets_dir))
        for path, episodes in ((train_path, 2), (val_path, 1)):
            f = raw(path)
            n = episodes * L
            keys = {'observations', 'actions', 'terminals', 'qpos', 'qvel'}
            keys |= {'button_states'} if n_buttons else set()
            assert set(f) == keys
            assert f['observations'].shape == (n, obs_dim) and f['observations'].dtype == np.float32
            assert f['actions'].shape == (n, 5) and f['actions'].dtype == np.float32
            assert f['terminals'].shape == (n,) and f['terminals'].dtype == bool
            assert f['qpos'].shape == (n, nq) and f['qpos'].dtype == np.float32
            assert f['qvel'].shape == (n, nv) and f['qvel'].dtype == np.float32
            if n_buttons:
                assert f['button_states'].shape == (n, n_buttons) and f['button_states'].dtype == np.int64
                assert set(np.unique(f['button_states'])) <= {0, 1}
            assert np.flatnonzero(f['terminals']).tolist() == [L * (i + 1) - 1 for i in range(episodes)]
            assert np.all(np.abs(f['actions']) <= 1)
            assert all(np.all(np.isfinite(v)) for v in f.values())
            assert np.any(np.abs(f['actions'][:-1]) > 0.05)  # the arm is driven, not idle

            # ogbench's own loader: 1000 transitions per episode, next_observations from the next row.
            d = ogbench.utils.load_dataset(path, add_info=True)
            assert d['observations'].shape == (episodes * (L - 1), obs_dim)
            assert d['qpos'].shape == (episodes * (L - 1), nq)
            np.testing.assert_array_equal(d['terminals'], np.tile(np.r_[np.zeros(L - 2), 1.0], episodes))
            np.testing.assert_array_equal(d['next_observations'][0], f['observations'][1])


def test_rows_store_the_state_they_observe(generated_datasets_dir):
    """qpos / button_states of row t describe s_t, the state of observations[t] (PROTOCOL §9.1)."""
    for name in DIMS:
        f = raw(generate.dataset_paths(name, str(generated_datasets_dir))[0])
        obs, qpos = f['observations'].astype(np.float64), f['qpos'].astype(np.float64)
        if name.startswith('cube'):
            for c in range(2):  # after 19 proprio entries, 9 per cube starting with its scaled xyz
                scaled_xyz = (qpos[:, 14 + 7 * c : 17 + 7 * c] - XYZ_CENTER) * XYZ_SCALE
                np.testing.assert_allclose(obs[:, 19 + 9 * c : 22 + 9 * c], scaled_xyz, atol=1e-4)
        elif name.startswith('scene'):
            np.testing.assert_allclose(obs[:, 19:22], (qpos[:, 14:17] - XYZ_CENTER) * XYZ_SCALE, atol=1e-4)
            for b in range(2):  # after the cube: per button a one-hot state, position and velocity
                np.testing.assert_array_equal(obs[:, 28 + 4 * b : 30 + 4 * b], np.eye(2)[f['button_states'][:, b]])
            np.testing.assert_allclose(obs[:, 36], qpos[:, 23] * 18.0, atol=1e-4)  # drawer
            np.testing.assert_allclose(obs[:, 38], qpos[:, 24] * 15.0, atol=1e-4)  # window
            assert not generate.scene_episode_rejected(f['qpos'])
        else:
            for b in range(9):
                np.testing.assert_array_equal(obs[:, 19 + 4 * b : 21 + 4 * b], np.eye(2)[f['button_states'][:, b]])


def test_single_task_loading_relabels_generated_files(generated_datasets_dir):
    """ogbench.utils.make_env_and_datasets with dataset_path: rewards in {-n, ..., 0}, masks = 1 - [reward == 0]."""
    num_subgoals = {'cube-double': 2, 'scene': 5, 'puzzle-3x3': 9}
    for domain, n in num_subgoals.items():
        path = os.path.join(generated_datasets_dir, f'{domain}-play-v0.npz')
        for task in (1, 2):
            env, train, val = ogbench.utils.make_env_and_datasets(
                f'{domain}-play-singletask-task{task}-v0', dataset_path=path
            )
            for d, episodes in ((train, 2), (val, 1)):
                assert d['rewards'].shape == d['masks'].shape == (episodes * (L - 1),)
                assert d['rewards'].min() >= -n and d['rewards'].max() <= 0
                np.testing.assert_array_equal(d['masks'], (d['rewards'] != 0).astype(np.float32))
            env.close()


# ---------------------------------------------------------------------------------------------------------------
# Determinism.


def test_same_seed_same_bytes_for_any_worker_count(tmp_path, generated_datasets_dir):
    """One worker (episodes run back to back in one environment) and two workers give identical arrays; a
    1-episode set is the first episode of the fixture's 2-episode set (per-episode seeding); another seed differs."""
    one, two, other = (str(tmp_path / d) for d in ('one', 'two', 'other'))
    generate.generate_dataset('cube-double-play-v0', one, num_episodes=1, seed=0, num_workers=1, progress=False)
    generate.generate_dataset('cube-double-play-v0', two, num_episodes=1, seed=0, num_workers=2, progress=False)
    generate.generate_dataset('cube-double-play-v0', other, num_episodes=1, seed=1, num_workers=2, progress=False)
    fixture = [raw(p) for p in generate.dataset_paths('cube-double-play-v0', str(generated_datasets_dir))]
    for split in (0, 1):
        a, b, c = (raw(generate.dataset_paths('cube-double-play-v0', d)[split]) for d in (one, two, other))
        assert_same_arrays(a, b)
        assert_same_arrays(a, episode(fixture[split], 0))
        assert not np.array_equal(a['observations'], c['observations'])
        assert not np.array_equal(a['actions'], c['actions'])
    train = raw(generate.dataset_paths('cube-double-play-v0', one)[0])
    val = raw(generate.dataset_paths('cube-double-play-v0', one)[1])
    assert not np.array_equal(train['observations'], val['observations'])  # splits are seeded apart


@pytest.mark.skipif('OPENBLAS_CORETYPE' not in generate.pinned_numerics(), reason='pins apply to x86-64 with AVX2')
def test_same_bytes_whatever_kernels_the_caller_would_pick(tmp_path, monkeypatch, generated_datasets_dir):
    """Another CPU makes NumPy and OpenBLAS pick other kernels, and their last-bit differences change the episodes.
    Emulated here by the caller's environment: without the workers' pins (pinned_numerics) the episode differs from
    the fixture's; with them it is the same bytes."""
    monkeypatch.setenv('NPY_DISABLE_CPU_FEATURES', 'X86_V3 X86_V4 AVX512_ICL AVX512_SPR')  # as a pre-AVX2 CPU
    monkeypatch.setenv('OPENBLAS_CORETYPE', 'Prescott')
    fixture = raw(generate.dataset_paths('cube-double-play-v0', str(generated_datasets_dir))[0])
    pinned, unpinned = str(tmp_path / 'pinned'), str(tmp_path / 'unpinned')
    generate.generate_dataset('cube-double-play-v0', pinned, num_episodes=1, seed=0, progress=False)
    assert_same_arrays(raw(generate.dataset_paths('cube-double-play-v0', pinned)[0]), episode(fixture, 0))
    monkeypatch.setattr(generate, 'pinned_numerics', dict)
    generate.generate_dataset('cube-double-play-v0', unpinned, num_episodes=1, seed=0, progress=False)
    assert not np.array_equal(raw(generate.dataset_paths('cube-double-play-v0', unpinned)[0])['qpos'],
                              episode(fixture, 0)['qpos'])


def test_generation_leaves_the_global_rng_alone(tmp_path):
    # The oracles draw from np.random, which the generator seeds per episode: in its worker processes, not here.
    np.random.seed(123)
    expected = np.random.RandomState(123).uniform(size=3)
    generate.generate_dataset('cube-single-play-v0', str(tmp_path), num_episodes=1, num_workers=1, progress=False)
    np.testing.assert_array_equal(np.random.uniform(size=3), expected)


# ---------------------------------------------------------------------------------------------------------------
# Noisy data.


def test_noisy_episode_respects_its_settings(tmp_path):
    """Replaying each episode's own random stream recovers which rows were random actions (they must equal the
    uniform draws exactly, about 10% of rows) and the Gaussian noise of the others: the cube Markov oracle's
    gripper command is exactly +-1, so every unclipped gripper action minus its noise must be +-1."""
    name = 'cube-double-noisy-v0'
    paths = generate.generate_dataset(name, str(tmp_path), num_episodes=1, seed=3, num_workers=2, progress=False)
    for split, path in zip(('train', 'val'), paths):
        f = raw(path)
        assert f['observations'].shape == (L, 37) and f['actions'].dtype == np.float32
        assert np.all(np.abs(f['actions']) <= 1)
        ss = generate.episode_seed_sequence(3, split, 0)  # a cube domain: never rejected, attempt 0
        _, _, rng = generate.episode_seeds(ss)
        params = generate.episode_parameters(name, rng)
        assert 0 <= params['xi'] < 0.1 and 0 <= params['p_stack'] <= 0.25
        is_random = np.zeros(L, bool)
        checked = 0
        for t in range(L):
            if rng.uniform() < params['p_random_action']:
                is_random[t] = True
                np.testing.assert_array_equal(f['actions'][t], rng.uniform(-1, 1, size=5).astype(np.float32))
            else:
                noise = rng.normal(0.0, params['noise_std'])
                gripper = float(f['actions'][t, 4])
                if abs(gripper) < 1:
                    assert min(abs(gripper - noise[4] - 1), abs(gripper - noise[4] + 1)) < 1e-5
                    checked += 1
        assert 0.05 < is_random.mean() < 0.15
        assert checked > 100


# ---------------------------------------------------------------------------------------------------------------
# Files: no overwrite, atomic writes, temporary names.


def test_existing_files_are_never_overwritten(generated_datasets_dir, tmp_path):
    train_path, _ = generate.dataset_paths('cube-double-play-v0', str(generated_datasets_dir))
    before = os.path.getmtime(train_path)
    with pytest.raises(FileExistsError) as e:
        generate.generate_dataset('cube-double-play-v0', str(generated_datasets_dir), num_episodes=1, progress=False)
    assert 'cube-double-play-v0' in str(e.value) and 'Delete it or choose another --out_dir' in str(e.value)
    assert os.path.getmtime(train_path) == before
    path = str(tmp_path / 'x.npz')
    generate.write_npz_atomic(path, dict(a=np.arange(3)))
    with pytest.raises(FileExistsError, match='x.npz'):
        generate.write_npz_atomic(path, dict(a=np.arange(4)))
    np.testing.assert_array_equal(raw(path)['a'], np.arange(3))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def savez_that_dies(f, **arrays):
        f.write(b'PK\x03\x04 half a zip')
        raise KeyboardInterrupt

    monkeypatch.setattr(np, 'savez_compressed', savez_that_dies)
    with pytest.raises(KeyboardInterrupt):
        generate.write_npz_atomic(str(tmp_path / 'cube-double-play-v0.npz'), dict(a=np.arange(3)))
    assert os.listdir(tmp_path) == []


def test_half_written_temp_file_is_not_a_dataset(tmp_path):
    out_dir = str(tmp_path)
    train_path, val_path = generate.dataset_paths('cube-double-play-v0', out_dir)
    for path in (train_path, val_path):
        tmp = generate.temp_path(path)
        assert os.path.dirname(tmp) == out_dir
        assert not tmp.endswith('.npz') and os.path.basename(tmp).startswith('.')
        with open(tmp, 'wb') as f:
            f.write(b'PK\x03\x04 half a zip')
    assert glob.glob(os.path.join(out_dir, '*.npz')) == []  # what shard listings and users' globs see
    assert not os.path.exists(train_path) and not os.path.exists(val_path)
    generate._refuse_existing(train_path, val_path)  # the generator itself does not mistake them either
    shard_tmp = generate.temp_path(generate.shard_paths('puzzle-4x4-play-100m-v0', out_dir, 1)[0])
    assert not shard_tmp.endswith('.npz') and '-val' not in os.path.basename(shard_tmp)


# ---------------------------------------------------------------------------------------------------------------
# Shards.


def test_shards_layout_independence_and_resume(tmp_path):
    name = 'puzzle-4x4-play-100m-v0'
    out_dir = str(tmp_path)
    kwargs = dict(episodes_per_shard=1, seed=0, progress=False)
    paths = generate.generate_shards(name, out_dir, num_shards=2, num_workers=2, **kwargs)
    assert paths == [os.path.join(out_dir, name, f'{name}-{i:03d}.npz') for i in range(2)]
    listing = sorted(os.listdir(os.path.join(out_dir, name)))
    assert listing == sorted([os.path.basename(p) for p in paths] + ['generation.json'])
    shards = [raw(p) for p in paths]
    for s in shards:
        assert s['observations'].shape == (L, 83) and s['qpos'].shape == (L, 30) and s['button_states'].shape == (L, 16)
        assert np.flatnonzero(s['terminals']).tolist() == [L - 1]
        d = ogbench.utils.load_dataset(paths[0], add_info=True)
        assert d['observations'].shape == (L - 1, 83)
    assert not np.array_equal(shards[0]['observations'], shards[1]['observations'])  # seeded by shard index

    # Resume: existing shards of the same seed are kept, only shard 2 is generated.
    mtimes = [os.path.getmtime(p) for p in paths]
    more = generate.generate_shards(name, out_dir, num_shards=3, num_workers=1, **kwargs)
    assert more[:2] == paths and [os.path.getmtime(p) for p in paths] == mtimes and os.path.exists(more[2])
    assert not np.array_equal(raw(more[2])['observations'], shards[1]['observations'])
    with pytest.raises(FileExistsError, match='Delete it or choose another --out_dir'):
        generate.generate_shards(name, out_dir, num_shards=1, episodes_per_shard=1, seed=1, progress=False)
    with pytest.raises(FileExistsError):
        generate.generate_shards(name, out_dir, num_shards=1, resume=False, **kwargs)
    with pytest.raises(ValueError, match='generate_dataset'):
        generate.generate_shards('cube-double-play-v0', out_dir, num_shards=1)


# ---------------------------------------------------------------------------------------------------------------
# Command line.


def test_command_line(tmp_path):
    out = subprocess.run(
        [sys.executable, '-m', 'envs.generate', '--dataset_name=cube-single-play-v0', '--dataset_episodes=1',
         '--num_workers=1', f'--out_dir={tmp_path}', '--seed=5'],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f'{tmp_path}/cube-single-play-v0.npz: 1 episodes, 1,000 transitions' in out.stdout
    assert f'{tmp_path}/cube-single-play-v0-val.npz' in out.stdout
    assert sorted(os.listdir(tmp_path)) == ['cube-single-play-v0-val.npz', 'cube-single-play-v0.npz']


# ---------------------------------------------------------------------------------------------------------------
# Oracles reach success in the single-task evaluation environments.


def _privileged_info(env, info, subtask):
    """The target keys that data-collection mode adds to info, computed from the single-task goal instead."""
    u = env.unwrapped
    info = dict(info)
    kind = subtask['kind']
    if kind == 'cube':
        b = subtask['block']
        info['privileged/target_block'] = b
        info['privileged/target_block_pos'] = u._data.mocap_pos[u._cube_target_mocap_ids[b]].copy()  # the task's goal
        info['privileged/target_block_yaw'] = np.zeros(1)  # goal cubes are axis-aligned
    elif kind == 'drawer':
        info['privileged/target_drawer_handle_pos'] = u._data.site_xpos[u._drawer_target_site_id].copy()
    elif kind == 'window':
        info['privileged/target_window_handle_pos'] = u._data.site_xpos[u._window_target_site_id].copy()
    else:
        b = subtask['button']
        info['privileged/target_button'] = b
        info['privileged/target_button_top_pos'] = u._data.site_xpos[u._button_site_ids[b]].copy()
        info['privileged/target_button_state'] = subtask['target_state']
    return info


def _lights_out_presses(init, goal, rows, cols):
    """Buttons to press once each to turn `init` into `goal` (each press toggles the button and its neighbours)."""
    for mask in sorted(range(2 ** (rows * cols)), key=lambda m: bin(m).count('1')):
        state = init.copy()
        for i in range(rows * cols):
            if mask >> i & 1:
                x, y = divmod(i, cols)
                for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                    if 0 <= x + dx < rows and 0 <= y + dy < cols:
                        state[(x + dx) * cols + y + dy] ^= 1
        if np.array_equal(state, goal):
            return [i for i in range(rows * cols) if mask >> i & 1]
    raise AssertionError('no solution')


def _drive_single_task(env_name, make_plan):
    """Run scripted oracle sub-tasks in the single-task env until it reports success; record rows as the generator
    does (qpos/qvel/button_states from info['prev_*']) together with the env's own reward and success."""
    env = gymnasium.make(env_name, disable_env_checker=True)
    np.random.seed(0)  # the oracles draw from np.random
    ob, info = env.reset(seed=0)
    plan = make_plan(env.unwrapped)
    rows = dict(qpos=[], qvel=[], button_states=[], env_rewards=[], success=[], terminated=[])

    def start(k):
        oracle, subtask = plan[k]
        if subtask['kind'] == 'button':  # press it once: its state must flip
            subtask['target_state'] = (env.unwrapped._cur_button_states[subtask['button']] + 1) % 2
        oracle.reset(ob, _privileged_info(env, info, subtask))
        return oracle, subtask

    k = 0
    oracle, subtask = start(k)
    truncated = False
    while not truncated:
        action = oracle.select_action(ob, _privileged_info(env, info, subtask))
        ob, reward, terminated, truncated, info = env.step(action)
        rows['qpos'].append(info['prev_qpos'].astype(np.float32))
        rows['qvel'].append(info['prev_qvel'].astype(np.float32))
        if 'prev_button_states' in info:
            rows['button_states'].append(info['prev_button_states'])
        rows['env_rewards'].append(reward)
        rows['success'].append(info['success'])
        rows['terminated'].append(terminated)
        if terminated:
            break
        if oracle.done and k + 1 < len(plan):
            k += 1
            oracle, subtask = start(k)
        elif oracle.done:
            oracle, subtask = start(k)  # retry the last sub-task
    return env, {key: np.array(v) for key, v in rows.items() if len(v)}


def _cube_double_task1(u):
    # Move the cubes whose goal differs from their start (task1: one cube).
    init, goal = u.cur_task_info['init_xyzs'], u.cur_task_info['goal_xyzs']
    moving = [i for i in range(u._num_cubes) if not np.allclose(init[i], goal[i])]
    return [(CubeMarkovOracle(env=u, min_norm=0.4), dict(kind='cube', block=i)) for i in moving]


def _scene_task1(u):
    # task1_open: open the drawer and the window (both unlocked).
    assert u.cur_task_info['task_name'] == 'task1_open'
    return [
        (DrawerMarkovOracle(env=u, min_norm=0.4), dict(kind='drawer')),
        (WindowMarkovOracle(env=u, min_norm=0.4), dict(kind='window')),
    ]


def _puzzle_3x3_task1(u):
    presses = _lights_out_presses(u._cur_button_states.copy(), u._target_button_states.copy(), 3, 3)
    oracle = ButtonMarkovOracle(env=u, min_norm=0.4, gripper_always_closed=True)  # as in the puzzle datasets
    return [(oracle, dict(kind='button', button=b)) for b in presses]


@pytest.mark.parametrize(
    'env_name,make_plan,num_subgoals',
    [
        ('cube-double-singletask-task1-v0', _cube_double_task1, 2),
        ('scene-singletask-task1-v0', _scene_task1, 5),
        ('puzzle-3x3-singletask-task1-v0', _puzzle_3x3_task1, 9),
    ],
)
def test_oracles_reach_success_and_rewards_masks_line_up(env_name, make_plan, num_subgoals):
    """The ogbench oracles, given the single-task goal (read from env.unwrapped: cube target mocaps, drawer/window
    target sites, target button states), solve task1 of each domain in the evaluation env itself: the env reports
    info['success'], reward 0 and terminated. On the way every step's rows are recorded exactly as the generator
    records them (info['prev_qpos'], ['prev_qvel'], ['prev_button_states'], i.e. s_t) and relabelled with
    ogbench's relabel_dataset. Because the single-task env computes reward and success on the state before the
    action (success_timing='pre'), the relabelled reward of row t must equal the env's reward at step t, and
    masks == 0 exactly on the rows where the env reports success. This proves that the stored state of each row is
    the state that rewards, masks and success refer to, for success rows and non-success rows alike."""
    env, rows = _drive_single_task(env_name, make_plan)
    assert rows['success'][-1] and rows['terminated'][-1] and rows['env_rewards'][-1] == 0
    assert not rows['success'][:-1].any() and not rows['terminated'][:-1].any()
    assert rows['env_rewards'].min() < 0  # the task started unsolved

    dataset = {k: rows[k] for k in ('qpos', 'qvel', 'button_states') if k in rows}
    relabel_dataset(env_name, env, dataset)
    np.testing.assert_array_equal(dataset['rewards'], rows['env_rewards'].astype(np.float32))
    np.testing.assert_array_equal(dataset['masks'] == 0, rows['success'])
    assert dataset['rewards'].min() >= -num_subgoals
    env.close()
