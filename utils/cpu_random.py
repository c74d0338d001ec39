"""Random numbers on XLA:CPU: lower the threefry hash unrolled, as JAX does on GPUs and TPUs.

Every `jax.random` draw hashes its counters with threefry2x32 (20 rounds). On the CPU, and only there, JAX lowers
the hash as a rolled 5-step while loop, to compile faster. XLA:CPU runs each step of that loop as its own small
kernels, so every draw costs a fixed number of kernel launches, and an update draws a dozen times (batch indices,
flow noises and times, SDE noises, ...). JAX's unrolled lowering, the one it uses on the other platforms, computes
the same bits (the same hash of the same keys, so runs and their checkpoints are unaffected) in a few fused
kernels. Updates per second of main.py's fused loop at the quick-start size (2x64, batch 64) on a 2-core Intel
Xeon, both lowerings compiled in one process and timed in alternation (`python -m benchmarks.agent_speed
--compare_threefry`): see the README's Speed section. The smoke tests compile in about the same time either way.

This registers a lowering rule of JAX's (`jax._src`, pinned in requirements.txt); a JAX without it keeps its own.
"""


def unroll_threefry_on_cpu():
    """Lower threefry2x32 on the CPU with JAX's unrolled rule; True if applied. Affects programs compiled after it."""
    return set_threefry_lowering_on_cpu(unrolled=True)


def set_threefry_lowering_on_cpu(unrolled):
    """Lower threefry2x32 on the CPU unrolled (JAX's rule for GPUs and TPUs) or rolled (JAX's CPU default, e.g. to
    compare the two: `benchmarks/agent_speed.py --compare_threefry`); True if applied."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
        rule = threefry2x32._threefry2x32_lowering_rule if unrolled else threefry2x32._threefry2x32_cpu_lowering_rule
        primitive = threefry2x32.threefry2x32_p
    except (ImportError, AttributeError):  # another JAX: keep its lowering (slower on the CPU, same numbers)
        return False
    mlir.register_lowering(primitive, rule, platform='cpu')
    return True
