"""Success against wall time of small QAM runs: the frontier from which the README's quick start is chosen.

    python -m benchmarks.quickstart_frontier --points=c1-100ep-2x128-q2-10k --table_out=/tmp/frontier.md

Each point is one `main.py` command run from scratch, the way a newcomer runs the quick start: its dataset is
generated into a fresh cache folder (so the total time includes generation), then it trains offline, evaluating
four times unless the point says otherwise, and then online if the point has online steps. It prints one Markdown row
per point (and appends it to --table_out): task, dataset episodes, networks, critics, batch, offline and online steps,
generation and total wall time, and success at every evaluation. Points run one at a time, so each has the machine
to itself; say which machine the table is from. The README's offline table was made with it.
"""

import dataclasses
import os
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from agents import qam
from envs import data_sources, generate, tasks
from sweeps import report_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Shared by every point: QAM, chunked, 2 generation workers, 20 evaluation episodes.
COMMON = ('--agent=qam --agent.action_chunking=True --num_workers=2 --eval_episodes=20 --log_interval=1000 '
          '--progress=false')
QAM_DEFAULTS = qam.get_config()  # a point passes --agent.lr and --agent.best_of_n only where it differs


@dataclasses.dataclass(frozen=True)
class Point:
    env_name: str
    episodes: int  # generated dataset episodes (1000 steps each)
    depth: int  # hidden layers of every network
    width: int
    critics: int
    batch: int
    steps: int  # offline steps; evaluations every steps / 4
    # The paper's value on scene and cube-double; cube-single, which the paper does not have, takes cube-double's.
    # 0: the behaviour-cloning floor.
    inv_temp: float = 1.0
    online_steps: int = 0  # online environment steps after the offline phase (the quick start has 4K)
    eval_every: int = 0  # steps between evaluations; 0: steps / 4
    lr: float = QAM_DEFAULTS.lr  # Adam learning rate of every network
    best_of_n: int = QAM_DEFAULTS.best_of_n  # acting candidates scored by the critic (1: off)

    def argv(self):
        dims = repr((self.width,) * self.depth)
        interval = self.eval_every or max(self.steps // 4, 1)
        online = [f'--online_steps={self.online_steps}'] + (['--start_training=1000'] if self.online_steps else [])
        return shlex.split(COMMON) + online + [
            f'--env_name={self.env_name}', f'--dataset_episodes={self.episodes}', f'--agent.actor_hidden_dims={dims}',
            f'--agent.value_hidden_dims={dims}', f'--agent.num_qs={self.critics}', f'--agent.batch_size={self.batch}',
            f'--offline_steps={self.steps}', f'--eval_interval={interval}', f'--save_interval={self.steps}',
            f'--agent.inv_temp={self.inv_temp:g}'] + (
            [f'--agent.lr={self.lr:g}'] if self.lr != QAM_DEFAULTS.lr else []) + (
            [f'--agent.best_of_n={self.best_of_n}'] if self.best_of_n != QAM_DEFAULTS.best_of_n else [])


CUBE_SINGLE, SCENE = 'cube-single-play-singletask-task{}-v0', 'scene-play-singletask-task{}-v0'
POINTS = {
    'c1-100ep-2x128-q2-10k': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 10_000),
    'c1-100ep-2x128-q2-10k-bc': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 10_000, inv_temp=0.0),
    # A stronger tilt: what scene task 1 needed at 4x256 (README, "Does it reproduce?").
    'c1-100ep-2x128-q2-10k-t3': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 10_000, inv_temp=3.0),
    'c1-100ep-2x128-q2-10k-t10': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 10_000, inv_temp=10.0),
    'c1-100ep-2x128-q2-20k': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 20_000),
    'c1-100ep-2x256-q2-10k': Point(CUBE_SINGLE.format(1), 100, 2, 256, 2, 256, 10_000),
    'c1-100ep-2x64-q2-20k': Point(CUBE_SINGLE.format(1), 100, 2, 64, 2, 256, 20_000),
    'c1-300ep-2x128-q2-20k': Point(CUBE_SINGLE.format(1), 300, 2, 128, 2, 256, 20_000),
    'c2-100ep-2x128-q2-20k': Point(CUBE_SINGLE.format(2), 100, 2, 128, 2, 256, 20_000),
    's1-100ep-2x128-q2-20k': Point(SCENE.format(1), 100, 2, 128, 2, 256, 20_000),
    # The quick start (16K offline, 4K online, evaluations every 4K) and other splits of its steps.
    'c1-100ep-2x128-q2-16k-on4k': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 16_000, online_steps=4_000),
    'c1-100ep-2x128-q2-12k-on8k': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 12_000, online_steps=8_000,
                                        eval_every=4_000),
    'c1-100ep-2x128-q2-16k-on8k': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 16_000, online_steps=8_000),
    'c1-100ep-2x128-q2-16k-on8k-e8k': Point(CUBE_SINGLE.format(1), 100, 2, 128, 2, 256, 16_000, online_steps=8_000,
                                            eval_every=8_000),
}
# Variations of the quick start of 2026-12-05 (16K + 4K at the default learning rate), aimed at issue 16's 50%:
# larger learning rates (3e-3: the quick start since 2026-12-08), acting with the best of 8 candidates by the critic,
# more data, and smaller networks trained longer.
_STEPS_16K_ON4K = POINTS['c1-100ep-2x128-q2-16k-on4k']
POINTS.update({
    'c1-100ep-2x128-q2-16k-on4k-lr1e-3': dataclasses.replace(_STEPS_16K_ON4K, lr=1e-3),
    'c1-100ep-2x128-q2-16k-on4k-lr2e-3': dataclasses.replace(_STEPS_16K_ON4K, lr=2e-3),
    'c1-100ep-2x128-q2-16k-on4k-lr3e-3': dataclasses.replace(_STEPS_16K_ON4K, lr=3e-3),
    'c1-100ep-2x128-q2-16k-on4k-bo8': dataclasses.replace(_STEPS_16K_ON4K, best_of_n=8),
    'c1-200ep-2x128-q2-16k-on4k': dataclasses.replace(_STEPS_16K_ON4K, episodes=200),
    'c1-100ep-2x64-q2-24k-on4k': dataclasses.replace(_STEPS_16K_ON4K, width=64, steps=24_000, eval_every=4_000),
})
QUICK_START = 'c1-100ep-2x128-q2-16k-on4k-lr3e-3'  # the README's first command (tests/test_benchmark.py checks)

