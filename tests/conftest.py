"""Shared test set-up: CPU JAX with a persistent compilation cache, headless MuJoCo."""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

# Compiled programs are cached across test sessions (the main.py subprocesses of the tests use it too): outside the
# checkout, so that a fresh clone on the same machine (CI) starts warm; a new machine starts cold and is only slower.
_CACHE_DIR = os.environ.setdefault('QAM_TEST_JAX_CACHE', os.path.expanduser('~/.cache/qam_suite/jax-tests'))
jax.config.update('jax_compilation_cache_dir', _CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

from utils import cpu_random  # noqa: E402

cpu_random.unroll_threefry_on_cpu()  # as main.py: tests compile what runs compile


# Generated OGBench datasets (envs/generate.py), shared by every test that needs real files to load or train on.
import pytest  # noqa: E402

GENERATED_FIXTURE_DATASETS = ('cube-double-play-v0', 'scene-play-v0', 'puzzle-3x3-play-v0')


@pytest.fixture(scope='session')
def generated_datasets_dir(tmp_path_factory):
    """A folder (pathlib.Path) with `<name>.npz` (2 episodes x 1001 rows) and `<name>-val.npz` (1 episode) for each
    of GENERATED_FIXTURE_DATASETS, seed 0, generated once per test session with 2 worker processes.

    Under pytest-xdist every worker is its own session: the first to get here generates into the folder that all
    workers share (the parent of their base temporary folders) while the others wait on a file lock, rather than
    each generating a copy on the same two cores."""
    import fcntl

    from envs import generate

    if os.environ.get('PYTEST_XDIST_WORKER'):
        out_dir = tmp_path_factory.getbasetemp().parent / 'generated_datasets'
    else:
        out_dir = tmp_path_factory.mktemp('generated_datasets')
    complete = out_dir.parent / f'{out_dir.name}.complete'  # beside the folder: tests list the folder's files
    with open(out_dir.parent / f'{out_dir.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        if not complete.exists():
            out_dir.mkdir(exist_ok=True)
            for name in GENERATED_FIXTURE_DATASETS:
                generate.generate_dataset(name, str(out_dir), num_episodes=2, seed=0, num_workers=2, progress=False)
            complete.touch()
    return out_dir
