"""Random numbers on XLA:CPU: lower the threefry hash unrolled, as JAX does on GPUs and TPUs.

Every `jax.random` draw hashes its counters with threefry2x32 (20 rounds). On the CPU, and only there, JAX lowers
the hash as a rolled 5-step while loop, to compile faster. XLA:CPU runs each step of that loop as its own small
kernels, so every draw costs a fixed number of kernel launches, and an update draws a dozen times (batch indices,
flow noises and times, SDE noises, ...). JAX's unrolled lowering, the one it uses on the other platforms, computes
the same bits (the same hash of the same keys, so runs and their checkpoints are unaffected) in a few fused
kernels. Updates per second of main.py's fused loop at the quick-start size (2x64, batch 64) on a 2-core Intel
Xeon, both lowerings timed interleaved in one process: QAM 1.23x, ReBRAC 1.14x, FQL 1.11x, BAM 1.08x. The smoke
tests compile in about the same time either way (`benchmarks/agent_speed.py --nounrolled_threefry` runs without).

This registers a lowering rule of JAX's (`jax._src`, pinned in requirements.txt); a JAX without it keeps its own.
"""


def unroll_threefry_on_cpu():
    """Lower threefry2x32 on the CPU with JAX's unrolled rule; True if applied. Affects programs compiled after it."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
        primitive, rule = threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule
    except (ImportError, AttributeError):  # another JAX: keep its lowering (slower on the CPU, same numbers)
        return False
    mlir.register_lowering(primitive, rule, platform='cpu')
    return True
