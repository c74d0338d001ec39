"""Runs that cannot be corrupted: one writer per run directory, the data a run was started on, checkpoints that fail
safe, one-line errors that leave nothing on disk, exact resume after kill -9, and no silent retry of a diverged run."""

import os
import re
import signal

import numpy as np
import pytest

from tests.main_runs import (assert_same_results, find_run_dir, logged_steps, read_csv, run_dirs, run_main, start_main,
                             tiny_args, wait_for)
from utils import experiment


def test_a_second_process_on_a_run_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path, generated_datasets_dir):
    args = [a for a in tiny_args(tmp_path, generated_datasets_dir) if not a.startswith('--online_steps=')]
    args += ['--online_steps=100000']
    first = start_main(args, tmp_path / 'first.log')
    wait_for(lambda: logged_steps(tmp_path), first, tmp_path / 'first.log')  # training: the lock is held
    run_dir = find_run_dir(tmp_path)
    assert f'pid {first.pid}' in experiment.lock_holder(run_dir)
    second = run_main(args, tmp_path, check=False)
    assert second.returncode != 0 and 'Traceback' not in second.stderr
    assert f'is being written by pid {first.pid}' in second.stderr
    rows = read_csv(os.path.join(run_dir, 'train.csv'))
    assert len({r['step'] for r in rows}) == len(rows)  # nothing written twice
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert experiment.lock_holder(run_dir) is None  # the kernel released it with the process
    # Killed perhaps while writing a checkpoint: orbax's unfinished '<step>.orbax-checkpoint-tmp' is not one.
    latest = max(int(name) for name in os.listdir(os.path.join(run_dir, 'checkpoints')) if name.isdigit())
    resumed = run_main(args + [f'--stop_at_step={latest + 5}'], tmp_path)  # a dead holder blocks nothing
    assert f'Resumed from the checkpoint at step {latest}' in resumed.stdout
    assert f'Stopped at step {latest + 5}' in resumed.stdout


def changed_copy(dataset_dir, out_dir):
    """The fixture's cube-double files with one action changed: the same name, other data."""
    os.makedirs(out_dir)
    for suffix in ('', '-val'):
        name = f'cube-double-play-v0{suffix}.npz'
        with np.load(os.path.join(dataset_dir, name)) as file:
            arrays = dict(file)
        arrays['actions'][0, 0] = -arrays['actions'][0, 0]
        np.savez_compressed(os.path.join(out_dir, name), **arrays)
    return out_dir


def test_a_run_never_continues_or_skips_on_other_data(tmp_path, generated_datasets_dir):
    other = changed_copy(generated_datasets_dir, tmp_path / 'other')
    on_other = lambda args: [f'--dataset_dir={other}' if a.startswith('--dataset_dir=') else a for a in args]  # noqa: E731
    args = tiny_args(tmp_path, generated_datasets_dir)
    run_main(args + ['--stop_at_step=20'], tmp_path)
    run_dir = find_run_dir(tmp_path)
    recorded = experiment.read_flags(run_dir)['data']
    assert recorded['dataset_name'] == 'cube-double-play-v0' and recorded['source'] == 'dir'
    resumed = run_main(on_other(args), tmp_path, check=False)
    assert resumed.returncode != 0 and 'was started on other data: fingerprint' in resumed.stderr
    assert 'use another --save_dir' in resumed.stderr and 'Traceback' not in resumed.stderr
    run_main(args, tmp_path)  # the data it was started on: it resumes and finishes
    assert experiment.read_flags(run_dir)['data'] == recorded  # recorded once, at the first start
    skipped = run_main(on_other(args), tmp_path, check=False)
    assert skipped.returncode != 0 and 'was started on other data' in skipped.stderr and 'skipping' not in skipped.stdout
    assert 'already finished' in run_main(args, tmp_path).stdout


