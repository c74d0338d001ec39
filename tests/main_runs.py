"""main.py run as a subprocess on the tiny generated dataset, and reading what it wrote: the helpers that the
end-to-end tests (test_main.py, test_run_safety.py, test_online_data.py, the agents' smoke runs, ...) share."""

import csv
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_AGENT = [
    '--agent.actor_hidden_dims=(32, 32)', '--agent.value_hidden_dims=(32, 32)', '--agent.num_qs=2',
    '--agent.batch_size=16', '--agent.flow_steps=3',
]


def run_main(args, tmp_path, check=True):
    env = dict(os.environ, JAX_PLATFORMS='cpu', MUJOCO_GL='egl',
               JAX_COMPILATION_CACHE_DIR=os.environ['QAM_TEST_JAX_CACHE'])
    result = subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f'main.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}')
    return result


def tiny_args(tmp_path, dataset_dir, agent='qam', extra=()):
    return [
        f'--agent={agent}', '--env_name=cube-double-play-singletask-task2-v0', '--seed=3',
        f'--save_dir={tmp_path}/runs', '--dataset_source=dir', f'--dataset_dir={dataset_dir}',
        '--offline_steps=40', '--online_steps=30', '--start_training=10', '--eval_interval=20',
        '--eval_episodes=2', '--log_interval=10', '--save_interval=20', '--progress=false', *TINY_AGENT, *extra,
    ]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def find_run_dir(tmp_path):
    seeds = os.path.join(tmp_path, 'runs', 'qam', 'cube-double-play-singletask-task2-v0')
    (name,) = os.listdir(seeds)
    return os.path.join(seeds, name)


def with_default_stop_signals(argv):
    """`argv` (a Python command) started with SIGINT and SIGHUP at their default action. A process keeps ignoring
    the signals it was started ignoring (utils/experiment.StopSignals), and a shell starts a background job
    (`nohup python -m pytest &`) ignoring them: the signal tests' processes would not hear the signals they send."""
    reset = ('import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); '
             'signal.signal(signal.SIGHUP, signal.SIG_DFL); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])')
    return [sys.executable, '-c', reset, *argv[1:]]


def start_main(args, log_path, pipe=False):
    """main.py in the background, its output in `log_path`, or in a pipe (`process.stdout`) if `pipe`."""
    env = dict(os.environ, JAX_PLATFORMS='cpu', MUJOCO_GL='egl',
               JAX_COMPILATION_CACHE_DIR=os.environ['QAM_TEST_JAX_CACHE'])
    with open(log_path, 'w') as log:
        return subprocess.Popen(with_default_stop_signals([sys.executable, 'main.py', *args]), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE if pipe else log, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, process, log_path, timeout=600):
    start = time.time()
    while not condition():
        if process.poll() is not None or time.time() - start > timeout:
            process.kill()
            raise AssertionError(f'main.py ended or timed out first:\n{open(log_path).read()[-5000:]}')
        time.sleep(0.05)


def logged_steps(tmp_path):
    """The steps in train.csv so far (none before the run directory is made)."""
    seeds = os.path.join(tmp_path, 'runs', 'qam', 'cube-double-play-singletask-task2-v0')
    path = os.path.join(find_run_dir(tmp_path), 'train.csv') if os.path.isdir(seeds) else ''
    return [int(r['step']) for r in read_csv(path)] if os.path.exists(path) else []


def run_dirs(tmp_path, runs='runs'):
    root = os.path.join(tmp_path, runs, 'qam', 'cube-double-play-singletask-task2-v0')
    return {name: os.path.join(root, name) for name in sorted(os.listdir(root))}


def assert_same_results(run_dir, reference_dir, rtol=1e-4):
    """Same rows in train.csv (metrics equal within float32 reassociation) and in eval.csv (equal episodes)."""
    for name, exact in (('train.csv', False), ('eval.csv', True)):
        rows, reference = read_csv(os.path.join(run_dir, name)), read_csv(os.path.join(reference_dir, name))
        assert [r['step'] for r in rows] == [r['step'] for r in reference] and rows[0].keys() == reference[0].keys()
        for row, expected in zip(rows, reference):
            for key in row.keys() - {'phase', 'steps_per_second', 'wall_time'}:
                if exact:
                    assert row[key] == expected[key], (name, row['step'], key)
                elif expected[key]:
                    assert float(row[key]) == pytest.approx(float(expected[key]), rel=rtol, abs=1e-6), (name, row['step'], key)
