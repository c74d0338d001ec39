"""Launch the runs of a sweep (print, local or Slurm), and report their status.

    python -m sweeps.launch paper --methods=QAM,FQL --domains=c2 --tasks=2     # print the commands (a dry run)
    python -m sweeps.launch paper --backend=local --slots=4 --methods=QAM       # run them here, 4 at a time
    python -m sweeps.launch paper --backend=slurm --partition=gpu --time=1440   # submit Slurm job arrays
    python -m sweeps.launch paper --backend=slurm --seeds_per_process=12 ...    # a task's 12 seeds in one process
    python -m sweeps.launch status paper                                        # done / running / failed / ...

<sweep> is `paper` (the main comparison), `rlpd`, `quality`, `sensitivity`, `mini`, or a path to a .py file that defines
`SWEEP = sweeps.sweeps.Sweep(...)`. Runs that finished are skipped, runs that are running or queued are left
alone, interrupted and failed runs are launched again (they resume from their last checkpoint; diverged runs only
with --retry_diverged). Give `status` the same --save_dir, --tiny and --extra_args as the launch. Everything is checked
(methods, domains, tasks, seeds, flags, agent keys) before anything is launched.
"""

import argparse
import contextlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

from sweeps import runs as run_state
from sweeps import sweeps
from utils import experiment

LOCAL_STATES = ('done', 'running', 'queued', 'failed', 'interrupted', 'not started')


def comma_list(text, kind=str):
    items = [item.strip() for item in text.split(',') if item.strip()]
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a comma-separated list of {kind.__name__}s, got {text!r}') from None


def int_list(text):
    return comma_list(text, int)


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m sweeps.launch', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('sweep', nargs='+', metavar='[status] sweep',
                        help='a sweep name or file; prefixed by "status" to report instead of launching')
    select = parser.add_argument_group('selection (default: the whole sweep)')
    select.add_argument('--methods', type=comma_list, help='e.g. QAM,FQL (names of the published data)')
    select.add_argument('--domains', type=comma_list,
                        help='datasets (cube-double-play), domains (cube-double) or abbreviations (c2,p33,al)')
    select.add_argument('--tasks', type=int_list, help='task ids, e.g. 1,2')
    select.add_argument('--seeds', type=int_list, help='e.g. 10001,20002')
    common = parser.add_argument_group('every backend')
    common.add_argument('--backend', choices=('print', 'local', 'slurm'), default='print',
                        help='print the commands (default, a dry run), run them here, or submit to Slurm')
    common.add_argument('--save_dir', default='runs', help='root of the run directories (one folder per method)')
    common.add_argument('--extra_args', default='',
                        help='main.py flags added to every command, e.g. "--offline_steps=40 --agent.num_qs=2"')
    common.add_argument('--tiny', action='store_true',
                        help=f'a few-second budget for every run, to check a sweep end to end: {sweeps.TINY_ARGS} '
                             '(where the method does not set the flag itself; --extra_args overrides it)')
    common.add_argument('--python', default=sys.executable, help='the Python that runs main.py')
    common.add_argument('--confirm_above', type=int, default=100,
                        help='ask before launching more than this many runs (default 100)')
    common.add_argument('--yes', action='store_true', help='launch without asking')
    common.add_argument('--retry_diverged', action='store_true', help='launch diverged runs again too')
    common.add_argument('--seeds_per_process', type=int, default=1,
                        help='train up to this many seeds of one configuration in one process, vmapped as one program '
                             '(main.py --num_seeds; each seed keeps its own run directory and results): for GPUs, '
                             'which one small-network run leaves mostly idle. Packed together: consecutive seeds s, '
                             's + 10001, ... whose latest checkpoints are at the same step (default 1: a process per '
                             'run)')
    common.add_argument('--only', type=comma_list,
                        help=f'status: list only runs in these states ({", ".join(LOCAL_STATES)}); counts cover all')
    common.add_argument('--tail', type=int, default=10, help='status: last log lines shown per failed run')
    local = parser.add_argument_group('local backend')
    local.add_argument('--slots', type=int, help='processes (runs, or packs of --seeds_per_process seeds) at a time '
                                                 '(default: one per GPU, 1 without GPUs)')
    local.add_argument('--gpus', type=comma_list,
                       help='GPU ids the slots cycle through (default: CUDA_VISIBLE_DEVICES, else nvidia-smi; '
                            'none on CPU)')
    slurm = parser.add_argument_group('slurm backend (job arrays through submitit)')
    slurm.add_argument('--partition', help='Slurm partition')
    slurm.add_argument('--time', type=int, default=1440,
                       help='time limit of an array task in minutes (default 1440); at the limit the task is '
                            'requeued and its runs resume from their checkpoints')
    slurm.add_argument('--gpus_per_task', type=int, default=1, help='GPUs per array task (0 on CPU-only clusters)')
    slurm.add_argument('--cpus_per_task', type=int, default=4, help='CPUs per array task')
    slurm.add_argument('--mem_gb', type=float, help='memory per array task in GB (default: the partition default)')
    slurm.add_argument('--runs_per_task', type=int, default=1,
                       help='processes packed in one array task (each training --seeds_per_process runs), run '
                            'concurrently on its GPU(s), each with a 1/k share of the GPU memory '
                            '(XLA_PYTHON_CLIENT_MEM_FRACTION)')
    slurm.add_argument('--max_concurrent', type=int, default=64, help='array tasks running at a time (throttle)')
    slurm.add_argument('--account', help='Slurm account')
    slurm.add_argument('--qos', help='Slurm QOS')
    slurm.add_argument('--constraint', help='Slurm node constraint')
    slurm.add_argument('--job_name', help='Slurm job name (default: qam-<sweep>)')
    slurm.add_argument('--slurm_arg', action='append', default=[], metavar='KEY=VALUE',
                       help='another sbatch option, repeatable: --slurm_arg=exclude=node1,node2 --slurm_arg=exclusive')
    slurm.add_argument('--signal_delay_s', type=int, default=120,
                       help='seconds before the time limit at which Slurm signals a task: its runs get this less '
                            '30 s to finish their current step with a checkpoint, then the task is requeued')
    slurm.add_argument('--max_requeues', type=int, default=100, help='time-limit requeues allowed per array task')
    slurm.add_argument('--wait', action='store_true', help='wait until the submitted jobs have left the queue')
    return parser


