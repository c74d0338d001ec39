"""utils/host_memory.py: with the setting, a large block freed and allocated again is served without page faults
(its pages stay mapped); with glibc's defaults it is a new mmap that faults in again. Each case runs in a fresh
process, since the setting is process-wide."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
import numpy as np
from utils import host_memory
applied = host_memory.keep_freed_memory() if sys.argv[1] == 'keep' else False
np.ones(64 * 2**20 // 8)  # allocated, touched and freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(64 * 2**20 // 8)  # the same size again
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def second_allocation_faults(mode):
    env = dict(os.environ, NUMPY_MADVISE_HUGEPAGE='0')  # 4 KiB pages, so that faults count pages
    out = subprocess.run([sys.executable, '-c', PROGRAM, mode], capture_output=True, text=True, check=True,
                         env=env).stdout
    applied, faults = out.split()
    return applied == 'True', int(faults)


def test_freed_memory_stays_mapped():
    applied, kept_faults = second_allocation_faults('keep')
    if not applied:
        pytest.skip('needs glibc (mallopt)')
    _, default_faults = second_allocation_faults('default')
    pages = 64 * 2**20 // 4096
    assert default_faults > pages // 2  # glibc's default: a fresh mmap, every page faults again
    assert kept_faults < pages // 20
