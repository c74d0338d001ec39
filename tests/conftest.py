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
    of GENERATED_FIXTURE_DATASETS, seed 0, generated once per test session with 2 worker processes."""
    from envs import generate

    out_dir = tmp_path_factory.mktemp('generated_datasets')
    for name in GENERATED_FIXTURE_DATASETS:
        generate.generate_dataset(name, str(out_dir), num_episodes=2, seed=0, num_workers=2, progress=False)
    return out_dir
