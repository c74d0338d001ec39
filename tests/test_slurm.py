"""The slurm backend on a real Slurm cluster: the tiny sweep of test_sweeps.py (two agents x two seeds) submitted as
a job array (two runs packed per array task), one array task requeued mid-run with `scontrol requeue`, every run
finished from its checkpoint with each evaluation logged exactly once, and a second launch submitting nothing; and a
run warned of its time limit (submitit's SIGUSR2) checkpointing before its task is requeued.

Needs a cluster that answers `sinfo` (CI starts a single-node one with .ci/start_slurm.sh). Without one the test is
skipped, unless QAM_REQUIRE_SLURM=1 (set by .ci/run), where a missing cluster is a failure.
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

from sweeps import launch

try:
    # Imported here, at collection, not first inside the test: submitit's import reconfigures logging
    # (logging.config.dictConfig), which closes every existing handler's stream that is not the current
    # sys.stderr. Under capsys that would close pytest's own capture file held by absl's handler.
    import submitit  # noqa: F401
except ImportError:
    submitit = None
from sweeps import runs as run_state
from test_sweeps import check_finished, in_online_phase, long_tiny_run, tiny_sweep

REQUIRED = os.environ.get('QAM_REQUIRE_SLURM') == '1'
TIMEOUT_S = 900


def cluster_problem():
    """Why no Slurm cluster can run jobs here, or None."""
    if not shutil.which('sinfo') or not shutil.which('sbatch'):
        return 'sinfo/sbatch are not installed'
    try:
        out = subprocess.run(['sinfo', '-h', '-N', '-o', '%T'], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return 'sinfo does not answer'
    if out.returncode:
        return f'sinfo fails: {out.stderr.strip()[:200]}'
    if not any(state.rstrip('*') in ('idle', 'mixed', 'allocated', 'completing') for state in out.stdout.split()):
        return f'no node is up (sinfo: {out.stdout.split()})'
    if submitit is None:
        return 'submitit is not installed (pip install -r requirements.txt)'
    return None


PROBLEM = cluster_problem()
pytestmark = pytest.mark.skipif(
    PROBLEM is not None and not REQUIRED,
    reason=f'No Slurm cluster: {PROBLEM}. Start one with .ci/start_slurm.sh (root, Debian).')


def job_state(job_id):
    out = subprocess.run(['squeue', '-h', '-r', '-j', job_id, '-o', '%T'], capture_output=True, text=True)
    return out.stdout.strip() or None


def wait_for(condition, what, timeout=TIMEOUT_S, check=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if check:
            check()
        time.sleep(0.5)
    raise AssertionError(f'Timed out after {timeout} s waiting for {what}.')


@pytest.fixture
def cluster(monkeypatch):
    """A Slurm cluster to submit to (a failure without one where QAM_REQUIRE_SLURM=1)."""
    if PROBLEM:
        pytest.fail(f'QAM_REQUIRE_SLURM=1 but no Slurm cluster: {PROBLEM}')
    # The jobs inherit this environment (sbatch exports it): CPU JAX and the repository's compilation cache.
    monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
    monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', os.environ['QAM_TEST_JAX_CACHE'])


def test_slurm_backend_runs_the_tiny_sweep_through_a_requeue(tmp_path, generated_datasets_dir, cluster, capsys):
    root = str(tmp_path / 'runs')
    selection, runs = tiny_sweep(generated_datasets_dir)
    slurm = ['--backend=slurm', '--gpus_per_task=0', '--cpus_per_task=1', '--runs_per_task=2', '--time=30',
             '--max_concurrent=2', f'--save_dir={root}']
    assert launch.main(selection + slurm) == 0
    out = capsys.readouterr().out
    assert 'Submitted 4 runs as 2 array tasks (2 processes per task)' in out, out
    jobs = [run_state.read_json(run_state.launch_paths(run, root)['job'])['job_id'] for run in runs]
    array_id = jobs[0].split('_')[0]
    assert jobs == [f'{array_id}_0', f'{array_id}_0', f'{array_id}_1', f'{array_id}_1']  # two runs per array task
    target, job = runs[0], jobs[0]

    def no_failure():
        for status in launch.collect_status(runs, root):
            assert status.state != 'failed', f'{status.run.key} failed: {status.detail}\n' + '\n'.join(status.log_tail)

    try:
        # Requeue the first array task once its first run has written a checkpoint, before that run finishes.
        def mid_run():
            run_dir = run_state.find_run_dir(target, root)
            return run_dir and run_state.latest_checkpoint(run_dir) is not None and \
                not os.path.exists(os.path.join(run_dir, 'DONE'))

        wait_for(mid_run, f'a checkpoint of {target.key}', check=no_failure)
        assert run_state.status(target, root, run_state.slurm_queue()).state == 'running'
        subprocess.run(['scontrol', 'requeue', job], check=True)
        wait_for(lambda: job_state(job) == 'PENDING', f'job {job} to be pending again', timeout=120)
        requeued = run_state.status(target, root, run_state.slurm_queue())
        assert requeued.state == 'queued' and 'requeued' in requeued.detail, requeued
        # Slurm holds a requeued job for two minutes (BeginTime); release it now.
        subprocess.run(['scontrol', 'update', f'jobid={job}', 'StartTime=now'], check=True)

        def all_done():
            return all(s.state == 'done' for s in launch.collect_status(runs, root))

        wait_for(all_done, 'every run to finish', check=no_failure)
        wait_for(lambda: not any(job_state(j) for j in set(jobs)), 'the jobs to leave the queue', timeout=120)
    finally:
        subprocess.run(['scancel', array_id], capture_output=True)

    check_finished(runs, root)  # DONE everywhere; eval.csv [20, 40] and train.csv [10..40], each step exactly once
    log = open(run_state.launch_paths(target, root)['log']).read()
    assert log.count('\n=== ') >= 3 and f'(Slurm job {job})' in log  # start, interrupted, restart (, done)
    assert 'Resumed from the checkpoint at step' in log

    assert launch.main(['status'] + selection + [f'--save_dir={root}']) == 0
    assert 'done 4, running 0, queued 0, failed 0, interrupted 0, not started 0' in capsys.readouterr().out
    # Launching again submits nothing.
    assert launch.main(selection + slurm) == 0
    assert '(4 done, 0 running or queued, 0 diverged): 0 to launch.' in capsys.readouterr().out
    assert [run_state.read_json(run_state.launch_paths(run, root)['job'])['job_id'] for run in runs] == jobs


def test_a_time_limit_warning_lets_the_run_checkpoint_before_the_requeue(tmp_path, generated_datasets_dir, cluster):
    # Before a time limit Slurm sends submitit's signal (SIGUSR2, --signal_delay_s ahead) to every process of the
    # job. main.py used to die of it at once; submitit's exit then closed the pipe of the run's output. Now the run
    # finishes its step with a checkpoint, its output still reaching the log, and only then is the task requeued.
    root = str(tmp_path / 'runs')
    selection, run = long_tiny_run(generated_datasets_dir)
    assert launch.main(selection + ['--backend=slurm', '--gpus_per_task=0', '--cpus_per_task=1', '--time=30',
                                    f'--save_dir={root}']) == 0
    job = run_state.read_json(run_state.launch_paths(run, root)['job'])['job_id']
    try:
        wait_for(lambda: in_online_phase(run, root), f'an online row of {run.key}')
        subprocess.run(['scancel', '--signal=USR2', job], check=True)  # what Slurm sends before the time limit
        wait_for(lambda: job_state(job) == 'PENDING', f'job {job} to be requeued', timeout=300)
    finally:
        subprocess.run(['scancel', job.split('_')[0]], capture_output=True)
    record = run_state.read_json(run_state.launch_paths(run, root)['json'])
    assert record['state'] == 'interrupted' and record['returncode'] == -signal.SIGUSR2, record
    run_dir = run_state.find_run_dir(run, root)
    step = run_state.latest_checkpoint(run_dir)
    log = open(run_state.launch_paths(run, root)['log']).read()
    assert step and step > 20 and f'Stopped at step {step} after SIGUSR2, with a checkpoint' in log, log[-3000:]
