"""What one Slurm array task executes: a group of processes (each one run, or several seeds packed by
`--seeds_per_process`), concurrently, sharing the task's GPUs.

submitit pickles a `RunGroup` and calls it inside the job. It is Checkpointable: on a time limit or preemption
submitit asks it for a checkpoint and requeues the job, which then calls it again; so does a job requeued by Slurm
itself (`scontrol requeue`, sbatch --requeue). Calling it again is always right: every run resumes from its own
last checkpoint (main.py) and finished runs are skipped.

Before a time limit Slurm sends submitit's signal (SIGUSR2, `--signal_delay_s` ahead) to every process of the job,
the runs' main.py included, which then save a checkpoint at the end of their current step. submitit requeues the
job as soon as its `checkpoint` returns and exits, and Slurm then kills what is left KillWait seconds later; so
`checkpoint` first waits (up to `stop_wait_s`) for the runs to finish their step and exit.
"""

import math
import os
import threading
import time

import submitit

from sweeps import runs as run_state


class RunGroup(submitit.helpers.Checkpointable):
    def __init__(self, packs, root, python=None, stop_wait_s=0):
        self.packs = [list(pack) for pack in packs]  # processes: lists of sweeps.Run (runs.pack_runs)
        self.root = root
        self.python = python
        self.stop_wait_s = stop_wait_s
        self._threads = []

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on its signal, before it requeues the job and exits: waits up to `stop_wait_s` for
        the runs, which got the signal too, to checkpoint and exit (their output goes to their logs meanwhile, and
        each launch record says 'interrupted'). The requeued job calls a new group of the same runs."""
        deadline = time.time() + self.stop_wait_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.time()))
        return submitit.helpers.DelayedSubmission(RunGroup(self.packs, self.root, self.python, self.stop_wait_s))

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != '_threads'}  # threads are not pickled

    def __setstate__(self, state):
        self.__dict__.update(state, _threads=[])

    def __call__(self):
        devices = [d for d in os.environ.get('CUDA_VISIBLE_DEVICES', '').split(',') if d.strip()]
        per_device = math.ceil(len(self.packs) / len(devices)) if devices else 1
        results = {}

        def work(index, pack):
            try:
                results.update(run_state.execute(
                    pack, self.root, self.python, env=run_state.device_env(index, devices, per_device)))
            except Exception as e:  # noqa: BLE001 - one broken process must not stop the others of the group
                results.update({run.key: f'error: {type(e).__name__}: {e}' for run in pack})

        self._threads = [threading.Thread(target=work, args=(i, pack), daemon=True)
                         for i, pack in enumerate(self.packs)]
        for thread in self._threads:
            thread.start()
        for thread in self._threads:
            thread.join()
        for key, result in results.items():
            print(f'{result:>12}  {key}', flush=True)
        # An interrupted run is being killed with its job (requeue, preemption, time limit): no error for that.
        failed = sorted(k for k, r in results.items() if r not in ('done', 'skipped', 'interrupted'))
        if failed:
            raise RuntimeError(f'{len(failed)} of {len(results)} runs did not finish: {", ".join(failed)}; '
                               'see their logs (python -m sweeps.launch status ...).')
        return results