def test_a_damaged_checkpoint_is_moved_aside_and_the_one_before_is_used(tmp_path, generated_datasets_dir):
    args = tiny_args(tmp_path, generated_datasets_dir)  # checkpoints every 20 steps; max two kept
    run_main(args + ['--stop_at_step=50'], tmp_path)
    run_dir = find_run_dir(tmp_path)
    checkpoints = os.path.join(run_dir, 'checkpoints')
    assert sorted(os.listdir(checkpoints), key=int) == ['40', '50']
    damaged = 0
    for root, _, files in os.walk(os.path.join(checkpoints, '50', 'state')):
        for name in files:
            with open(os.path.join(root, name), 'r+b') as f:
                f.truncate(max(os.path.getsize(os.path.join(root, name)) // 3, 1))
                damaged += 1
    assert damaged
    resumed = run_main(args, tmp_path)
    assert 'The checkpoint at step 50' in resumed.stdout and 'cannot be restored' in resumed.stdout
    assert 'Resumed from the checkpoint at step 40' in resumed.stdout and 'Finished.' in resumed.stdout
    discarded = os.listdir(os.path.join(run_dir, 'discarded'))
    assert any(name.endswith('-50') for name in discarded) and 'README.txt' in discarded
    assert [int(r['step']) for r in read_csv(os.path.join(run_dir, 'train.csv'))] == [10, 20, 30, 40, 50, 60, 70]


@pytest.mark.parametrize('change, message', [
    ('--agent.nosuchkey=1', "qam has no config key 'nosuchkey'"),
    ('--agent=no/such/agent.py', "Agent file 'no/such/agent.py' does not exist"),
    ("--agent.actor_hidden_dims=abc", '--agent.actor_hidden_dims must be a tuple of positive integers'),
    ('--agent.batch_size=0', '--agent.batch_size must be at least 1'),
    ('--agent.horizon_length=3', 'Set the chunk length with --horizon_length'),
    ('--dataset_dir=/nonexistent', 'expected the official files'),
])
def test_a_mistake_is_one_line_and_writes_nothing(tmp_path, generated_datasets_dir, change, message):
    key = change.split('=')[0] if change.startswith('--dataset') else '--agent.batch_size='
    args = [a for a in tiny_args(tmp_path, generated_datasets_dir) if not a.startswith(key)] + [change]
    result = run_main(args, tmp_path, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert 'Traceback' not in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert not os.path.exists(os.path.join(tmp_path, 'runs'))


def steps_of_a_run(tmp_path):
    """The steps in train.csv of the first of the runs so far (none before it has one)."""
    root = os.path.join(tmp_path, 'runs', 'qam', 'cube-double-play-singletask-task2-v0')
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    path = os.path.join(root, names[0], 'train.csv') if names else ''
    return [int(r['step']) for r in read_csv(path) if r['step']] if path and os.path.exists(path) else []


@pytest.mark.parametrize('num_seeds', [1, 2])
def test_kill_9_in_the_online_phase_then_a_rerun_gives_the_uninterrupted_results(tmp_path, generated_datasets_dir,
                                                                               num_seeds):
    budget = ('--offline_steps=', '--online_steps=', '--eval_interval=', '--save_interval=')
    args = [a for a in tiny_args(tmp_path, generated_datasets_dir) if not a.startswith(budget)]
    args += ['--offline_steps=20', '--online_steps=200', '--eval_interval=100', '--save_interval=25',
             f'--num_seeds={num_seeds}']
    process = start_main(args, tmp_path / 'killed.log')
    wait_for(lambda: any(step >= 90 for step in steps_of_a_run(tmp_path)), process, tmp_path / 'killed.log')
    process.send_signal(signal.SIGKILL)  # no handler runs: the rows since the last checkpoint are lost and redone
    process.wait(timeout=60)
    resumed = run_main(args, tmp_path)
    step = int(re.search(r'Resumed from the checkpoint at step (\d+)', resumed.stdout).group(1))
    assert step > 20 and (step - 20) % 25 == 0  # an online checkpoint, inside a training episode
    reference = [a.replace(f'{tmp_path}/runs', f'{tmp_path}/reference') for a in args]
    run_main(reference, tmp_path)
    resumed_dirs, reference_dirs = run_dirs(tmp_path), run_dirs(tmp_path, 'reference')
    assert list(resumed_dirs) == list(reference_dirs) and len(resumed_dirs) == num_seeds
    for name in resumed_dirs:
        assert_same_results(resumed_dirs[name], reference_dirs[name], rtol=0)