# ------------------------------------------------------------------------------------------------- status
def collect_status(runs, root, tail_lines=10):
    queue = run_state.slurm_queue() if shutil.which('squeue') else None
    return [run_state.status(run, root, queue, tail_lines) for run in runs]


def counts(statuses):
    return {state: sum(s.state == state for s in statuses) for state in LOCAL_STATES}


def summary_line(statuses):
    return ', '.join(f'{state} {n}' for state, n in counts(statuses).items())


def print_status(sweep, statuses, root, only=None, out=None):
    out = out or sys.stdout
    print(f'Sweep {sweep.name}: {len(statuses)} runs under {os.path.abspath(root)}: {summary_line(statuses)}', file=out)
    width = max(len(s.run.method) for s in statuses)
    for s in statuses:
        if only and s.state not in only:
            continue
        line = f'{s.state:<12} {s.run.method:<{width}}  {s.run.env_name}  seed {s.run.seed:<6}  {s.detail}'
        print(line.rstrip(), file=out)
        if s.state in ('failed', 'interrupted', 'running') and s.run_dir:
            print(f'{"":<12} run: {s.run_dir}', file=out)
        if s.state == 'failed' and s.log:
            print(f'{"":<12} log: {s.log}', file=out)
            for text in s.log_tail:
                print(f'{"":<12} | {text}', file=out)


def to_launch(statuses, retry_diverged=False):
    chosen = []
    for s in statuses:
        if s.state in ('done', 'running', 'queued'):
            continue
        if not retry_diverged and s.run_dir and os.path.exists(os.path.join(s.run_dir, run_state.DIVERGED)):
            continue
        chosen.append(s.run)
    return chosen


def confirm(count, args):
    if count <= args.confirm_above or args.yes:
        return True
    question = f'Launch {count} runs (more than --confirm_above={args.confirm_above}) with the {args.backend} backend?'
    if not sys.stdin.isatty():
        print(f'error: {question} Not confirmed: pass --yes to launch them.', file=sys.stderr)
        return False
    return input(f'{question} [y/N] ').strip().lower() in ('y', 'yes')


# -------------------------------------------------------------------------------------------------- local
class StopRequested(Exception):
    """Ctrl-C, SIGTERM or SIGHUP to the launcher."""


