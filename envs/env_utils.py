"""One entry point from an environment name to environments and datasets."""

import os
import queue
import threading
import warnings

os.environ.setdefault('MUJOCO_GL', 'egl')
# OGBench declares float64 action bounds; gymnasium's notice about casting them is noise.
warnings.filterwarnings('ignore', message=".*precision lowered by casting to float32.*")

import gymnasium  # noqa: E402
import ogbench  # noqa: E402,F401  (registers the OGBench environments with gymnasium)

from envs import data_sources  # noqa: E402
from envs.tasks import parse_env_name  # noqa: E402


def make_env(task, render=False):
    """A fresh single-task environment (goal fixed by the task, success computed before each step)."""
    if render:
        return gymnasium.make(task.gym_id, render_mode='rgb_array', width=200, height=200)
    return gymnasium.make(task.gym_id)


class ShardedDataset:
    """Streams a sharded dataset one shard at a time (PROTOCOL §4.4).

    `current` is the shard in use. The next shard is loaded by a background thread while training goes on,
    so at most two shards are ever in memory; `advance()` swaps it in (cyclically) and starts the next load.
    """

    def __init__(self, shard_paths, load_shard):
        if not shard_paths:
            raise data_sources.DatasetError('A sharded dataset needs at least one shard file.')
        self.shard_paths = list(shard_paths)
        self._load_shard = load_shard
        self.index = 0
        self.current = load_shard(self.shard_paths[0])
        self._next = queue.Queue(maxsize=1)
        self._prefetch()

    def __len__(self):
        return len(self.shard_paths)

    def _prefetch(self):
        if len(self.shard_paths) == 1:
            return
        path = self.shard_paths[(self.index + 1) % len(self.shard_paths)]

        def load():
            try:
                self._next.put(self._load_shard(path))
            except Exception as e:  # re-raised in the training thread by advance()
                self._next.put(e)

        threading.Thread(target=load, daemon=True).start()

    def seek(self, index):
        """Make shard `index` current (used on resume), then prefetch the one after it."""
        if len(self.shard_paths) > 1:
            loaded = self._next.get()  # wait for the pending prefetch so that only one load runs at a time
            del loaded
        self.index = index % len(self.shard_paths)
        self.current = None
        self.current = self._load_shard(self.shard_paths[self.index])
        self._prefetch()
        return self.current

    def advance(self):
        """Make the next shard (cyclically) current and return it."""
        if len(self.shard_paths) == 1:
            return self.current
        loaded = self._next.get()
        if isinstance(loaded, Exception):
            raise loaded
        self.current = loaded
        self.index = (self.index + 1) % len(self.shard_paths)
        self._prefetch()
        return self.current


def make_env_and_datasets(
    env_name,
    dataset_source='auto',
    dataset_dir=None,
    cache_dir=data_sources.DEFAULT_CACHE_DIR,
    dataset_episodes=None,
    generation_seed=0,
    num_workers=1,
    sparse=None,
    use_sharded=True,
    num_shards=100,
    log=print,
    located=None,
):
    """Environments and datasets for one single-task OGBench name or D4RL dataset id (envs/minari_data.py).

    Returns (env, make_eval_env, train, val, info):
      env            the training environment;
      make_eval_env  make_eval_env(render=False) returns a new, independent evaluation environment;
      train          a dict of float32 arrays (observations, actions, rewards, masks, terminals,
                     next_observations), or a `ShardedDataset` for the 100M sharded sets;
      val            the validation dict, or None for sharded sets and D4RL;
      info           task, sparse flag, dataset name and paths, which source was used, `reward_shift` (added to
                     online rewards, as in the data) and `normalized_score`: a function of the mean evaluation
                     return for D4RL datasets with reference scores, else None.
    `sparse=None` uses the domain's setting (PROTOCOL §2). `located`: a `data_sources.locate_dataset` result to load,
    instead of locating the dataset here.
    """
    task = parse_env_name(env_name)
    sparse = task.domain.sparse if sparse is None else bool(sparse)
    located = located or data_sources.locate_dataset(
        task,
        source=dataset_source,
        dataset_dir=dataset_dir,
        cache_dir=cache_dir,
        episodes=dataset_episodes,
        seed=generation_seed,
        num_workers=num_workers,
        use_sharded=use_sharded,
        num_shards=num_shards,
        log=log,
    )
    log(f'Dataset {located["dataset_name"]}: source={located["source"]}.')
    if task.is_minari:
        if sparse:
            raise data_sources.DatasetError(f'{env_name}: the sparse reward conversion is for OGBench tasks only.')
        from envs import minari_data

        dataset = minari_data.open_dataset(located)
        conventions = minari_data.CONVENTIONS[task.domain.name]
        env = minari_data.make_env(dataset, conventions)
        train = minari_data.load_transitions(dataset, env, conventions)
        info = dict(located, task=task, sparse=False, reward_shift=conventions.reward_shift,
                    normalized_score=minari_data.normalizer(dataset, conventions))
        return env, (lambda render=False: minari_data.make_env(dataset, conventions, render)), train, None, info
    env = make_env(task)
    if 'shard_paths' in located:
        shard_env = make_env(task)  # relabelling resets its env: the loader thread gets its own
        train = ShardedDataset(
            located['shard_paths'], lambda path: data_sources.load_transitions(path, shard_env, sparse)
        )
        val = None
    else:
        train = data_sources.load_transitions(located['train_path'], env, sparse)
        val = data_sources.load_transitions(located['val_path'], env, sparse)
    info = dict(located, task=task, sparse=sparse, normalized_score=None, reward_shift=0.0)
    return env, (lambda render=False: make_env(task, render)), train, val, info
