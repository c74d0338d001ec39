"""The state of a sweep's runs on disk, and the wrapper that executes a run, or several seeds of one configuration
as one main.py process (`pack_runs`), locally or inside a Slurm job.

Files of a run under the launcher's save root S (see `Run.save_dir`: one folder per method):

    S/<method>/<agent>/<env_name>/seed<seed>-<hash>/   main.py's run directory: flags.json, eval.csv, checkpoints/,
                                                       DONE or DIVERGED
    S/<method>/_launch/<env_name>/seed<seed>-<command hash>.log    stdout and stderr of every attempt, appended
                                                          .json   the last attempt: state, host, pid, job, exit code
                                                          .lock   flock'ed while the run executes
                                                          .job    the Slurm job it was submitted to

A run's directory is the one main.py writes for its command line: the command is parsed and resolved by the same
code as in main.py (utils/run_flags.py), agent config and domain defaults included. A run is executed by running
its command with the lock held: running it again resumes from its last checkpoint, and a DONE run is skipped. A
process of several seeds holds all of their locks and appends its output to each of their logs; each run's state is
its own (done, failed, ...).
"""

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import shlex
import signal
import socket
import subprocess
import time

from sweeps.sweeps import SweepError
from utils import experiment, files

DONE, DIVERGED = experiment.DONE, experiment.DIVERGED  # main.py's markers
STATES = ('done', 'running', 'queued', 'failed', 'interrupted', 'not started')
SEED_STRIDE = experiment.SEED_STRIDE  # main.py --num_seeds=N trains the seeds s + SEED_STRIDE·k, k < N
LOCK_WAIT_S = 10  # a status check holds the lock for microseconds; a starting run waits this long for it


# ------------------------------------------------------------------------------------------------- paths
def launch_paths(run, root):
    base = os.path.join(run.save_dir(root), '_launch', run.env_name, f'seed{run.seed}-{run.command_hash}')
    return {ext: f'{base}.{ext}' for ext in ('log', 'json', 'lock', 'job')}


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, content):
    with files.atomic_write(path) as f:
        json.dump(content, f, indent=2, sort_keys=True, default=str)


def tail(path, lines=10):
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors='replace')
    except OSError:
        return []
    return [line for line in text.replace('\r', '\n').splitlines() if line.strip()][-lines:]


# ------------------------------------------------------------------------------------ finding the run dir
@functools.lru_cache(maxsize=None)
def _resolve(argv):
    from utils import run_flags  # on first use: it loads JAX, the agents and the data sources

    flag_values = run_flags.parse(argv)
    _, _, settings = run_flags.resolve_run(flag_values)
    return flag_values, settings


def resolve(run, root):
    """main.py's parsed flags and resolved settings of the run's command line (utils/run_flags.py), as main.py
    computes them; SweepError if main.py would refuse the command. The seed is not part of the settings: runs that
    differ only in their seed are resolved once."""
    from absl import app

    argv = tuple(arg for arg in run.argv(root)[1:] if not arg.startswith('--seed='))
    try:
        return _resolve(argv)
    except app.UsageError as e:
        raise SweepError(f'{run.key}: main.py would refuse this run: {e}') from None


def run_dir(run, root):
    """main.py's run directory of this run under `root` (which exists once main.py has started the run)."""
    from utils import run_flags

    flag_values, settings = resolve(run, root)
    return run_flags.run_dir(flag_values, settings, run.seed)


def find_run_dir(run, root):
    """main.py's run directory of this run, or None when main.py has not started it."""
    if not os.path.isdir(os.path.join(run.save_dir(root), run.agent, run.env_name)):
        return None  # nothing of this method and task yet (a dry run needs no agent file to get here)
    path = run_dir(run, root)
    return path if os.path.isdir(path) else None


def latest_checkpoint(run_dir):
    steps = [int(n) for n in os.listdir(os.path.join(run_dir, 'checkpoints')) if n.isdigit()] if run_dir and \
        os.path.isdir(os.path.join(run_dir, 'checkpoints')) else []
    return max(steps) if steps else None


# ------------------------------------------------------------------------------------------------ status
def lock_held(path):
    """Whether another process holds the run's lock (i.e. the run is executing)."""
    return experiment.file_lock_holder(path) is not None


@dataclasses.dataclass
class RunStatus:
    run: object
    state: str  # one of STATES
    detail: str = ''
    run_dir: str = None
    log: str = None
    log_tail: list = dataclasses.field(default_factory=list)