FLAGS = flags.FLAGS
flags.DEFINE_list('points', list(POINTS), 'Points to run, in order: ' + ', '.join(POINTS) + '.')
flags.DEFINE_string('table_out', None, 'Also write the Markdown table to this file (appended to, one row per point).')
flags.DEFINE_integer('timeout_s', 1800, 'Stop a point after this many seconds.')
flags.DEFINE_integer('seed', 10001, "main.py's --seed for every point (the dataset stays the same); 10001 is the "
                     "quick start's.")

HEADER = ('| point | task | inv_temp | episodes | networks | critics | batch | offline steps | online steps | '
          'generation (s) | total (s) | success at each evaluation (%) |\n' + '|---' * 12 + '|')


def run_point(name, timeout_s, seed=10001):
    """One Markdown row: the point run from scratch (generation, then main.py with this seed), timed. The point's
    name in the row carries the run's seed when it is not the quick start's (10001, main.py's default)."""
    point = POINTS[name]
    dataset_name = tasks.parse_env_name(point.env_name).dataset_name
    with tempfile.TemporaryDirectory(prefix=f'frontier-{name}-') as tmp:
        cache = os.path.join(tmp, 'datasets')
        start = time.perf_counter()
        generate.generate_dataset(dataset_name, data_sources.generated_dir(cache, dataset_name, point.episodes, 0),
                                  num_episodes=point.episodes, seed=0, num_workers=2, progress=False)
        generation = time.perf_counter() - start
        command = [sys.executable, os.path.join(REPO, 'main.py'), *point.argv(), f'--seed={seed}',
                   f'--save_dir={tmp}/runs', f'--dataset_cache_dir={cache}', '--dataset_source=generate']
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
        total = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f'{name} failed:\n{result.stderr[-3000:]}')
        (run,) = report_runs.find_runs(os.path.join(tmp, 'runs'))
    task = point.env_name.replace('-singletask', '').replace('-v0', '')
    successes = ', '.join(f'{step / 1000:g}K: {value:.0f}' for step, value in zip(run.steps, run.scores))
    # The seed that the run recorded in its flags.json, so that a row cannot claim a seed main.py did not get.
    label = name if run.seed == 10001 else f'{name} (seed {run.seed})'
    return (f'| {label} | {task} | {point.inv_temp:g} | {point.episodes} | {point.depth}x{point.width} | '
            f'{point.critics} | {point.batch} | '
            f'{point.steps:,} | {point.online_steps:,} | {generation:.0f} | {total:.0f} | {successes} |')


def main(argv):
    del argv
    unknown = [p for p in FLAGS.points if p not in POINTS]
    if unknown:
        raise app.UsageError(f'Unknown points {unknown}; known: {", ".join(POINTS)}.')
    print(HEADER, flush=True)
    for name in FLAGS.points:
        row = run_point(name, FLAGS.timeout_s, FLAGS.seed)
        print(row, flush=True)
        if FLAGS.table_out:
            new = not os.path.exists(FLAGS.table_out)
            with open(FLAGS.table_out, 'a') as f:
                f.write((HEADER + '\n' if new else '') + row + '\n')


if __name__ == '__main__':
    app.run(main)
