"""Where a task's dataset comes from, and how a file becomes a validated, relabelled training set.

Sources (`--dataset_source`):
  dir       official OGBench files in `--dataset_dir` (`<dir>/<name>.npz`, `<dir>/<name>-val.npz`;
            sharded sets as a folder `<dir>/<name>/` of `*.npz` shards).
  download  the OGBench download into `--dataset_dir`; fails within seconds when there is no network.
  generate  local generation with ogbench's own oracles (manipulation only) into a cache folder keyed by
            episode count and seed, so that a small quick-start set is never mistaken for the standard one.
  auto      official files, then the generated cache, then download, then generation; says which it used.

Every file is checked before use (readable, required keys, dimensions of the environment, finite values,
complete last episode); problems raise `DatasetError` naming the file and the fix.
"""

import glob
import hashlib
import json
import os
import urllib.error
import urllib.request
import zipfile

import numpy as np
import ogbench.utils
from ogbench.relabel_utils import relabel_dataset

DEFAULT_DATASET_DIR = os.path.expanduser(ogbench.utils.DEFAULT_DATASET_DIR)
DEFAULT_CACHE_DIR = os.path.expanduser(os.environ.get('QAM_DATASET_CACHE', '~/.cache/qam_suite/datasets'))
SOURCES = ('auto', 'dir', 'download', 'generate')
ACTION_CLIP = 1 - 1e-5
INFO_KEYS = ('qpos', 'qvel', 'button_states')


class DatasetError(ValueError):
    """A dataset that cannot be used, with the reason and the fix in the message."""


def to_sparse(rewards):
    """PROTOCOL §2: 0 when every subgoal holds, -1 otherwise. Used for dataset and online rewards alike."""
    return -(np.asarray(rewards) != 0).astype(np.float32)


def official_paths(dataset_dir, dataset_name):
    return os.path.join(dataset_dir, f'{dataset_name}.npz'), os.path.join(dataset_dir, f'{dataset_name}-val.npz')


def generated_dir(cache_dir, dataset_name, episodes, seed):
    return os.path.join(cache_dir, f'{dataset_name}-ep{episodes}-seed{seed}')


def list_shards(shard_dir):
    """Shard files of a sharded dataset, sorted by name; validation files excluded (PROTOCOL §4.4)."""
    return sorted(p for p in glob.glob(os.path.join(shard_dir, '*.npz')) if not p.endswith('-val.npz'))


def _files_present(train_path, val_path):
    # The generator writes the val file first and the train file last (both atomically), so a present
    # train file means a complete pair; an official pair is checked the same way.
    return os.path.isfile(train_path) and os.path.isfile(val_path)


