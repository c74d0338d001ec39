"""What one Slurm array task executes: a group of processes (each one run, or several seeds packed by
`--seeds_per_process`), concurrently, sharing the task's GPUs.

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
    def __init__(self, packs, root, python=None):
        self.packs = [list(pack) for pack in packs]  # processes: lists of sweeps.Run (runs.pack_runs)
        self.root = root
        self.python = python

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

        threads = [threading.Thread(target=work, args=(i, pack), daemon=True) for i, pack in enumerate(self.packs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for key, result in results.items():
            print(f'{result:>12}  {key}', flush=True)
        # An interrupted run is being killed with its job (requeue, preemption, time limit): no error for that.
        failed = sorted(k for k, r in results.items() if r not in ('done', 'skipped', 'interrupted'))
        if failed:
            raise RuntimeError(f'{len(failed)} of {len(results)} runs did not finish: {", ".join(failed)}; '
                               'see their logs (python -m sweeps.launch status ...).')
        return results
