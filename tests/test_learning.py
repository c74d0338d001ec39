"""Does it still learn? QAM against its behaviour-cloning floor on a mini-sweep task (slow: not run by CI).

    python -m pytest -m slow tests/test_learning.py

Unit tests cannot catch what breaks RL code most often (an off-by-one state in a buffer, a wrong sign, a target that
never moves): those show up only as success that does not rise. This test trains the `mini` sweep's QAM and BC
(QAM with inv_temp = 0) on scene task 2, seed 10001, through main.py exactly as `python -m sweeps.launch mini`
runs them, stopping each at the end of its offline phase, and checks issue 16's target: QAM's offline success at
50K steps is at least 60% and clearly above the floor (the paper: 80.2% on this task; with the mini sweep's 4x256
networks QAM reached 70% there, and 75% with seed 20002; see the README, "Does it reproduce?"). Task 2 because it
is where the sweep's settings were checked on two seeds: with 2x256 networks QAM reached only 5-15% on it, so this
test would have caught that choice. On 2 CPU cores it takes 80 to 140 minutes (40 to 70 per run, by machine),
plus about 15 minutes the first time to generate the 1000-episode scene dataset into the cache.
"""

import os
import subprocess
import sys

import pytest

from sweeps import report_runs, sweeps

TASK = 2
QAM_MIN_SUCCESS = 60.0  # % after the offline phase (issue 16's target)
MIN_MARGIN = 20.0  # percentage points of QAM over BC


@pytest.mark.slow
def test_qam_learns_scene_and_beats_behaviour_cloning(tmp_path):
    runs = sweeps.expand(sweeps.load('mini'), methods=['QAM', 'BC'], domains=['scene-play'], tasks=[TASK],
                         seeds=[10001])
    env = {**os.environ, 'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu')}
    for run in runs:
        stop_offline = f'--stop_at_step={run.flag_dict["offline_steps"]}'  # the online phase is not checked here
        result = subprocess.run(run.argv(str(tmp_path), python=sys.executable) + ['--progress=false', stop_offline],
                                env=env, capture_output=True, text=True)
        assert result.returncode == 0, f'{run.method} failed:\n{result.stderr[-3000:]}'
    success = {}
    for run in report_runs.find_runs(str(tmp_path)):
        success[run.method] = run.end_value('offline')
    print(f'offline success on scene task {TASK}: {success}')
    assert success['QAM'] >= QAM_MIN_SUCCESS, success
    assert success['QAM'] >= success['BC'] + MIN_MARGIN, success
