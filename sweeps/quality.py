"""Data-quality study (PROTOCOL §11): 7 methods on 6 lower-quality datasets (stitch, noisy) x 5 tasks x 12 seeds,
with the per-domain hyperparameters of the corresponding main-study domain. 2,520 runs.
"""

from sweeps.sweeps import Sweep

SWEEP = Sweep(
    name='quality',
    description=__doc__.splitlines()[0],
    methods=('ReBRAC', 'BAM', 'FQL', 'QSM', 'DSRL', 'FEdit', 'QAM-E'),
    datasets=('antmaze-large-stitch', 'humanoidmaze-medium-stitch', 'scene-noisy', 'puzzle-3x3-noisy',
              'cube-double-noisy', 'cube-triple-noisy'),
)
