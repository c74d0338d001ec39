"""D4RL: FQL with its published per-task settings and QAM (untuned) on the 18 D4RL datasets of Minari, offline as in
FQL's D4RL table, 8 seeds. 288 runs.

The datasets must be in Minari's folder (or `--extra_args=--dataset_dir=...`); see the README's "D4RL tasks". The
per-task values and their source are in sweeps/hyperparameters.py (D4RL_METHODS). The report shows D4RL's normalised
score with `python -m sweeps.report d4rl --metric=normalized_score`; the QAM paper has no D4RL numbers to set beside.
"""

from sweeps import hyperparameters as hp
from sweeps.sweeps import Sweep

SWEEP = Sweep(
    name='d4rl',
    description=__doc__.splitlines()[0],
    methods=tuple(hp.D4RL_METHODS),
    datasets=hp.D4RL_COLUMNS,
    seeds=hp.SEEDS[:8],  # FQL's D4RL results average 8 seeds
    flags=(('offline_steps', 500_000), ('online_steps', 0)),  # FQL's offline D4RL runs
)