@contextlib.contextmanager
def stop_requests():
    """Within: Ctrl-C, SIGTERM (e.g. `kill`) and SIGHUP (a closed terminal) raise StopRequested in the main thread,
    so that the launcher stops its runs and waits for their checkpoints rather than dying at once: its death would
    close the pipes that carry the runs' output into their logs. Yields an object whose `first` is the number of
    the first signal received."""
    received = types.SimpleNamespace(first=None)

    def request(signum, frame):
        received.first = received.first or signum
        raise StopRequested(signal.Signals(signum).name.replace('SIGINT', 'Interrupted (Ctrl-C)'))

    previous = {signum: signal.signal(signum, request) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(signum) != signal.SIG_IGN}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def detect_gpus():
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    if visible is not None:
        return [d for d in visible.split(',') if d.strip() and d.strip() != '-1']
    if not shutil.which('nvidia-smi'):
        return []
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=index', '--format=csv,noheader'], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def launch_local(packs, root, args):
    devices = args.gpus if args.gpus is not None else detect_gpus()
    slots = args.slots or max(1, len(devices))
    per_device = math.ceil(slots / len(devices)) if devices else 1
    total = sum(map(len, packs))
    print(f'Running {total} runs{f" as {len(packs)} processes" if len(packs) < total else ""}, {slots} at a time'
          + (f' on GPUs {",".join(devices)} ({per_device} per GPU)' if devices else ' (no GPUs)') + '.', flush=True)
    pending, lock, results, processes = list(packs), threading.Lock(), {}, {}
    stopping = threading.Event()

    def announce(run, pid):
        processes[run.key] = pid

    def worker(slot):
        while not stopping.is_set():
            with lock:
                if not pending:
                    return
                pack = pending.pop(0)
            start = time.time()
            try:
                pack_results = run_state.execute(pack, root, args.python,
                                                 run_state.device_env(slot, devices, per_device), announce)
            except Exception as e:  # noqa: BLE001 - reported like a failed run
                pack_results = {run.key: f'error ({type(e).__name__}: {e})' for run in pack}
            with lock:
                for run in pack:
                    processes.pop(run.key, None)
                    results[run.key] = pack_results[run.key]
                    print(f'[{len(results)}/{total}] {results[run.key]:<11} {run.key} ({time.time() - start:.0f} s)',
                          flush=True)

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(slots)]
    with stop_requests() as requests:
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.2)
        except StopRequested as stop:
            stopping.set()
            print(f'\n{stop}: stopping the running runs. Each saves a checkpoint at the end of its current step '
                  '(minutes on a CPU) and resumes from it when launched again. Waiting for them; a second signal '
                  'stops them at once, losing what they did since their last checkpoint.', flush=True)
            signalled = set()

            def stop_and_wait():  # meanwhile the workers keep writing the runs' output to their logs
                while any(thread.is_alive() for thread in threads):
                    for pid in set(processes.values()) - signalled:  # also a process that was just starting
                        signalled.add(pid)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGTERM)
                    time.sleep(0.2)

            try:
                stop_and_wait()
            except StopRequested:
                signalled.clear()  # SIGTERM again, on which main.py stops at once
                with contextlib.suppress(StopRequested):
                    stop_and_wait()
            return 128 + requests.first
    return 0 if all(r in ('done', 'skipped') for r in results.values()) else 1