def _check_network(timeout_s=5.0):
    try:
        urllib.request.urlopen(ogbench.utils.DATASET_URL, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # the server answered (e.g. 403 for the folder itself): the network is there
    except Exception as e:  # any other failure to reach the server means: no download possible
        raise DatasetError(
            f'Cannot reach the OGBench download server ({type(e).__name__}: {e}). Without a network, use '
            f'--dataset_source=generate (manipulation tasks) or put the official files in --dataset_dir.'
        ) from e


def _download(dataset_name, dataset_dir):
    _check_network()
    ogbench.utils.download_datasets([dataset_name], dataset_dir)
    return official_paths(dataset_dir, dataset_name)


def _locomotion_help(dataset_name, dataset_dir):
    train_path, val_path = official_paths(dataset_dir, dataset_name)
    return (
        f'The {dataset_name} dataset was collected with expert locomotion policies that ogbench does not ship, so '
        f'it cannot be generated here. Put the official files at {train_path} and {val_path} (or pass '
        f'--dataset_dir=<folder holding them>), or use --dataset_source=download on a machine with a network.'
    )


def locate_dataset(
    task,
    source='auto',
    dataset_dir=None,
    cache_dir=DEFAULT_CACHE_DIR,
    episodes=None,
    seed=0,
    num_workers=1,
    use_sharded=True,
    num_shards=100,
    log=print,
):
    """Find (or make) the files of a task's dataset.

    Returns a dict with `source` (the one used), `dataset_name`, and either `train_path`/`val_path` or
    `shard_paths` for the 100M sharded sets, or `minari_path` for a D4RL task (envs/minari_data.py).
    `dataset_dir=None`: the default folder of the task's kind, ~/.ogbench/data or Minari's.
    """
    from envs import generate  # imported lazily: it pulls in the oracles and multiprocessing

    if source not in SOURCES:
        raise ValueError(f'--dataset_source={source!r} is not one of {"|".join(SOURCES)}.')
    if task.is_minari:
        from envs import minari_data  # imported lazily: it registers the gymnasium-robotics environments

        return minari_data.locate(task, source, os.path.expanduser(dataset_dir or minari_data.DEFAULT_ROOT), log)
    dataset_dir = os.path.expanduser(dataset_dir or DEFAULT_DATASET_DIR)
    cache_dir = os.path.expanduser(cache_dir)
    sharded = bool(use_sharded and task.sharded_dataset_name)
    name = task.sharded_dataset_name if sharded else task.dataset_name
    can_generate = generate.is_generatable(name)
    standard = generate.STANDARD_EPISODES.get(name) if can_generate else None
    episodes = episodes or standard
    gen_dir = generated_dir(cache_dir, name, episodes, seed)

    if sharded:
        official_dir, gen_shard_dir = os.path.join(dataset_dir, name), os.path.join(gen_dir, name)
        if source in ('auto', 'dir') and list_shards(official_dir):
            return dict(source='dir', dataset_name=name, shard_paths=list_shards(official_dir))
        if source == 'dir':
            raise DatasetError(f'No shard files (*.npz) of {name} in {official_dir}. Put the shards there.')
        if source == 'download':
            raise DatasetError(
                f'{name} is a 100M-transition sharded set that this suite does not download; put its shard '
                f'files in {official_dir}, or use --dataset_source=generate (--dataset_shards=N).'
            )
        if len(list_shards(gen_shard_dir)) < num_shards:
            log(f'Generating {num_shards} shards of {name} ({episodes} episodes each) into {gen_shard_dir}.')
            generate.generate_shards(
                name, gen_dir, num_shards=num_shards, episodes_per_shard=episodes, seed=seed,
                num_workers=num_workers,
            )
        else:
            log(f'Using cached generated shards of {name} from {gen_shard_dir}.')
        return dict(
            source='generate' if source == 'generate' else 'cache',
            dataset_name=name,
            shard_paths=list_shards(gen_shard_dir)[:num_shards],
        )

    official = official_paths(dataset_dir, name)
    generated = official_paths(gen_dir, name)
    if source in ('auto', 'dir') and _files_present(*official):
        return dict(source='dir', dataset_name=name, train_path=official[0], val_path=official[1])
    if source == 'dir':
        raise DatasetError(
            f'{name}: expected the official files {official[0]} and {official[1]}. Put them there, point '
            f'--dataset_dir at their folder, or use --dataset_source=auto|download|generate.'
        )
    if source in ('auto', 'generate') and can_generate and _files_present(*generated):
        log(f'Using cached generated dataset {generated[0]}.')
        return dict(source='cache', dataset_name=name, train_path=generated[0], val_path=generated[1])
    if source in ('auto', 'download'):
        try:
            paths = _download(name, dataset_dir)
            return dict(source='download', dataset_name=name, train_path=paths[0], val_path=paths[1])
        except DatasetError as e:
            if source == 'download':
                raise
            log(f'Download unavailable: {e}')
    if not can_generate:
        raise DatasetError(_locomotion_help(name, dataset_dir))
    log(f'Generating {name} locally ({episodes} episodes, seed {seed}, {num_workers} workers) into {gen_dir}.')
    generate.generate_dataset(name, gen_dir, num_episodes=episodes, seed=seed, num_workers=num_workers)
    return dict(source='generate', dataset_name=name, train_path=generated[0], val_path=generated[1])


def _npz_contents(path):
    """(array name, CRC-32 and size of its uncompressed bytes) of every array in an .npz file, read from the zip's
    directory without decompressing: the arrays' contents, not the file's bytes (which hold write times)."""
    try:
        with zipfile.ZipFile(path) as file:
            return sorted((info.filename, info.CRC, info.file_size) for info in file.infolist())
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f'{path}: cannot be read as .npz ({type(e).__name__}: {e}); the file is corrupt or '
                           f'truncated. Delete it and download or generate it again.') from e


