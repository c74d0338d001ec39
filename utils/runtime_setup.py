"""The process settings of a training run, made by importing this module: main.py imports it before anything else,
since most of them only act if they come before JAX is imported or starts its threads.

- MuJoCo renders headless (EGL).
- Compiled programs are cached across runs (a grid of runs compiles each shape once); JAX reads these variables
  when it is imported.
- XLA:CPU's per-call temporaries stay mapped (see utils/host_memory.py); before JAX starts its threads.
- jax.random's hash is lowered unrolled on the CPU: the same random bits, fewer XLA:CPU kernels per draw (see
  utils/cpu_random.py); it applies to the programs compiled after it.

Variables already set in the environment are kept.
"""

import os

from utils import cpu_random, host_memory

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/qam_suite/jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '1')
host_memory.keep_freed_memory()
cpu_random.unroll_threefry_on_cpu()
