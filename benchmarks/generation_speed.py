"""Dataset generation speed (envs/generate.py) with 1 and 2 worker processes, measured in one run.

    python -m benchmarks.generation_speed --dataset_name=cube-double-play-v0 --episodes=4

For each worker count it generates `--episodes` training episodes (+ the validation episodes, one tenth, at least
one) into a temporary folder and prints transitions per second end to end (what a user waits for) and after the
start-up (spawning the workers, importing MuJoCo/ogbench and building one environment per worker). Each episode
is 1001 environment steps = 1000 transitions.
"""

import os
import platform
import shutil
import tempfile
import time

from absl import app, flags

from envs import generate
from utils import experiment


def _pid_after_init(_):
    time.sleep(0.05)  # long enough that every worker takes a task
    return os.getpid()


def startup_seconds(dataset_name, num_workers):
    """Seconds until every worker has its environment."""
    start = time.perf_counter()
    with generate.EpisodeRunner(dataset_name, num_workers) as runner:
        pids = set()
        while len(pids) < num_workers:
            pids |= set(runner._pool.map(_pid_after_init, range(num_workers), chunksize=1))
        return time.perf_counter() - start - 0.05


def main(_):
    FLAGS = flags.FLAGS
    name, episodes = FLAGS.dataset_name, FLAGS.episodes
    total_episodes = episodes + max(1, episodes // 10)
    transitions = total_episodes * (generate.EPISODE_LENGTH - 1)
    print(f'{name}: {episodes} + {total_episodes - episodes} validation episodes = {transitions:,} transitions per run')
    machine = experiment.cpu_model() or platform.machine()
    print(f'machine: {machine}, {os.cpu_count()} CPU cores, Python {platform.python_version()}')
    for num_workers in (1, 2):
        startup = startup_seconds(name, num_workers)
        out_dir = tempfile.mkdtemp(prefix='generation_speed_')
        try:
            start = time.perf_counter()
            generate.generate_dataset(name, out_dir, num_episodes=episodes, num_workers=num_workers, progress=False)
            elapsed = time.perf_counter() - start
        finally:
            shutil.rmtree(out_dir)
        print(
            f'{num_workers} worker(s): {elapsed:6.1f} s, {transitions / elapsed:6.0f} transitions/s end to end; '
            f'start-up {startup:4.1f} s, {transitions / max(elapsed - startup, 1e-9):6.0f} transitions/s after it'
        )


if __name__ == '__main__':
    flags.DEFINE_string('dataset_name', 'cube-double-play-v0', 'Generatable dataset name.')
    flags.DEFINE_integer('episodes', 4, 'Training episodes per run.')
    app.run(main)
