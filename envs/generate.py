"""Local generation of the OGBench manipulation datasets (play and noisy), PROTOCOL §9.6.

The datasets are collected the way OGBench collected its own: the goal-conditioned base environment in
data-collection mode (`terminate_at_goal=False`, `mode='data_collection'`, 1001 steps per episode), driven by
the scripted oracles that ship with the `ogbench` package. Each oracle solves the current sub-task (move a
cube, press a button, open the drawer, ...); when it is done, the environment draws a new sub-task with
`set_new_target` and the matching oracle takes over.

  play   plan oracles (keyframes interpolated at the control rate + temporally smoothed noise 0.1,
         smoothing 0.5), no random actions.
  noisy  Markov oracles (min_norm 0.4) + Gaussian action noise with per-episode scale xi ~ U(0, 0.1)
         (std [xi, xi, xi, 3 xi, 10 xi] per action dimension), and uniformly random actions with
         probability 0.1 (cube, scene) or 0.2 (puzzle).

Puzzle oracles keep the gripper closed; scene uses the cube, button, drawer and window oracles; cube domains
draw p_stack per episode. Rows store s_t: `observations` as observed, `qpos`/`qvel`/`button_states` from the
step's `prev_*` info. Scene episodes whose cube leaves the table (rule below) are discarded and redone.

Differences from the official generator, none of which changes the distribution: it is seeded. Every episode's
randomness (environment reset seed, the oracles' draws from the global `np.random`, random actions, action
noise, xi, p_stack) comes from (seed, stream, split, episode index, attempt) through `np.random.SeedSequence`,
so a dataset is byte-identical whatever the number of worker processes, and the first k episodes of a larger
set equal a k-episode set. Across machines too, where it can be: a 1-ULP difference in one sine or dot product
grows into a different episode, and NumPy and its OpenBLAS pick their kernels by CPU (on an AVX-512 machine,
turning NumPy's AVX-512 kernels off, or forcing another OpenBLAS kernel, changed a cube-double set's bytes). So
episodes always run in worker processes whose kernels are pinned to an AVX2 machine's (`pinned_numerics`).
Random actions are drawn from that per-episode generator rather than from `env.action_space.sample()` (the
same uniform distribution on [-1, 1]^5).

Command line:
  python -m envs.generate --dataset_name=cube-double-play-v0 --dataset_episodes=100 --num_workers=2 --out_dir=data
  python -m envs.generate --dataset_name=puzzle-4x4-play-100m-v0 --num_shards=4 --out_dir=data
"""

import dataclasses
import json
import multiprocessing
import os
import platform
import warnings

import numpy as np

from utils import environment, files
from utils.files import TEMP_SUFFIX, temp_path  # noqa: F401 (part of this module's interface: tests, shard listing)

EPISODE_LENGTH = 1001  # stored rows per episode: 1000 transitions + the final (time-limit) row
DATASET_TYPES = ('play', 'noisy')

# play (plan oracles) and noisy (Markov oracles) parameters, PROTOCOL §9.6.
PLAN_NOISE = 0.1
PLAN_NOISE_SMOOTHING = 0.5
MARKOV_MIN_NORM = 0.4
NOISY_XI_RANGE = (0.0, 0.1)
NOISY_STD_SCALE = np.array([1.0, 1.0, 1.0, 3.0, 10.0])  # noise std per action dim, in units of xi


@dataclasses.dataclass(frozen=True)
class CollectionDomain:
    """How one manipulation domain's data is collected."""

    env_id: str  # goal-conditioned base environment
    oracle_kinds: tuple  # values of info['privileged/target_task'] that occur, one oracle each
    p_stack_range: tuple  # per-episode p_stack ~ U(low, high); low == high: constant
    noisy_p_random_action: float  # probability of a uniformly random action in noisy sets
    gripper_always_closed: bool  # puzzle: the button oracles press with a closed gripper
    has_buttons: bool  # store `button_states` (scene, puzzle)


def _cube(env_id, p_stack_range):
    return CollectionDomain(env_id, ('cube',), p_stack_range, 0.1, False, False)


def _puzzle(env_id):
    return CollectionDomain(env_id, ('button',), (0.5, 0.5), 0.2, True, True)


