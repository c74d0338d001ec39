"""utils/cpu_random.py: with the unrolled lowering (applied by conftest, as by main.py) the threefry hash gives the
Random123 known answers and the bits of JAX's rolled CPU loop, and compiled draws contain no loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.random import threefry2x32

from utils import cpu_random


def test_the_unrolled_lowering_is_applied_here():
    assert cpu_random.unroll_threefry_on_cpu()  # the pinned JAX has the rule; conftest applied it already
    hlo = jax.jit(lambda key: jax.random.normal(key, (64, 25))).lower(jax.random.PRNGKey(0)).compile().as_text()
    assert 'while' not in hlo  # JAX's CPU default is a while loop of 5 steps per hash


def test_threefry_known_answers():
    # Random123's known-answer vectors for Threefry-2x32 with 20 rounds: (key, counter) -> output.
    vectors = [((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
               ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
               ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]
    for key, counter, expected in vectors:
        out = jax.jit(threefry2x32.threefry_2x32)(np.uint32(key), np.uint32(counter))
        np.testing.assert_array_equal(np.asarray(out), np.uint32(expected))


def test_same_bits_as_the_rolled_loop():
    """The hash as JAX's CPU default computes it (its rolled-loop formula, traced as ordinary operations) against
    the primitive as now lowered, on many keys and counters; then draws of each kind the agents make, compiled with
    either lowering."""
    rng = np.random.default_rng(0)
    k1, k2, x1, x2 = (jnp.asarray(rng.integers(0, 2**32, size=4096, dtype=np.uint32)) for _ in range(4))
    rolled = jax.jit(functools.partial(threefry2x32._threefry2x32_lowering, use_rolled_loops=True))(k1, k2, x1, x2)
    lowered = jax.jit(lambda *args: threefry2x32.threefry2x32_p.bind(*args))(k1, k2, x1, x2)
    hlo = jax.jit(lambda *args: threefry2x32.threefry2x32_p.bind(*args)).lower(k1, k2, x1, x2).compile().as_text()
    assert 'while' not in hlo
    for a, b in zip(rolled, lowered):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def draws(key):
        keys = jax.random.split(key, 4)
        return (jax.random.normal(keys[0], (256, 25)), jax.random.uniform(keys[1], (256, 1)),
                jax.random.randint(keys[2], (256,), 0, 1_000_000), jax.random.fold_in(keys[3], 7))

    key = jax.random.PRNGKey(10001)
    unrolled = compiled_with(True, draws, key)
    rolled = compiled_with(False, draws, key)
    assert 'while' not in unrolled.as_text() and 'while' in rolled.as_text()
    for a, b in zip(unrolled(key), rolled(key)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def compiled_with(unrolled, fn, *args):
    """fn compiled for args with threefry2x32 lowered unrolled or rolled on the CPU; the unrolled rule is restored."""
    assert cpu_random.set_threefry_lowering_on_cpu(unrolled)
    try:
        return jax.jit(lambda *a: fn(*a)).lower(*args).compile()  # a new function: nothing cached from before
    finally:
        cpu_random.unroll_threefry_on_cpu()