def status(run, root, queue=None, tail_lines=10):
    """The RunStatus of a run. `queue`: {slurm job id: state} of the jobs in the Slurm queue (None: no Slurm)."""
    paths = launch_paths(run, root)
    run_dir = find_run_dir(run, root)
    state = read_json(paths['json']) or {}
    job = (read_json(paths['job']) or {}).get('job_id')
    log = paths['log'] if os.path.exists(paths['log']) else None

    def make(name, detail=''):
        return RunStatus(run, name, detail, run_dir, log, tail(log, tail_lines) if name == 'failed' and log else [])

    if run_dir and os.path.exists(os.path.join(run_dir, DONE)):
        done = read_json(os.path.join(run_dir, DONE)) or {}
        return make('done', done.get('summary', ''))
    if lock_held(paths['lock']):
        where = f'on {state.get("host")}, ' + (f'job {state["job"]}' if state.get('job') else f'pid {state.get("pid")}')
        return make('running', f'{where} since {state.get("started", "?")}')
    holder = run_dir and experiment.lock_holder(run_dir)
    if holder:  # main.py holds the run directory's own lock: started by hand, outside this launcher
        return make('running', f'outside the launcher: {holder}')
    if run_dir and os.path.exists(os.path.join(run_dir, DIVERGED)):
        diverged = read_json(os.path.join(run_dir, DIVERGED)) or {}
        return make('failed', f'diverged at step {diverged.get("step")}: non-finite {diverged.get("keys")}')
    in_queue = queue.get(job) if queue is not None and job else None
    attempt_ended = state.get('job') == job and state.get('state') not in ('running', 'interrupted')
    if in_queue in ('RUNNING', 'CONFIGURING') and not attempt_ended:
        return make('running', f'starting in Slurm job {job}')
    if in_queue and not attempt_ended:
        restarting = ' (requeued; resumes from its checkpoint)' if state else ''
        return make('queued', f'Slurm job {job} {in_queue.lower()}{restarting}')
    checkpoint = latest_checkpoint(run_dir)
    resume = f'resumes from the checkpoint at step {checkpoint}' if checkpoint is not None else 'restarts from step 0'
    last = state.get('state')
    if last == 'failed':
        where = ''.join(f' {word} {state[key]}' for word, key in (('on', 'host'), ('at', 'ended')) if state.get(key))
        return make('failed', f'exit code {state.get("returncode")}{where}')
    if last in ('running', 'interrupted'):
        return make('interrupted', f'killed ({state.get("host")}, started {state.get("started")}); {resume}')
    if last == 'stopped':
        return make('interrupted', f'stopped by --stop_at_step at {state.get("ended")}; {resume}')
    if job and not state and queue is None:
        return make('queued', f'submitted as Slurm job {job}; the Slurm queue cannot be read here')
    if job and not state:
        return make('failed', f'Slurm job {job} left the queue without starting the run; see its submitit log')
    if run_dir:
        return make('interrupted', f'started outside the launcher; {resume}')
    return make('not started')