def dataset_identity(located):
    """What a run trains on, recorded in its flags.json at the first start and checked at every later one: the
    dataset's name and a fingerprint of the contents of its training arrays (of every shard for a sharded set),
    with where it was found. The source and the folder are not part of the identity: the same arrays found another
    way, or generated again with the same settings, are the same data."""
    if 'minari_path' in located:
        from envs import minari_data

        return minari_data.identity(located)
    paths = located['shard_paths'] if 'shard_paths' in located else [located['train_path']]
    contents = json.dumps([_npz_contents(path) for path in paths]).encode()
    return dict(dataset_name=located['dataset_name'], fingerprint=hashlib.sha256(contents).hexdigest()[:16],
                source=located['source'],
                files=[os.path.abspath(p) for p in paths[:3]] + ([f'... {len(paths)} shards'] if len(paths) > 3 else []))


def identity_difference(recorded, current):
    """'' when two dataset identities are the same data, else what differs."""
    differences = [f'{key} {recorded.get(key)} then, {current.get(key)} now' for key in ('dataset_name', 'fingerprint')
                   if recorded.get(key) != current.get(key)]
    if differences:
        differences.append(f'source {recorded.get("source")} ({", ".join(recorded.get("files", []))}) then, '
                           f'{current.get("source")} ({", ".join(current.get("files", []))}) now')
    return '; '.join(differences)


def _precheck_file(path, env):
    """Cheap checks that need no decompression of the big arrays: readable zip, keys, complete episodes."""
    if not os.path.isfile(path):
        raise DatasetError(f'{path}: file not found.')
    needs_buttons = getattr(env.unwrapped, '_num_buttons', 0) > 0
    required = ('observations', 'actions', 'terminals', 'qpos', 'qvel') + (('button_states',) if needs_buttons else ())
    try:
        with np.load(path) as file:
            missing = [k for k in required if k not in file.files]
            if missing:
                raise DatasetError(
                    f'{path}: missing keys {missing} (has {sorted(file.files)}). It is not an OGBench dataset of '
                    f'this environment; single-task relabelling needs {list(required)}.'
                )
            terminals = file['terminals']
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(
            f'{path}: cannot be read as .npz ({type(e).__name__}: {e}); the file is corrupt or truncated. '
            f'Delete it and download or generate it again.'
        ) from e
    if terminals.ndim != 1 or len(terminals) < 2 or not terminals[-1] or terminals.all():
        raise DatasetError(
            f'{path}: "terminals" must mark the end of every episode, the last row included; the file is '
            f'truncated or not an OGBench dataset.'
        )


def _check_loaded(path, dataset, env):
    n = len(dataset['observations'])
    expected = {
        'observations': env.observation_space.shape[-1],
        'actions': env.action_space.shape[-1],
        'qpos': env.unwrapped.model.nq,
        'qvel': env.unwrapped.model.nv,
    }
    if getattr(env.unwrapped, '_num_buttons', 0) > 0:
        expected['button_states'] = env.unwrapped._num_buttons
    for key, dim in expected.items():
        shape = dataset[key].shape
        if shape != (n, dim):
            raise DatasetError(
                f'{path}: {key} has shape {shape}, expected ({n}, {dim}) for {env.spec.id}. The file belongs to '
                f'another environment; check --env_name and --dataset_dir.'
            )
    for key, value in dataset.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int((~np.isfinite(value)).any(axis=tuple(range(1, value.ndim))).sum())
            raise DatasetError(f'{path}: {key} holds NaN or inf in {bad} rows. Regenerate or re-download it.')


def load_transitions(path, env, sparse):
    """Load one OGBench file as regular transitions with single-task rewards and masks.

    ogbench's own loader builds next_observations and drops the final row of each episode (PROTOCOL §9.2);
    ogbench's own relabelling computes rewards and masks from each row's state for the env's fixed task
    (§9.3); then the sparse conversion and the action clip of the training code.
    """
    _precheck_file(path, env)
    try:
        dataset = ogbench.utils.load_dataset(path, add_info=True)
    except Exception as e:
        raise DatasetError(f'{path}: cannot be loaded ({type(e).__name__}: {e}). Regenerate or re-download it.') from e
    _check_loaded(path, dataset, env)
    relabel_dataset(env.spec.id, env, dataset)
    for key in INFO_KEYS:
        dataset.pop(key, None)
    if sparse:
        dataset['rewards'] = to_sparse(dataset['rewards'])
    dataset['actions'] = np.clip(dataset['actions'], -ACTION_CLIP, ACTION_CLIP)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in dataset.items()}
