"""Run directories: deterministic names, recorded flags, the markers that make runs resumable, and stopping on a
signal with a checkpoint."""

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time

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


def write_flags(run_dir, flags, settings):
    """flags.json: every flag, the resolved settings, the code version and the machine."""
    import jax  # here, not at the top: the sweep tools read this module's constants without loading JAX

    record = dict(
        flags=flags,
        settings=settings,
        code_version=code_version(),
        machine=dict(host=platform.node(), platform=platform.platform(), devices=[str(d) for d in jax.devices()]),
        started=time.strftime('%Y-%m-%d %H:%M:%S'),
    )
    with open(os.path.join(run_dir, 'flags.json'), 'w') as f:
        json.dump(record, f, indent=2, sort_keys=True, default=str)


def read_marker(run_dir, name):
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_marker(run_dir, name, content):
    tmp = os.path.join(run_dir, f'.{name}.tmp')
    with open(tmp, 'w') as f:
        json.dump(content, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, os.path.join(run_dir, name))


class StopSignals:
    """SIGTERM, SIGINT and SIGUSR1 become a request to checkpoint and stop at the end of the current step.

    Slurm sends SIGTERM when it preempts, requeues or times out a job and kills it KillWait seconds later (sbatch
    `--signal=USR1@<seconds>` warns earlier), and the sweep launchers pass Ctrl-C on as SIGTERM: without this a
    run would lose everything since its last periodic checkpoint. A second signal of the same kind takes its
    default action at once, so a run can still be killed immediately.

        stop_signals = StopSignals().install()
        ...  # at each step boundary: if stop_signals.received: checkpoint, then stop_signals.exit()
        stop_signals.restore()
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

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
