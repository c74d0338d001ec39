"""main.py end to end on a tiny generated dataset: results, skip when finished, resume, and bad input."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.main_runs import (ROOT, assert_same_results, find_run_dir, logged_steps, read_csv, run_dirs, run_main,
                             start_main, tiny_args, wait_for)


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


def test_a_signalled_run_checkpoints_at_the_step_it_is_in_and_resumes_from_there(tmp_path, generated_datasets_dir):
    # Slurm preempts or times out a job with SIGTERM, after a warning to every process of the job (sbatch --signal,
    # SIGUSR2 for submitit's jobs): the run saves a checkpoint after its current step and ends by the signal; the
    # same command resumes from that step. The SIGUSR2 leg's output goes to a pipe whose reader is gone by then, as
    # when a launcher dies first (submitit exits to requeue): the run must still checkpoint.
    args = [a for a in tiny_args(tmp_path, generated_datasets_dir)
            if not a.startswith(('--offline_steps=', '--online_steps=', '--eval_interval=', '--save_interval='))]
    args += ['--offline_steps=20', '--online_steps=100000', '--eval_interval=50000', '--save_interval=50000']
    stopped_at = []
    for leg, signum in enumerate((signal.SIGTERM, signal.SIGUSR2, signal.SIGUSR1, signal.SIGHUP)):
        log_path = tmp_path / f'leg{leg}.log'
        reader_gone = signum == signal.SIGUSR2
        process = start_main(args, log_path, pipe=reader_gone)
        last = stopped_at[-1] if stopped_at else 20  # wait for an online row after the last stop
        wait_for(lambda: any(step > last for step in logged_steps(tmp_path)), process, log_path)
        if reader_gone:
            process.stdout.close()
        process.send_signal(signum)
        process.wait(timeout=300)
        output = open(log_path).read()
        assert process.returncode == -signum, output[-3000:]
        checkpoints = os.listdir(os.path.join(find_run_dir(tmp_path), 'checkpoints'))
        step = max(int(name) for name in checkpoints if name.isdigit())
        if not reader_gone:
            assert f'Stopped at step {step} after {signum.name}, with a checkpoint' in output
        if stopped_at and not reader_gone:
            assert f'Resumed from the checkpoint at step {stopped_at[-1]}.' in output
        assert step > last  # an online step: any environment step can be the last one
        assert logged_steps(tmp_path) == list(range(10, step + 1, 10))  # each row once, none lost
        stopped_at.append(step)
    assert not os.path.exists(os.path.join(find_run_dir(tmp_path), 'DONE'))


def test_a_second_signal_of_the_same_kind_stops_at_once_and_ignored_signals_stay_ignored():
    code = (
        'import os, signal, time\n'
        'from utils.experiment import StopSignals\n'
        'signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n'  # as a shell starts a background job with SIGINT
        'stop = StopSignals().install()\n'
        'os.kill(os.getpid(), signal.SIGUSR1); time.sleep(0.1)\n'
        'print("after SIGUSR1:", stop.received, flush=True)\n'
        'os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.1)\n'
        'os.kill(os.getpid(), signal.SIGINT); time.sleep(0.1)\n'
        'print("requested by", stop.received, flush=True)\n'
        'os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n'
        'print("still running")\n'
    )
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert result.returncode == -signal.SIGTERM
    assert 'after SIGUSR1: None' in result.stdout
    assert 'requested by SIGTERM' in result.stdout and 'still running' not in result.stdout
    assert result.stdout.count('checkpointing at the end of the current step') == 1


@pytest.mark.parametrize(
    'change, message',
    [
        ({'--agent=': '--agent=no_such_agent'}, 'Unknown agent'),
        ({'--env_name=': '--env_name=cube-double-play-singletask-task9-v0'}, 'Unknown environment name'),
        ({'--eval_episodes=': '--eval_episodes=0'}, '--eval_episodes must be at least 1'),
        ({'--eval_episodes=': '--eval_envs=0'}, '--eval_envs must be at least 1'),
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


def test_help_lists_the_flags(tmp_path):
    """The flags are defined in utils/run_flags.py; --help still lists them as main.py's, and the agent's keys."""
    result = run_main(['--agent=fql', '--help'], tmp_path, check=False)  # absl exits with 1 after the help
    for flag in ('--env_name', '--offline_steps', '--agent:', '--hyper_sweep', '--dataset_source'):
        assert flag in result.stdout, flag
    # Then the agent's keys, with the comments of its get_config().
    assert "--agent.alpha: Weight of the distillation loss towards the BC flow's ODE output" in result.stdout
    assert '--agent.num_qs: K: critic ensemble size.\n    (default: 10)' in result.stdout


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


def test_two_vmapped_seeds_give_the_results_of_two_single_seed_runs(tmp_path, generated_datasets_dir):
    # Seeds 3 and 10004 (--num_seeds=2 from --seed=3), stopped at the end of the offline phase and resumed. With 2
    # evaluation environments for the process, each seed's 2 episodes run in 2 waves of 1 (the single runs: 1 wave).
    two_seeds = tiny_args(tmp_path, generated_datasets_dir, extra=['--num_seeds=2', '--eval_envs=2'])
    stopped = run_main(two_seeds + ['--stop_at_step=40'], tmp_path)
    assert 'Stopped at step 40' in stopped.stdout
    resumed = run_main(two_seeds, tmp_path)
    assert 'Resumed from the checkpoint at step 40' in resumed.stdout and resumed.stdout.count('Finished.') == 2
    for seed in (3, 10004):
        args = [a.replace(f'{tmp_path}/runs', f'{tmp_path}/single')
                for a in tiny_args(tmp_path, generated_datasets_dir) if not a.startswith('--seed=')]
        run_main(args + [f'--seed={seed}'], tmp_path)
    vmapped, single = run_dirs(tmp_path), run_dirs(tmp_path, 'single')
    assert list(vmapped) == list(single) and [name.split('-')[0] for name in vmapped] == ['seed10004', 'seed3']
    for name in vmapped:
        assert_same_results(vmapped[name], single[name])
        assert json.load(open(os.path.join(vmapped[name], 'flags.json')))['flags']['seed'] == int(name[4:].split('-')[0])
    assert all(os.path.exists(os.path.join(d, 'DONE')) for d in vmapped.values())


def test_hyper_sweep_member_gives_the_results_of_its_single_run(tmp_path, generated_datasets_dir):
    offline_only = ['--online_steps=0', '--agent.edit_scale=0.1']  # QAM-E, whose branches read the static config
    run_main(tiny_args(tmp_path, generated_datasets_dir, extra=offline_only + ['--hyper_sweep=inv_temp=1,3']), tmp_path)
    single = [a.replace(f'{tmp_path}/runs', f'{tmp_path}/single') for a in tiny_args(tmp_path, generated_datasets_dir)]
    run_main(single + offline_only + ['--agent.inv_temp=3'], tmp_path)  # the member whose value is not the static one
    swept = run_dirs(tmp_path)
    (name, reference), = run_dirs(tmp_path, 'single').items()
    assert len(swept) == 2 and name in swept
    assert_same_results(swept[name], reference)
    inv_temps = {json.load(open(os.path.join(d, 'flags.json')))['settings']['agent']['inv_temp'] for d in swept.values()}
    assert inv_temps == {1.0, 3.0}


def test_a_diverging_member_is_marked_and_the_others_finish(tmp_path, generated_datasets_dir):
    # inv_temp = 1e30 scales the terminal adjoint until the adjoint-matching loss overflows; inv_temp = 1 is fine.
    extra = ['--online_steps=0', '--hyper_sweep=inv_temp=1,1e30']
    result = run_main(tiny_args(tmp_path, generated_datasets_dir, extra=extra), tmp_path, check=False)
    assert result.returncode != 0 and '1 of 2 runs diverged' in result.stderr
    assert 'Diverged at step 10' in result.stdout and 'adjoint_matching_loss' in result.stdout
    markers = {}
    for run_dir in run_dirs(tmp_path).values():
        inv_temp = json.load(open(os.path.join(run_dir, 'flags.json')))['settings']['agent']['inv_temp']
        markers[inv_temp] = sorted(f for f in os.listdir(run_dir) if f in ('DONE', 'DIVERGED'))
    assert markers == {1.0: ['DONE'], 1e30: ['DIVERGED']}
    # Rerunning does not retry the diverged run silently; --force_restart starts it over, its old files moved aside.
    again = run_main(tiny_args(tmp_path, generated_datasets_dir, extra=extra), tmp_path, check=False)
    assert again.returncode != 0 and 'diverged at step 10' in again.stderr and '--force_restart' in again.stderr
    restarted = run_main(tiny_args(tmp_path, generated_datasets_dir, extra=extra + ['--force_restart']), tmp_path,
                         check=False)
    assert 'already finished' in restarted.stdout and 'Starting over a run that diverged' in restarted.stdout
    assert 'Diverged at step 10' in restarted.stdout  # it diverges again, as it should
    diverged_dir = [d for d in run_dirs(tmp_path).values() if os.path.exists(os.path.join(d, 'DIVERGED'))][0]
    (moved,) = [n for n in os.listdir(os.path.join(diverged_dir, 'discarded')) if n.endswith('-run')]
    assert {'flags.json', 'DIVERGED'} <= set(os.listdir(os.path.join(diverged_dir, 'discarded', moved)))


@pytest.mark.parametrize(
    'extra, message',
    [
        (['--num_seeds=0'], '--num_seeds must be at least 1'),
        (['--hyper_sweep=num_qs=2,4'], "cannot sweep 'num_qs'"),
        (['--hyper_sweep=inv_temp=1,x'], 'expected inv_temp=<number>'),
        (['--hyper_sweep=inv_temp=0,3'], 'distinct and positive'),
        (['--hyper_sweep=inv_temp=1,3', '--agent.inv_temp=2'], 'do not also set --agent.inv_temp'),
    ],
)
def test_bad_vmapped_run_flags_fail_with_a_clear_message(tmp_path, generated_datasets_dir, extra, message):
    result = run_main(tiny_args(tmp_path, generated_datasets_dir, extra=extra), tmp_path, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not os.path.exists(os.path.join(tmp_path, 'runs'))
