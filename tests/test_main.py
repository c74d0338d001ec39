"""main.py end to end on a tiny generated dataset: results, skip when finished, resume, and bad input."""

import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_AGENT = [
    '--agent.actor_hidden_dims=(32, 32)', '--agent.value_hidden_dims=(32, 32)', '--agent.num_qs=2',
    '--agent.batch_size=16', '--agent.flow_steps=3',
]


def run_main(args, tmp_path, check=True):
    env = dict(os.environ, JAX_PLATFORMS='cpu', MUJOCO_GL='egl',
               JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, '.cache', 'jax'))
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


def test_offline_then_online_run_writes_results_and_is_skipped_when_done(tmp_path, generated_datasets_dir):
    result = run_main(tiny_args(tmp_path, generated_datasets_dir), tmp_path)
    run_dir = find_run_dir(tmp_path)
    assert os.path.basename(run_dir).startswith('seed3-')
    train = read_csv(os.path.join(run_dir, 'train.csv'))
    assert [int(r['step']) for r in train] == [10, 20, 30, 40, 50, 60, 70]
    assert [r['phase'] for r in train] == ['offline'] * 4 + ['online'] * 3
    assert 'critic/critic_loss' in train[0] and all(r['critic/critic_loss'] for r in train)
    evals = read_csv(os.path.join(run_dir, 'eval.csv'))
    assert [(int(r['step']), r['phase']) for r in evals] == [(20, 'offline'), (40, 'offline'), (60, 'online')]
    assert all(0.0 <= float(r['success']) <= 1.0 and float(r['episode_length']) > 0 for r in evals)
    flags = json.load(open(os.path.join(run_dir, 'flags.json')))
    assert flags['settings']['agent']['horizon_length'] == 5 and flags['settings']['agent']['discount'] == 0.99
    done = json.load(open(os.path.join(run_dir, 'DONE')))
    assert done['final']['offline']['step'] == 40 and done['final']['online']['step'] == 60
    assert 'Finished.' in result.stdout and run_dir in result.stdout
    assert not os.path.exists(os.path.join(run_dir, 'checkpoints'))

    before = {f: open(os.path.join(run_dir, f)).read() for f in ('train.csv', 'eval.csv', 'DONE')}
    again = run_main(tiny_args(tmp_path, generated_datasets_dir), tmp_path)
    assert 'already finished' in again.stdout
    assert before == {f: open(os.path.join(run_dir, f)).read() for f in before}


def test_stopped_run_resumes_from_checkpoint_without_duplicate_rows(tmp_path, generated_datasets_dir):
    stopped = run_main(tiny_args(tmp_path, generated_datasets_dir, extra=['--stop_at_step=50']), tmp_path)
    assert 'Stopped at step 50' in stopped.stdout
    run_dir = find_run_dir(tmp_path)
    assert not os.path.exists(os.path.join(run_dir, 'DONE'))
    assert '50' in os.listdir(os.path.join(run_dir, 'checkpoints'))
    resumed = run_main(tiny_args(tmp_path, generated_datasets_dir), tmp_path)
    assert 'Resumed from the checkpoint at step 50' in resumed.stdout
    train_steps = [int(r['step']) for r in read_csv(os.path.join(run_dir, 'train.csv'))]
    assert train_steps == [10, 20, 30, 40, 50, 60, 70]
    eval_steps = [int(r['step']) for r in read_csv(os.path.join(run_dir, 'eval.csv'))]
    assert eval_steps == [20, 40, 60]
    done = json.load(open(os.path.join(run_dir, 'DONE')))
    assert done['final']['offline']['step'] == 40  # read back from eval.csv after the resume


@pytest.mark.parametrize(
    'change, message',
    [
        ({'--agent=': '--agent=no_such_agent'}, 'Unknown agent'),
        ({'--env_name=': '--env_name=cube-double-play-singletask-task9-v0'}, 'Unknown environment name'),
        ({'--eval_episodes=': '--eval_episodes=0'}, '--eval_episodes must be at least 1'),
        ({'--offline_steps=': '--offline_steps=-5'}, '--offline_steps must be >= 0'),
        ({'--agent.num_qs=': '--agent.no_such_key=1'}, 'no_such_key'),
        ({'--dataset_dir=': '--dataset_dir=/nonexistent'}, 'expected the official files'),
    ],
)
def test_bad_input_fails_with_a_clear_message(tmp_path, generated_datasets_dir, change, message):
    args = tiny_args(tmp_path, generated_datasets_dir)
    (prefix, replacement), = change.items()
    args = [replacement if a.startswith(prefix) else a for a in args]
    result = run_main(args, tmp_path, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_wrong_dataset_file_is_rejected_naming_it(tmp_path, generated_datasets_dir):
    # The puzzle-3x3 files put in place of cube-double's: right keys, wrong dimensions.
    bad_dir = tmp_path / 'bad'
    bad_dir.mkdir()
    for suffix in ('', '-val'):
        os.symlink(os.path.join(generated_datasets_dir, f'puzzle-3x3-play-v0{suffix}.npz'), bad_dir / f'cube-double-play-v0{suffix}.npz')
    args = [a if not a.startswith('--dataset_dir=') else f'--dataset_dir={bad_dir}' for a in tiny_args(tmp_path, generated_datasets_dir)]
    result = run_main(args, tmp_path, check=False)
    assert result.returncode != 0
    assert 'cube-double-play-v0.npz' in result.stderr and 'has shape' in result.stderr