def slurm_queue():
    """{job id: state} of the jobs in the Slurm queue, array tasks as '<array id>_<task>'; None without Slurm."""
    try:
        out = subprocess.run(['squeue', '-h', '-r', '-o', '%i %T'], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


# --------------------------------------------------------------------------------------------- execution
def _acquire(lock_file):
    deadline = time.time() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.time() > deadline:
                return False
            time.sleep(0.2)


def current_job():
    """The Slurm job this process runs in ('<array id>_<task>' for array tasks), or None."""
    if os.environ.get('SLURM_ARRAY_JOB_ID'):
        return f'{os.environ["SLURM_ARRAY_JOB_ID"]}_{os.environ["SLURM_ARRAY_TASK_ID"]}'
    return os.environ.get('SLURM_JOB_ID')


def pack_runs(runs, size, root=None):
    """The runs as processes: lists of at most `size` runs that main.py trains as one vmapped program
    (`--seed=s --num_seeds=n` trains the seeds s + 10001·k, k < n, each in its own run directory). Runs share a
    process when they differ only in their seed, their seeds are s, s + 10001, s + 20002, ... (the paper's seeds are),
    and, under `root`, their latest checkpoints are at the same step: main.py resumes a process's runs from a step
    that all of them saved, so runs interrupted at different steps stay apart. Processes keep the order of `runs`."""
    if size < 1:
        raise ValueError(f'A process trains at least one run, got {size}.')

    def configuration(run):
        step = latest_checkpoint(find_run_dir(run, root)) if root else None
        return run.method, tuple(flag for flag in run.flags if flag[0] != 'seed'), step

    groups = {}
    for run in runs:
        groups.setdefault(configuration(run), []).append(run)
    packs = []
    for group in groups.values():
        pack = []
        for run in sorted(group, key=lambda run: run.seed):
            if pack and (len(pack) == size or run.seed != pack[-1].seed + SEED_STRIDE):
                packs.append(pack)
                pack = []
            pack.append(run)
        packs.append(pack)
    position = {id(run): index for index, run in enumerate(runs)}
    return sorted(packs, key=lambda pack: min(position[id(run)] for run in pack))


def pack_argv(pack, root, python=None):
    """The main.py command line of a process (see `pack_runs`): its first run's, with --num_seeds for the others."""
    argv = pack[0].argv(root, python)
    return argv if len(pack) == 1 else argv + [f'--num_seeds={len(pack)}']


def execute(pack, root, python=None, env=None, announce=None):
    """Run a process of runs (see `pack_runs`; one run is a process of one) to its end, with every run's lock held.
    Returns {run key: final state}: 'done', 'failed', 'interrupted', 'stopped' or 'skipped' (already done, or
    executing elsewhere). A run found done or locked elsewhere is left out; if the rest are no longer consecutive
    seeds, they run as several processes, one after the other.

    The output of the process is appended to the log of each of its runs. `env`: extra environment variables (GPU
    assignment). `announce(run, pid)` is called for every run once its process has started.
    """
    results = {}
    with contextlib.ExitStack() as stack:
        locks = {}
        for run in pack:
            path = launch_paths(run, root)['lock']
            os.makedirs(os.path.dirname(path), exist_ok=True)
            lock = stack.enter_context(open(path, 'a'))
            if not _acquire(lock):
                results[run.key] = 'skipped'  # executing elsewhere
                continue
            run_dir = find_run_dir(run, root)
            if run_dir and (os.path.exists(os.path.join(run_dir, DONE)) or experiment.lock_holder(run_dir)):
                results[run.key] = 'skipped'  # finished, or main.py runs it outside this launcher
                continue
            locks[run.key] = lock
        for process_runs in pack_runs([run for run in pack if run.key in locks], max(1, len(locks)), root):
            results.update(_execute_process(process_runs, [locks[run.key] for run in process_runs], root, python, env,
                                            announce))
    return results


def _execute_process(pack, locks, root, python, env, announce):
    """One main.py process for the runs of `pack`, whose `locks` this process holds (see `execute`)."""
    paths = [launch_paths(run, root) for run in pack]
    argv = pack_argv(pack, root, python)
    record = dict(state='running', host=socket.gethostname(), job=current_job(), command=argv,
                  started=time.strftime('%Y-%m-%d %H:%M:%S'))
    seeds = f' (one process for the seeds {", ".join(str(run.seed) for run in pack)})' if len(pack) > 1 else ''
    header = (f'\n=== {record["started"]} start on {record["host"]}'
              f'{" (Slurm job " + record["job"] + ")" if record["job"] else ""}: {shlex.join(argv)}{seeds}\n')
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(p['log'], 'ab')) for p in paths]
        _write_all(logs, header.encode())
        # The locks pass to main.py too: they stay held while it runs, even if this process is killed first.
        process = subprocess.Popen(argv, cwd=os.path.dirname(argv[1]), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   pass_fds=[lock.fileno() for lock in locks])
        for run, p in zip(pack, paths):
            write_json(p['json'], dict(record, pid=process.pid))
            if announce:
                announce(run, process.pid)
        try:
            while chunk := os.read(process.stdout.fileno(), 1 << 16):  # the output, into every run's log
                _write_all(logs, chunk)
            returncode = process.wait()
        except BaseException:  # Ctrl-C or the job being killed: stop the process too (its runs resume later;
            # on SIGTERM main.py saves a checkpoint at the end of its current step, given the time)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            for p in paths:
                write_json(p['json'], dict(record, pid=process.pid, state='interrupted',
                                           ended=time.strftime('%Y-%m-%d %H:%M:%S')))
            raise
        finally:
            process.stdout.close()
        ended = time.strftime('%Y-%m-%d %H:%M:%S')
        results = {}
        for run, p in zip(pack, paths):
            run_dir = find_run_dir(run, root)
            if run_dir and os.path.exists(os.path.join(run_dir, DONE)):
                final = 'done'
            elif returncode < 0:
                final = 'interrupted'  # killed by a signal (preemption, requeue, time limit)
            elif returncode == 0:
                final = 'stopped'  # --stop_at_step
            else:
                final = 'failed'  # an error, or this run diverged while the others of its process finished
            write_json(p['json'], dict(record, pid=process.pid, state=final, returncode=returncode, ended=ended))
            results[run.key] = final
        for log, run in zip(logs, pack):
            log.write(f'=== {ended} {results[run.key]} (exit code {returncode})\n'.encode())
    return results


def _write_all(files, data):
    for f in files:
        f.write(data)
        f.flush()


def device_env(index, devices, runs_on_device):
    """Environment of the index-th concurrent run: its own GPU, and a matching share of the GPU memory when
    several runs share one (JAX preallocates 75% of a GPU by default)."""
    if not devices:
        return {}
    env = {'CUDA_VISIBLE_DEVICES': str(devices[index % len(devices)])}
    if runs_on_device > 1:
        env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{min(0.75, 0.9 / runs_on_device):.3f}'
    return env
