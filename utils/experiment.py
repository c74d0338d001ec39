"""Run directories: deterministic names, recorded flags, the markers that make runs resumable, and stopping on a
signal with a checkpoint."""

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time

from utils import files

SEED_STRIDE = 10001  # --num_seeds=N trains the seeds s + SEED_STRIDE·k, k < N (the paper's seeds are 10001·k)
DONE = 'DONE'  # written last, holding the final summary: a run with it is finished and is never overwritten
DIVERGED = 'DIVERGED'  # written when a loss became NaN or inf
# Version of the online phase's data path, in the settings (and so the run directory's hash) of every run with an
# online phase. Version 1 (no key) stored every online transition with s == s' (and at an episode end the next
# episode's first state as s): online results of version 1 are invalid, and reports and launchers ignore them.
ONLINE_DATA_VERSION = 2


def online_results_invalid(settings):
    """Why a run with these settings has invalid online results, or '' when it has none or they are valid."""
    if not settings.get('online_steps') or settings.get('online_data_version') == ONLINE_DATA_VERSION:
        return ''
    return (f'online phase of online data version {settings.get("online_data_version", 1)} (stored wrong '
            f'transitions; invalid, rerun with the current code)')


def config_hash(settings):
    """Short stable hash of the settings that change results (not paths, logging or the seed)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_dir_name(save_dir, agent_name, env_name, seed, settings):
    return os.path.join(save_dir, agent_name, env_name, f'seed{seed}-{config_hash(settings)}')


def code_version():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=root, capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + ('-dirty' if dirty.stdout.strip() else '')
    except Exception:  # not a git checkout: the version is simply unknown
        return 'unknown'


def cpu_model():
    """The CPU's model name ('' when unknown). platform.processor() is empty on Linux, so this reads /proc/cpuinfo
    there. Runs record it because a generated dataset's bytes can depend on the CPU (README, "Datasets")."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name':
                    return value.strip()
    except OSError:  # not Linux
        pass
    return platform.processor()


def write_flags(run_dir, flags, settings, data=None):
    """flags.json: every flag, the resolved settings, the data it trains on, the code version and the machine."""
    import jax  # here, not at the top: the sweep tools read this module's constants without loading JAX

    record = dict(
        flags=flags,
        settings=settings,
        data=data,
        code_version=code_version(),
        machine=dict(host=platform.node(), platform=platform.platform(), cpu=cpu_model(),
                     devices=[str(d) for d in jax.devices()]),
        started=time.strftime('%Y-%m-%d %H:%M:%S'),
    )
    write_marker(run_dir, 'flags.json', record)  # atomically: a reader never sees half a record


def read_flags(run_dir):
    """The flags.json record of a run directory, or None when it has none."""
    return read_marker(run_dir, 'flags.json')


def move_aside(path, run_dir, why):
    """Move `path` (a run's files that are not used any more) to `<run_dir>/discarded/<time>-<name>`, never deleting
    it; reports and launchers do not look inside run directories. Returns the new path."""
    destination = os.path.join(run_dir, 'discarded', f'{time.strftime("%Y%m%d-%H%M%S")}-{os.path.basename(path)}')
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.move(path, destination)
    with open(os.path.join(os.path.dirname(destination), 'README.txt'), 'a') as f:
        f.write(f'{os.path.basename(destination)}: {why}\n')
    return destination


def move_run_aside(run_dir, why):
    """Move every file of a run (but its lock and what was moved aside before) to `<run_dir>/discarded/<time>-run/`,
    so that the run starts over in the same directory. Returns that folder."""
    destination = os.path.join(run_dir, 'discarded', f'{time.strftime("%Y%m%d-%H%M%S")}-run')
    os.makedirs(destination)
    for name in os.listdir(run_dir):
        if name not in ('discarded', '.lock'):
            shutil.move(os.path.join(run_dir, name), os.path.join(destination, name))
    with open(os.path.join(run_dir, 'discarded', 'README.txt'), 'a') as f:
        f.write(f'{os.path.basename(destination)}: {why}\n')
    return destination


class RunInUse(Exception):
    """Another live process holds the run directory's lock."""