COLLECTION_DOMAINS = {
    'cube-single': _cube('cube-single-v0', (0.5, 0.5)),  # p_stack has no effect with one cube
    'cube-double': _cube('cube-double-v0', (0.0, 0.25)),
    'cube-triple': _cube('cube-triple-v0', (0.05, 0.35)),
    'cube-quadruple': _cube('cube-quadruple-v0', (0.1, 0.5)),
    'scene': CollectionDomain('scene-v0', ('cube', 'button', 'drawer', 'window'), (0.5, 0.5), 0.1, False, True),
    'puzzle-3x3': _puzzle('puzzle-3x3-v0'),
    'puzzle-4x4': _puzzle('puzzle-4x4-v0'),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str  # e.g. 'cube-double-play-v0'
    domain: str  # key of COLLECTION_DOMAINS
    dataset_type: str  # 'play' or 'noisy'
    sharded: bool  # a 100M set: a folder of independent 1000-episode shards, no validation files


def _dataset_table():
    table = {}
    for domain in COLLECTION_DOMAINS:
        for dataset_type in DATASET_TYPES:
            name = f'{domain}-{dataset_type}-v0'
            table[name] = DatasetSpec(name, domain, dataset_type, False)
    for domain in ('cube-quadruple', 'puzzle-4x4'):
        name = f'{domain}-play-100m-v0'
        table[name] = DatasetSpec(name, domain, 'play', True)
    return table


DATASETS = _dataset_table()
GENERATABLE_DATASETS = tuple(DATASETS)


def _standard_episodes(spec):
    """PROTOCOL §9.4 (1000 episodes per shard for the 100M sets), and OGBench's own size for the sets that §9.4
    does not list (cube-quadruple play/noisy: 5000 episodes, as in the official collection commands)."""
    if spec.sharded:
        return 1000
    return {'cube-triple': 3000, 'cube-quadruple': 5000}.get(spec.domain, 1000)


STANDARD_EPISODES = {name: _standard_episodes(spec) for name, spec in DATASETS.items()}


def is_generatable(dataset_name):
    return dataset_name in DATASETS


def dataset_spec(dataset_name):
    """The DatasetSpec of a generatable name; a ValueError that says why not otherwise."""
    if dataset_name in DATASETS:
        return DATASETS[dataset_name]
    message = f'Cannot generate {dataset_name!r} locally.'
    if any(word in dataset_name for word in ('maze', 'navigate', 'stitch', 'explore', 'soccer')):
        message += (
            ' Locomotion navigate/stitch datasets were collected with pre-trained expert locomotion policies that '
            'the ogbench package does not ship, so they cannot be regenerated: download the official files '
            f'({dataset_name}.npz and {dataset_name}-val.npz) into the dataset directory.'
        )
    message += ' Generatable datasets: ' + ', '.join(GENERATABLE_DATASETS) + '.'
    raise ValueError(message)


# --------------------------------------------------------------------------------------------------------------
# Seeding: one SeedSequence per episode attempt.

SPLITS = {'train': 0, 'val': 1}


def episode_seed_sequence(seed, split, index, attempt=0, shard=None):
    """Seeds of one episode attempt. Stream 0 holds the standard sets, stream k + 1 shard k of a 100M set."""
    stream = 0 if shard is None else shard + 1
    return np.random.SeedSequence(entropy=seed, spawn_key=(stream, SPLITS[split], index, attempt))


def episode_seeds(seed_sequence):
    """(environment reset seed, seed array for the global np.random that the oracles draw from, episode rng)."""
    reset_ss, global_ss, rng_ss = seed_sequence.spawn(3)
    return int(reset_ss.generate_state(1, np.uint64)[0]), global_ss.generate_state(4), np.random.default_rng(rng_ss)


def episode_parameters(dataset_name, rng):
    """Per-episode collection parameters, drawn from the episode's generator: p_stack, xi, noise std, p_random."""
    spec = dataset_spec(dataset_name)
    domain = COLLECTION_DOMAINS[spec.domain]
    low, high = domain.p_stack_range
    p_stack = float(rng.uniform(low, high)) if high > low else float(low)
    if spec.dataset_type == 'noisy':
        xi = float(rng.uniform(*NOISY_XI_RANGE))
        noise_std = xi * NOISY_STD_SCALE
        return dict(p_stack=p_stack, xi=xi, noise_std=noise_std, p_random_action=domain.noisy_p_random_action)
    return dict(p_stack=p_stack, xi=0.0, noise_std=None, p_random_action=0.0)


def select_action(oracle, ob, info, rng, params):
    """One action of the collection policy: random with probability p_random_action, else the (noisy) oracle's."""
    if rng.uniform() < params['p_random_action']:
        action = rng.uniform(-1.0, 1.0, size=5)
    else:
        action = np.asarray(oracle.select_action(ob, info), dtype=np.float64)
        if params['noise_std'] is not None:
            action = action + rng.normal(0.0, params['noise_std'])
    return np.clip(action, -1.0, 1.0)


def scene_episode_rejected(qpos):
    """PROTOCOL §9.6 scene rule: the cube ever at y >= 0.29, or at y <= -0.3 with height z outside [0.06, 0.08].

    `qpos` holds one episode's rows (T, nq); the cube's xyz is qpos[:, 14:17]. Such episodes are redone.
    """
    y, z = qpos[:, 15], qpos[:, 16]
    return bool(np.any(y >= 0.29) or np.any((y <= -0.3) & ((z < 0.06) | (z > 0.08))))


# --------------------------------------------------------------------------------------------------------------
# One episode.


def make_collection_env(domain_name):
    """The base environment in data-collection mode, one episode = EPISODE_LENGTH steps."""
    os.environ.setdefault('MUJOCO_GL', 'egl')  # headless; nothing is rendered
    import gymnasium
    import ogbench  # noqa: F401  (registers the environments)

    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*precision lowered.*')
        return gymnasium.make(
            COLLECTION_DOMAINS[domain_name].env_id,
            terminate_at_goal=False,
            mode='data_collection',
            max_episode_steps=EPISODE_LENGTH,
            disable_env_checker=True,
        )


def make_oracles(env, domain_name, dataset_type):
    """One oracle per sub-task kind, keyed by the values of info['privileged/target_task']."""
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    domain = COLLECTION_DOMAINS[domain_name]
    if dataset_type == 'play':
        classes = dict(cube=CubePlanOracle, button=ButtonPlanOracle, drawer=DrawerPlanOracle, window=WindowPlanOracle)
        kwargs = dict(env=env, noise=PLAN_NOISE, noise_smoothing=PLAN_NOISE_SMOOTHING)
    else:
        classes = dict(
            cube=CubeMarkovOracle, button=ButtonMarkovOracle, drawer=DrawerMarkovOracle, window=WindowMarkovOracle
        )
        kwargs = dict(env=env, min_norm=MARKOV_MIN_NORM)
    oracles = {}
    for kind in domain.oracle_kinds:
        # Keyword arguments only: the button oracles take other parameters first.
        extra = dict(gripper_always_closed=domain.gripper_always_closed) if kind == 'button' else {}
        oracles[kind] = classes[kind](**kwargs, **extra)
    return oracles


def _rollout(env, oracles, dataset_name, seed_sequence):
    """One 1001-step episode (PROTOCOL §9.6), as float32/bool/int64 arrays of its stored rows."""
    spec = DATASETS[dataset_name]
    reset_seed, global_seed, rng = episode_seeds(seed_sequence)
    np.random.seed(global_seed)  # the ogbench oracles draw their keyframe and noise randomness from np.random
    ob, info = env.reset(seed=reset_seed)
    params = episode_parameters(dataset_name, rng)
    oracle = oracles[info['privileged/target_task']]
    oracle.reset(ob, info)

    has_buttons = COLLECTION_DOMAINS[spec.domain].has_buttons
    rows = dict(
        observations=np.empty((EPISODE_LENGTH, ob.shape[0]), np.float32),
        actions=np.empty((EPISODE_LENGTH, 5), np.float32),
        terminals=np.empty(EPISODE_LENGTH, bool),
        qpos=np.empty((EPISODE_LENGTH, info['qpos'].shape[0]), np.float32),
        qvel=np.empty((EPISODE_LENGTH, info['qvel'].shape[0]), np.float32),
    )
    if has_buttons:
        rows['button_states'] = np.empty((EPISODE_LENGTH, info['button_states'].shape[0]), np.int64)

    for t in range(EPISODE_LENGTH):
        action = select_action(oracle, ob, info, rng, params)
        next_ob, _, terminated, truncated, info = env.step(action)
        if oracle.done:  # sub-task finished: new target, matching oracle
            target_ob, target_info = env.unwrapped.set_new_target(p_stack=params['p_stack'])
            oracle = oracles[target_info['privileged/target_task']]
            oracle.reset(target_ob, target_info)
        rows['observations'][t] = ob
        rows['actions'][t] = action
        rows['terminals'][t] = terminated or truncated
        rows['qpos'][t] = info['prev_qpos']
        rows['qvel'][t] = info['prev_qvel']
        if has_buttons:
            rows['button_states'][t] = info['prev_button_states']
        ob = next_ob

    if rows['terminals'][:-1].any() or not rows['terminals'][-1]:
        raise RuntimeError(f'{dataset_name}: the episode did not end exactly at step {EPISODE_LENGTH}.')
    return rows


def generate_episode(env, oracles, dataset_name, seed, split, index, shard=None, max_attempts=100):
    """Stored rows of episode `index` of `split`; scene episodes are redone (next attempt) until accepted."""
    spec = DATASETS[dataset_name]
    for attempt in range(max_attempts):
        rows = _rollout(env, oracles, dataset_name, episode_seed_sequence(seed, split, index, attempt, shard))
        if spec.domain != 'scene' or not scene_episode_rejected(rows['qpos']):
            return rows
    raise RuntimeError(f'{dataset_name}: {split} episode {index} rejected {max_attempts} times in a row.')


# --------------------------------------------------------------------------------------------------------------
# Worker processes. Each makes its environment and oracles once and then generates the episodes it is sent;
# episodes depend only on their own seeds, so which worker runs which episode does not matter.

_WORKER = {}


def _init_worker(dataset_name):
    spec = DATASETS[dataset_name]
    env = make_collection_env(spec.domain)
    _WORKER.update(dataset_name=dataset_name, env=env, oracles=make_oracles(env, spec.domain, spec.dataset_type))


def _worker_episode(job):
    position, seed, split, index, shard = job
    rows = generate_episode(_WORKER['env'], _WORKER['oracles'], _WORKER['dataset_name'], seed, split, index, shard)
    return position, rows


def _cpu_flags():
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is not there)."""
    try:
        with open('/proc/cpuinfo') as f:
            return next((set(line.split(':', 1)[1].split()) for line in f if line.startswith('flags')), set())
    except OSError:
        return set()


def pinned_numerics():
    """Environment variables for the worker processes, meant to give the same floating-point results on every x86-64
    CPU with AVX2 and FMA (Intel since 2013, AMD since 2015): NumPy's kernels capped at its X86_V3 (AVX2) level,
    OpenBLAS's at Haswell's (AVX2), OpenBLAS on one thread. Checked on one machine by emulating other kernel choices
    (tests/test_generate.py); MuJoCo and the C library are not pinned. Without AVX2 and FMA only NumPy's cap
    applies, and the bytes may differ from other machines' (each run's flags.json has the fingerprint). Not x86:
    nothing."""
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return {}
    pinned = dict(NPY_DISABLE_CPU_FEATURES='X86_V4 AVX512_ICL AVX512_SPR', OPENBLAS_NUM_THREADS='1')
    if {'avx2', 'fma'} <= _cpu_flags():
        pinned['OPENBLAS_CORETYPE'] = 'Haswell'
    return pinned


class EpisodeRunner:
    """Runs episode jobs in `num_workers` spawned processes with pinned numerics (also for one worker: NumPy reads
    its kernel choice once, when it is imported, so only a fresh process can be pinned)."""

    def __init__(self, dataset_name, num_workers=1):
        self.dataset_name = dataset_name
        self.num_workers = max(1, int(num_workers))
        self._pool = None

    def __enter__(self):
        # 'spawn': no fork of a parent that may hold JAX/MuJoCo threads, and a fresh NumPy in each worker.
        context = multiprocessing.get_context('spawn')
        with environment.variables_set(pinned_numerics()):  # the spawned workers copy it
            self._pool = context.Pool(self.num_workers, initializer=_init_worker, initargs=(self.dataset_name,))
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self._pool.close()  # all jobs are done: let the workers exit
        else:
            self._pool.terminate()  # an error or Ctrl-C: stop them now
        self._pool.join()
        self._pool = None

    def run(self, jobs):
        """Yields (position, rows) for jobs (position, seed, split, index, shard), in completion order."""
        yield from self._pool.imap_unordered(_worker_episode, jobs, chunksize=1)


def _collect(runner, jobs, progress_bar):
    """Generate jobs and lay their rows out back to back in job order."""
    arrays = None
    for position, rows in runner.run(jobs):
        if arrays is None:
            arrays = {k: np.empty((len(jobs) * EPISODE_LENGTH, *v.shape[1:]), v.dtype) for k, v in rows.items()}
        for k, v in rows.items():
            arrays[k][position * EPISODE_LENGTH : (position + 1) * EPISODE_LENGTH] = v
        progress_bar.update(1)
    return arrays


def _progress_bar(total, desc, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit='episode', disable=not enabled, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------------------------
# Files: written under a temporary name in the same folder, then renamed, never overwritten.

# utils.files names them `.<stem>.<random>.partial`: no `*.npz` glob, shard listing or dataset lookup takes one.


def _refuse_existing(*paths):
    for path in paths:
        if os.path.exists(path):
            raise FileExistsError(
                f'{path} already exists; it is never overwritten. Delete it or choose another --out_dir.'
            )


def write_npz_atomic(path, arrays):
    """np.savez_compressed to a temporary file in the same folder, then os.replace onto `path`."""
    _refuse_existing(path)
    with files.atomic_write(path, binary=True, before_replace=lambda: _refuse_existing(path)) as f:
        np.savez_compressed(f, **arrays)  # a file object: savez would append '.npz' to a name
    return path


# --------------------------------------------------------------------------------------------------------------
# Public entry points.


def dataset_paths(dataset_name, out_dir):
    return os.path.join(out_dir, f'{dataset_name}.npz'), os.path.join(out_dir, f'{dataset_name}-val.npz')


def generate_dataset(dataset_name, out_dir, num_episodes=None, seed=0, num_workers=1, progress=True):
    """Generate `out_dir/<name>.npz` (num_episodes) and `out_dir/<name>-val.npz` (num_episodes // 10, at least 1).

    The validation file is written first and the training file last, each atomically, so a present training
    file means a complete pair. Returns (train_path, val_path).
    """
    spec = dataset_spec(dataset_name)
    if spec.sharded:
        raise ValueError(f'{dataset_name} is a sharded 100M set: use generate_shards (--num_shards).')
    num_episodes = STANDARD_EPISODES[dataset_name] if num_episodes is None else int(num_episodes)
    if num_episodes < 1:
        raise ValueError(f'num_episodes must be at least 1, got {num_episodes}.')
    num_val = max(1, num_episodes // 10)
    train_path, val_path = dataset_paths(dataset_name, out_dir)
    _refuse_existing(train_path, val_path)
    os.makedirs(out_dir, exist_ok=True)

    train_jobs = [(i, seed, 'train', i, None) for i in range(num_episodes)]
    val_jobs = [(i, seed, 'val', i, None) for i in range(num_val)]
    with _progress_bar(num_episodes + num_val, dataset_name, progress) as bar:
        with EpisodeRunner(dataset_name, num_workers) as runner:
            # One pass over both splits keeps every worker busy; positions are split back apart below.
            jobs = train_jobs + [(num_episodes + p, *rest) for p, *rest in val_jobs]
            arrays = _collect(runner, jobs, bar)
    cut = num_episodes * EPISODE_LENGTH
    write_npz_atomic(val_path, {k: v[cut:] for k, v in arrays.items()})
    write_npz_atomic(train_path, {k: v[:cut] for k, v in arrays.items()})
    return train_path, val_path


def shard_paths(dataset_name, out_dir, num_shards):
    shard_dir = os.path.join(out_dir, dataset_name)
    return [os.path.join(shard_dir, f'{dataset_name}-{i:03d}.npz') for i in range(num_shards)]


def generate_shards(
    dataset_name, out_dir, num_shards, episodes_per_shard=None, seed=0, num_workers=1, progress=True, resume=True
):
    """Generate shards `out_dir/<name>/<name>-000.npz`, ... of a 100M set, each a complete play dataset seeded by
    (seed, shard index). No validation files.

    Shards are written atomically, so an existing shard file is complete. With `resume` (default), existing shards
    generated with the same seed and episodes per shard (recorded in `<name>/generation.json`) are kept and only
    the missing ones are generated; any other existing shard raises FileExistsError. Returns the shard paths.
    """
    spec = dataset_spec(dataset_name)
    if not spec.sharded:
        raise ValueError(f'{dataset_name} is not a sharded set: use generate_dataset.')
    episodes_per_shard = STANDARD_EPISODES[dataset_name] if episodes_per_shard is None else int(episodes_per_shard)
    if num_shards < 1 or episodes_per_shard < 1:
        raise ValueError(f'num_shards and episodes_per_shard must be at least 1 ({num_shards}, {episodes_per_shard}).')
    paths = shard_paths(dataset_name, out_dir, num_shards)
    shard_dir = os.path.dirname(paths[0])
    manifest_path = os.path.join(shard_dir, 'generation.json')
    manifest = dict(dataset_name=dataset_name, seed=int(seed), episodes_per_shard=episodes_per_shard)

    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        recorded = None
        if os.path.exists(manifest_path):
            with open(manifest_path) as f:
                recorded = json.load(f)
        if not resume or recorded != manifest:
            why = 'resume=False' if not resume else f'they were generated with {recorded}, not {manifest}'
            raise FileExistsError(
                f'{existing[0]} already exists ({why}); shards are never overwritten. Delete it or choose another '
                f'--out_dir.'
            )
    os.makedirs(shard_dir, exist_ok=True)
    if not os.path.exists(manifest_path):
        with files.atomic_write(manifest_path) as f:
            json.dump(manifest, f)

    todo = [i for i, p in enumerate(paths) if not os.path.exists(p)]
    with _progress_bar(len(todo) * episodes_per_shard, dataset_name, progress) as bar:
        with EpisodeRunner(dataset_name, num_workers) as runner:
            for shard in todo:
                jobs = [(i, seed, 'train', i, shard) for i in range(episodes_per_shard)]
                write_npz_atomic(paths[shard], _collect(runner, jobs, bar))
    return paths


def _main(_):
    try:
        _command()
    except (ValueError, FileExistsError) as e:  # a wrong name or an existing file: the message says what to do
        raise SystemExit(f'error: {e}') from None


def _command():
    from absl import flags

    FLAGS = flags.FLAGS
    spec = dataset_spec(FLAGS.dataset_name)
    if spec.sharded:
        paths = generate_shards(
            FLAGS.dataset_name, FLAGS.out_dir, FLAGS.num_shards, FLAGS.dataset_episodes, FLAGS.seed, FLAGS.num_workers
        )
        episodes = FLAGS.dataset_episodes or STANDARD_EPISODES[FLAGS.dataset_name]
        print(
            f'Wrote {len(paths)} shards of {episodes} episodes ({episodes * (EPISODE_LENGTH - 1):,} transitions each, '
            f'{len(paths) * episodes * (EPISODE_LENGTH - 1):,} in all) to {os.path.dirname(paths[0])}'
        )
        return
    train_path, val_path = generate_dataset(
        FLAGS.dataset_name, FLAGS.out_dir, FLAGS.dataset_episodes, FLAGS.seed, FLAGS.num_workers
    )
    for path in (train_path, val_path):
        with np.load(path) as f:
            episodes = int(f['terminals'].sum())
        print(f'Wrote {path}: {episodes} episodes, {episodes * (EPISODE_LENGTH - 1):,} transitions')


if __name__ == '__main__':
    from absl import app, flags

    flags.DEFINE_string('dataset_name', None, 'Dataset to generate: ' + ', '.join(GENERATABLE_DATASETS) + '.')
    flags.DEFINE_integer('dataset_episodes', None, 'Episodes (per shard for the 100M sets); default: standard size.')
    flags.DEFINE_integer('num_workers', os.cpu_count() or 1, 'Worker processes.')
    flags.DEFINE_string('out_dir', 'data', 'Output folder; existing files are never overwritten.')
    flags.DEFINE_integer(
        'seed', 0, 'Generation seed: same seed, same bytes, whatever --num_workers and CPU (x86-64 with AVX2).'
    )
    flags.DEFINE_integer('num_shards', 100, 'Shards of a 100M set (fewer than 100 is a deviation to report).')
    flags.mark_flag_as_required('dataset_name')
    app.run(_main)