# -------------------------------------------------------------------------------------------------- slurm
def launch_slurm(packs, root, sweep, args):
    import submitit

    from sweeps.slurm_job import RunGroup

    if args.runs_per_task < 1:
        raise sweeps.SweepError(f'--runs_per_task must be at least 1, got {args.runs_per_task}.')
    folder = os.path.join(root, '_submitit', sweep.name)
    executor = submitit.SlurmExecutor(folder=os.path.join(folder, '%j'), max_num_timeout=args.max_requeues,
                                      python=args.python)
    extra = {}
    for item in args.slurm_arg:
        key, sep, value = item.partition('=')
        extra[key.strip().lstrip('-')] = value if sep else True
    params = dict(
        job_name=args.job_name or f'qam-{sweep.name}', time=args.time, cpus_per_task=args.cpus_per_task,
        array_parallelism=args.max_concurrent, signal_delay_s=args.signal_delay_s, stderr_to_stdout=True,
        setup=[f'cd {sweeps.REPO}', f'export PYTHONPATH={sweeps.REPO}${{PYTHONPATH:+:$PYTHONPATH}}'],
        additional_parameters={'requeue': True, **extra},  # Slurm restarts the task after preemption or a requeue
    )
    optional = dict(partition=args.partition, account=args.account, qos=args.qos, constraint=args.constraint,
                    gpus_per_node=args.gpus_per_task or None, mem=f'{args.mem_gb:g}GB' if args.mem_gb else None)
    params.update({k: v for k, v in optional.items() if v is not None})
    executor.update_parameters(**params)
    k = args.runs_per_task
    groups = [packs[i : i + k] for i in range(0, len(packs), k)]
    with executor.batch():
        stop_wait_s = max(0, args.signal_delay_s - 30)  # what the runs get for their step's end after the signal
        jobs = [executor.submit(RunGroup(group, root, args.python, stop_wait_s)) for group in groups]
    submitted = time.strftime('%Y-%m-%d %H:%M:%S')
    for job, group in zip(jobs, groups):
        for run in (run for pack in group for run in pack):
            run_state.write_json(run_state.launch_paths(run, root)['job'],
                                 dict(job_id=job.job_id, submitted=submitted, submitit_folder=folder))
    array_ids = sorted({job.job_id.split('_')[0] for job in jobs})
    total = sum(map(len, packs))
    print(f'Submitted {total} runs as {len(groups)} array tasks ({k} process{"es" if k > 1 else ""} per task'
          f'{f", {len(packs)} processes in all" if len(packs) < total else ""}) in job(s) {", ".join(array_ids)}; '
          f'job logs in {folder}. Follow with: squeue; python -m sweeps.launch status {sweep.name} ...', flush=True)
    if args.wait:
        ids = {job.job_id for job in jobs}
        while True:
            queue = run_state.slurm_queue() or {}
            if not ids & set(queue):
                break
            time.sleep(10)
    return 0


# --------------------------------------------------------------------------------------------------- main
def main(argv=None):
    args = build_parser().parse_args(argv)
    positional = args.sweep
    show_status = positional[0] == 'status'
    if show_status:
        positional = positional[1:]
    if len(positional) != 1:
        print('error: give one sweep: python -m sweeps.launch [status] <sweep> [flags]', file=sys.stderr)
        return 2
    root = os.path.abspath(args.save_dir)
    try:
        sweep = sweeps.load(positional[0])
        runs = sweeps.expand(sweep, args.methods, args.domains, args.tasks, args.seeds, args.extra_args, args.tiny)
        if args.only:
            bad = [state for state in args.only if state not in LOCAL_STATES]
            if bad:
                raise sweeps.SweepError(f'--only: unknown state(s) {bad}; states: {", ".join(LOCAL_STATES)}.')
        if show_status:
            print_status(sweep, collect_status(runs, root, args.tail), root, args.only)
            return 0
        if args.seeds_per_process < 1:
            raise sweeps.SweepError(f'--seeds_per_process must be at least 1, got {args.seeds_per_process}.')
        if args.seeds_per_process > 1 and any(run_state.resolve(run, root)[0].wandb for run in runs):
            raise sweeps.SweepError('--wandb logs one run per process: use it with --seeds_per_process=1.')
        for warning in sweeps.check_agents(runs, require_agents=args.backend != 'print'):
            print(f'# warning: {warning}', file=sys.stderr)
        statuses = collect_status(runs, root, args.tail)
        chosen = to_launch(statuses, args.retry_diverged)
        packs = run_state.pack_runs(chosen, args.seeds_per_process, root)
        c = counts(statuses)
        header = (f'{sweep.name}: {len(runs)} runs selected ({c["done"]} done, {c["running"] + c["queued"]} running or '
                  f'queued, {len(runs) - c["done"] - c["running"] - c["queued"] - len(chosen)} diverged): '
                  f'{len(chosen)} to launch{f" in {len(packs)} processes" if len(packs) < len(chosen) else ""}.')
        if args.backend == 'print':
            print(f'# {header}')
            for pack in packs:
                print(shlex.join(run_state.pack_argv(pack, root, args.python)))
            return 0
        print(header, flush=True)
        if not chosen:
            return 0
        if not confirm(len(chosen), args):
            return 3
        if args.backend == 'local':
            code = launch_local(packs, root, args)
            statuses = collect_status(runs, root, args.tail)
            print(f'{sweep.name}: {summary_line(statuses)}')
            return code
        return launch_slurm(packs, root, sweep, args)
    except sweeps.SweepError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    # After a closed terminal (SIGHUP) the launcher must still wait for its runs, printing into nothing.
    sys.stdout, sys.stderr = experiment.OutputWithoutReader(sys.stdout), experiment.OutputWithoutReader(sys.stderr)
    sys.exit(main())