class RunLock:
    """The one-writer lock of a run directory (`<run_dir>/.lock`), held by main.py while it trains the run.

    It is an flock: the kernel releases it when the holding process ends, however it ends (kill -9 included), so a
    dead holder never blocks a run; the file only names the last holder (host, pid, start time) for the message.
    """

    def __init__(self, run_dir):
        self.run_dir, self.path, self._file = run_dir, os.path.join(run_dir, '.lock'), None

    def acquire(self):
        """Take the lock, or raise RunInUse naming the holder."""
        file = open(self.path, 'a+')
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or 'another process'
            file.close()
            raise RunInUse(f'{self.run_dir} is being written by {holder}. One process writes a run: wait for it to '
                           f'finish, or stop it (it checkpoints on SIGTERM) and run the command again.')
        file.seek(0)
        file.truncate()
        file.write(f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
        file.flush()
        self._file = file
        return self

    @contextlib.contextmanager
    def held(self):
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def file_lock_holder(path):
    """The text of a lock file whose flock another live process holds ('another process' when it names no one),
    or None when no process holds it. The sweep launcher's own run locks are probed with it too."""
    if not os.path.exists(path):
        return None
    with open(path, 'a+') as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            return file.read().strip() or 'another process'
        fcntl.flock(file, fcntl.LOCK_UN)
    return None


def lock_holder(run_dir):
    """Who holds the run directory's lock ('pid P on HOST since T'), or None when no live process does."""
    return file_lock_holder(os.path.join(run_dir, '.lock'))


def add_note(run_dir, note):
    """Record a deviation of this run (e.g. an inexact resume) in `<run_dir>/notes.txt`; DONE lists them."""
    with open(os.path.join(run_dir, 'notes.txt'), 'a') as f:
        f.write(note.replace('\n', ' ') + '\n')


def read_notes(run_dir):
    path = os.path.join(run_dir, 'notes.txt')
    return open(path).read().splitlines() if os.path.exists(path) else []


def read_marker(run_dir, name):
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_marker(run_dir, name, content):
    with files.atomic_write(os.path.join(run_dir, name)) as f:
        json.dump(content, f, indent=2, sort_keys=True, default=str)


class StopSignals:
    """SIGTERM, SIGINT, SIGUSR1, SIGUSR2 and SIGHUP become a request to checkpoint and stop at the end of the
    current step.

    Slurm sends SIGTERM when it preempts, requeues or times out a job and kills it KillWait seconds later. Before a
    time limit it sends the `--signal` of the job (`sbatch --signal=USR1@<seconds>`; submitit's is SIGUSR2) to
    every process of the job step, main.py included, whose default action for it is to die. The sweep launchers
    pass Ctrl-C and their own SIGTERM on as SIGTERM, and a closed terminal sends SIGHUP. Without this a run would
    lose everything since its last periodic checkpoint. A second signal of the same kind takes its default action
    at once, so a run can still be killed immediately.

        stop_signals = StopSignals().install()
        ...  # at each step boundary: if stop_signals.received: checkpoint, then stop_signals.exit()
        stop_signals.restore()
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)

    def __init__(self):
        self.received = None  # the first signal's name, e.g. 'SIGTERM'
        self._previous = {}

    def install(self):
        """Handle the signals from now on (main thread only), except those the process was started ignoring
        (e.g. SIGINT for a job that a shell started in the background)."""
        for signum in self.SIGNALS:
            previous = signal.getsignal(signum)
            if previous != signal.SIG_IGN:
                signal.signal(signum, self._handle)
                self._previous[signum] = signal.SIG_DFL if previous is None else previous  # None: set outside Python
        return self

    def restore(self):
        """The handlers from before `install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received == name:
            signal.signal(signum, self._previous[signum])
            signal.raise_signal(signum)
        elif self.received is None:
            self.received = name
            print(f'\n{name} received: checkpointing at the end of the current step, then stopping '
                  f'(send {name} again to stop at once).', flush=True)

    def exit(self):
        """End the process by the received signal (its default action), as it would have ended without this
        handler: launchers and shells see that it was stopped by that signal, not that it finished."""
        sys.stdout.flush()
        sys.stderr.flush()
        signum = signal.Signals[self.received]
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


class OutputWithoutReader:
    """A text stream (sys.stdout, sys.stderr) whose writes still succeed once its reader is gone.

    A launcher pipes main.py's output into the runs' logs, and a terminal shows it. If the launcher dies first
    (killed, or a Slurm job's submitit process exiting to requeue) or the terminal closes, the next write would
    raise (BrokenPipeError, or EIO) wherever it happens, even in the handler of the stop signal that
    followed, and the run would end without its checkpoint. Here the first failed write points the stream's file
    descriptor at /dev/null instead: later output, Python's own buffered bytes and C libraries' writes to the
    descriptor are dropped, and the run goes on to its checkpoint.

        sys.stdout, sys.stderr = OutputWithoutReader(sys.stdout), OutputWithoutReader(sys.stderr)
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError:
            self._drop_output()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except OSError:
            self._drop_output()

    def _drop_output(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        try:
            self._stream.flush()  # the bytes still buffered go to /dev/null now
        except OSError:
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)
