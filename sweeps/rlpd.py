"""RLPD, online only (PROTOCOL §4.3): 500K environment steps from scratch with half-offline batches, on the main
study's 50 tasks x 12 seeds. 600 runs.
"""

from sweeps.paper import DATASETS
from sweeps.sweeps import Sweep

SWEEP = Sweep(name='rlpd', description=__doc__.splitlines()[0], methods=('RLPD',), datasets=DATASETS)
