"""The QAM paper's main comparison (PROTOCOL §1): 16 methods x 10 domains x 5 tasks x 12 seeds, offline then online.

One run covers both regimes: 1M offline steps, then 500K online steps (main.py's defaults). 9,600 runs. RLPD,
online only, is its own sweep (`rlpd`).
"""

from sweeps import hyperparameters as hp
from sweeps.sweeps import Sweep

# The main study's datasets: the 1M navigate/play files (main.py switches cube-quadruple and puzzle-4x4 to the
# 100M sharded sets, as the paper does).
DATASETS = (
    'antmaze-large-navigate', 'antmaze-giant-navigate', 'humanoidmaze-medium-navigate', 'humanoidmaze-large-navigate',
    'scene-play', 'puzzle-3x3-play', 'puzzle-4x4-play', 'cube-double-play', 'cube-triple-play', 'cube-quadruple-play',
)

SWEEP = Sweep(
    name='paper',
    description=__doc__.splitlines()[0],
    methods=tuple(m for m in hp.METHODS if m != 'RLPD'),
    datasets=DATASETS,
)
