"""What one Slurm array task executes: a group of runs, concurrently, sharing the task's GPUs.

submitit pickles a `RunGroup` and calls it inside the job. It is Checkpointable: on a time limit or preemption
submitit asks it for a checkpoint and requeues the job, which then calls it again; so does a job requeued by Slurm
itself (`scontrol requeue`, sbatch --requeue). Calling it again is always right: every run resumes from its own
last checkpoint (main.py) and finished runs are skipped.
"""

import math
import os
import threading

import submitit

from sweeps import runs as run_state


class RunGroup(submitit.helpers.Checkpointable):
    def __init__(self, runs, root, python=None):
        self.runs = list(runs)  # sweeps.Run
        self.root = root
        self.python = python

    def __call__(self):
        devices = [d for d in os.environ.get('CUDA_VISIBLE_DEVICES', '').split(',') if d.strip()]
        per_device = math.ceil(len(self.runs) / len(devices)) if devices else 1
        results = {}

        def work(index, run):
            try:
                results[run.key] = run_state.execute(
                    run, self.root, self.python, env=run_state.device_env(index, devices, per_device))
            except Exception as e:  # noqa: BLE001 - one broken run must not stop the others of the group
                results[run.key] = f'error: {type(e).__name__}: {e}'

        threads = [threading.Thread(target=work, args=(i, run), daemon=True) for i, run in enumerate(self.runs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for key, result in results.items():
            print(f'{result:>12}  {key}', flush=True)
        # An interrupted run is being killed with its job (requeue, preemption, time limit): no error for that.
        failed = sorted(k for k, r in results.items() if r not in ('done', 'skipped', 'interrupted'))
        if failed:
            raise RuntimeError(f'{len(failed)} of {len(self.runs)} runs did not finish: {", ".join(failed)}; '
                               'see their logs (python -m sweeps.launch status ...).')
        return results
