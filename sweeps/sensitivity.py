"""QAM-E sensitivity study (PROTOCOL §11): 10 one-change variants of QAM-E on one representative task per domain
(task 1 of the mazes, task 2 of the manipulation domains) x 12 seeds. 1,200 runs. The unchanged QAM-E runs are
those of the `paper` sweep.
"""

from envs import tasks as env_tasks
from sweeps import hyperparameters as hp
from sweeps.paper import DATASETS
from sweeps.sweeps import Sweep, dataset_column

SWEEP = Sweep(
    name='sensitivity',
    description=__doc__.splitlines()[0],
    methods=tuple(name for name, variant in hp.VARIANTS.items() if variant.base == 'QAM-E'),
    datasets=DATASETS,
    tasks={d: (2,) if env_tasks.DOMAINS[dataset_column(d)].manipulation else (1,) for d in DATASETS},
)
