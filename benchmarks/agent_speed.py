"""Training and acting speed of every agent, at the quick-start and at the paper's network size.

    python -m benchmarks.agent_speed --agents=qam,fql --sizes=quickstart,paper --out=/tmp/speed.json

The figures measured on the CPU machines of this project are in benchmarks/results/ and the README.

For each agent and size it prints, and saves as JSON:
  compile_s                 compiling main.py's fused loop (utils/training.py: a scan of `--scan_length` updates,
                            batches sampled on the device, vmapped over one member)
  fused_updates_per_s       updates per second of that fused loop
  per_call_updates_per_s    one update per Python call with batches sampled on the host by NumPy and
                            copied over, as the reference code trains (asynchronous dispatch: the host samples
                            the next batch while the last update runs; blocked on once per `--scan_length` calls)
  fused_speedup             fused / per-call, measured in the same run
  update_ms, per_call_overhead_ms   one update in the fused loop, and what one update per call adds to it
                            (fused_speedup = 1 + overhead / update: fusing pays most where updates are cheap)
  act_ms_1, act_ms_50       sample_actions latency for 1 and 50 observations
  eval_env_steps_per_s      lockstep evaluation (cube-double, `--eval_envs` episodes) environment steps per second
  memory_mb                 argument + output + temporary bytes of the compiled fused loop (XLA memory analysis);
                            on a GPU also the device's peak bytes in use
  seeds_<N>_updates_per_s   total updates per second with N seeds vmapped in that loop (N = 1, 2, 4, 8), as
                            `main.py --num_seeds=N` trains them
  seeds_<N>_scaling         that total divided by N times the one-seed figure (1.0 = perfect scaling)
  gflops_per_s, peak_fraction   on a GPU: achieved FLOP/s from XLA's cost analysis, and its fraction of `--peak_tflops`

Data are random arrays shaped like cube-triple (O = 45, A = 5, H = 5, 1000-step episodes): speed does not
depend on their values.
"""

import json
import os
import platform
import re
import resource
import time

os.environ.setdefault('MUJOCO_GL', 'egl')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import agents  # noqa: E402
from utils import cpu_random, datasets, evaluation, experiment, host_memory, training  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list('agents', None, 'Agents to measure (default: all).')
flags.DEFINE_list('sizes', ['quickstart', 'paper'], 'Network sizes: quickstart (2x64, batch 64), paper (4x512, batch '
                  '256), or <depth>x<width>[:q<critics>][:b<batch>], e.g. 2x256:q2:b256 (the mini sweep).')
flags.DEFINE_list('seed_counts', ['1', '2', '4', '8'], 'Numbers of vmapped seeds.')
flags.DEFINE_integer('scan_length', 50, 'Updates per call of the fused loop.')
flags.DEFINE_float('min_seconds', 3.0, 'Measure each figure for at least this long.')
flags.DEFINE_integer('eval_envs', 4, 'Episodes of the evaluation measurement (0 skips it).')
flags.DEFINE_float('peak_tflops', None, 'Device peak in TFLOP/s for the peak fraction (GPU only).')
flags.DEFINE_bool('keep_freed_memory', False, 'Use main.py\'s host allocator setting (utils/host_memory.py); off: '
                  'glibc\'s defaults, as the reference code runs. It changes the per-call figures, not the fused ones.')
flags.DEFINE_bool('unrolled_threefry', True, 'Lower jax.random\'s hash unrolled on the CPU, as main.py does '
                  '(utils/cpu_random.py); off: JAX\'s default rolled loop.')
flags.DEFINE_bool('compare_threefry', False, 'Measure only the fused loop, with JAX\'s rolled and with the unrolled '
                  'threefry lowering, compiled in this process and timed in alternation (figures: rolled_updates_per_s, '
                  'unrolled_updates_per_s, unrolled_speedup).')
flags.DEFINE_string('out', None, 'Write the figures to this JSON file.')

SIZES = {
    'quickstart': dict(actor_hidden_dims=(64, 64), value_hidden_dims=(64, 64), batch_size=64),
    'paper': dict(actor_hidden_dims=(512,) * 4, value_hidden_dims=(512,) * 4, batch_size=256),
}
OBS_DIM, ACTION_DIM, HORIZON, ROWS = 45, 5, 5, 20_000


def random_dataset(rng):
    terminals = np.zeros(ROWS, np.float32)
    terminals[999::1000] = 1
    return dict(
        observations=rng.normal(size=(ROWS, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(ROWS, ACTION_DIM)).astype(np.float32),
        rewards=-rng.integers(0, 3, size=ROWS).astype(np.float32),
        masks=np.ones(ROWS, np.float32),
        terminals=terminals,
        next_observations=rng.normal(size=(ROWS, OBS_DIM)).astype(np.float32),
    )


def timed(fn, min_seconds):
    """Calls per second of fn (which blocks on its result), after one warm-up call."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or calls < 2:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def size_settings(size):
    """Agent settings of a --sizes entry: a name in SIZES or '<depth>x<width>[:q<critics>][:b<batch>]'."""
    if size in SIZES:
        return SIZES[size]
    match = re.fullmatch(r'(\d+)x(\d+)((?::[qb]\d+)*)', size)
    if not match:
        raise app.UsageError(f'--sizes: {size!r} is not quickstart, paper or <depth>x<width>[:q<critics>][:b<batch>].')
    dims = (int(match[2]),) * int(match[1])
    settings = dict(actor_hidden_dims=dims, value_hidden_dims=dims, batch_size=256)
    for part in filter(None, match[3].split(':')):
        settings['num_qs' if part[0] == 'q' else 'batch_size'] = int(part[1:])
    return settings


def sized_config(module, size):
    config = module.get_config()
    for key, value in size_settings(size).items():
        config[key] = value
    config.horizon_length = HORIZON
    return config


def compare_threefry(module, size, host_data, device_data, rounds=5):
    """Fused updates per second with JAX's rolled CPU lowering of the threefry hash and with the unrolled one
    (utils/cpu_random.py): both loops compiled in this process and timed in alternation, best of `rounds`."""
    config = sized_config(module, size)
    agent = module.Agent.create(0, host_data['observations'][0], host_data['actions'][0], config)
    key, programs = jax.random.PRNGKey(1)[None], {}
    for lowering in ('rolled', 'unrolled'):
        cpu_random.set_threefry_lowering_on_cpu(unrolled=lowering == 'unrolled')
        offline_updates = training.make_train_functions(config, balanced=False, utd_ratio=1)[0]  # a new jit
        programs[lowering] = offline_updates.lower(training.stack([agent]), device_data, key, FLAGS.scan_length,
                                                   num_updates=FLAGS.scan_length).compile()
    cpu_random.set_threefry_lowering_on_cpu(unrolled=FLAGS.unrolled_threefry)
    rates = {lowering: 0.0 for lowering in programs}
    for _ in range(rounds):
        for lowering, program in programs.items():
            state = [training.stack([agent])]

            def run():
                state[0], infos = program(state[0], device_data, key, FLAGS.scan_length)
                jax.block_until_ready(infos)

            rates[lowering] = max(rates[lowering], FLAGS.scan_length * timed(run, FLAGS.min_seconds / rounds))
    return {'rolled_updates_per_s': rates['rolled'], 'unrolled_updates_per_s': rates['unrolled'],
            'unrolled_speedup': rates['unrolled'] / rates['rolled']}


def measure(module, size, host_data, device_data):
    config = sized_config(module, size)
    batch_size, discount, scan_length = config.batch_size, config.discount, FLAGS.scan_length
    agent = module.Agent.create(0, host_data['observations'][0], host_data['actions'][0], config)
    figures = {}

    # main.py's own compiled loop (utils/training.py), here with one member.
    offline_updates = training.make_train_functions(config, balanced=False, utd_ratio=1)[0]
    key = jax.random.PRNGKey(1)

    def compile_fused(agents, keys):
        """The compiled loop for these stacked agents, and a function running one call of it."""
        compiled = offline_updates.lower(agents, device_data, keys, scan_length, num_updates=scan_length).compile()
        return compiled, lambda agents: compiled(agents, device_data, keys, scan_length)  # updates 1 ... scan_length

    start = time.perf_counter()
    compiled, run_compiled = compile_fused(training.stack([agent]), key[None])
    figures['compile_s'] = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    if analysis is not None:
        figures['memory_mb'] = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                + analysis.temp_size_in_bytes) / 2**20
    state = [training.stack([agent])]

    def run_fused():
        state[0], infos = run_compiled(state[0])
        jax.block_until_ready(infos)

    figures['fused_updates_per_s'] = scan_length * timed(run_fused, FLAGS.min_seconds)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if jax.default_backend() == 'gpu' and cost and cost.get('flops'):
        figures['gflops_per_s'] = cost['flops'] * figures['fused_updates_per_s'] / scan_length / 1e9
        if FLAGS.peak_tflops:
            figures['peak_fraction'] = figures['gflops_per_s'] / (FLAGS.peak_tflops * 1e3)

    update_jit = jax.jit(lambda agent, batch: agent.update(batch))
    rng = np.random.default_rng(0)
    state[0] = agent

    def run_per_call():  # the reference's loop: dispatch is asynchronous, so sampling overlaps the last update
        for _ in range(scan_length):
            batch = datasets.sample_chunks_np(host_data, rng, batch_size, HORIZON, discount)
            state[0], info = update_jit(state[0], jax.tree.map(jnp.asarray, batch))
        jax.block_until_ready(info)

    figures['per_call_updates_per_s'] = scan_length * timed(run_per_call, FLAGS.min_seconds)
    figures['fused_speedup'] = figures['fused_updates_per_s'] / figures['per_call_updates_per_s']
    # What one update per call adds to an update (host sampling, transfer, dispatch): the most fusing can save.
    figures['update_ms'] = 1e3 / figures['fused_updates_per_s']
    figures['per_call_overhead_ms'] = 1e3 / figures['per_call_updates_per_s'] - figures['update_ms']

    act = jax.jit(lambda agent, observations, key: agent.sample_actions(observations, key))
    for n in (1, 50):
        observations = jnp.asarray(host_data['observations'][:n])
        figures[f'act_ms_{n}'] = 1e3 / timed(lambda: act(state[0], observations, key).block_until_ready(), 1.0)

    if FLAGS.eval_envs:
        from envs import env_utils, tasks

        task = tasks.parse_env_name('cube-double-play-singletask-task2-v0')
        envs = [env_utils.make_env(task) for _ in range(FLAGS.eval_envs)]
        dims = envs[0].observation_space.shape[-1]
        eval_agent = module.Agent.create(0, np.zeros(dims, np.float32), np.zeros(ACTION_DIM, np.float32), config)
        policy = lambda observations, key: act(eval_agent, jnp.asarray(observations), key)  # noqa: E731
        evaluation.evaluate(policy, envs[:1], 0, 0, ACTION_DIM)  # compile the policy
        metrics, _ = evaluation.evaluate(policy, envs, 0, 1, ACTION_DIM)
        figures['eval_env_steps_per_s'] = metrics['episode_length'] * len(envs) / metrics['wall_time']

    seed_figures = {}
    for count in map(int, FLAGS.seed_counts):
        seeds = training.stack([module.Agent.create(s, host_data['observations'][0], host_data['actions'][0], config)
                                for s in range(count)])
        _, run_vmapped = compile_fused(seeds, jax.random.split(key, count))
        seeds_state = [seeds]

        def run_seeds():
            seeds_state[0], infos = run_vmapped(seeds_state[0])
            jax.block_until_ready(infos)

        seed_figures[count] = count * scan_length * timed(run_seeds, FLAGS.min_seconds)
        figures[f'seeds_{count}_updates_per_s'] = seed_figures[count]
        figures[f'seeds_{count}_scaling'] = seed_figures[count] / (count * seed_figures[min(seed_figures)])
    if jax.default_backend() == 'gpu':
        stats = jax.devices()[0].memory_stats() or {}
        figures['device_peak_mb'] = stats.get('peak_bytes_in_use', 0) / 2**20
    return figures


def main(_):
    if FLAGS.keep_freed_memory and not host_memory.keep_freed_memory():  # before JAX starts its threads
        raise app.UsageError('--keep_freed_memory needs glibc (mallopt).')
    if FLAGS.unrolled_threefry:
        cpu_random.unroll_threefry_on_cpu()
    names = FLAGS.agents or agents.available_agents()
    host_data = random_dataset(np.random.default_rng(0))
    device_data = datasets.to_device(host_data)
    results = dict(
        machine=dict(platform=platform.platform(), processor=experiment.cpu_model(), cpus=os.cpu_count(),
                     devices=[str(d) for d in jax.devices()], backend=jax.default_backend()),
        settings=dict(scan_length=FLAGS.scan_length, keep_freed_memory=FLAGS.keep_freed_memory,
                      unrolled_threefry=FLAGS.unrolled_threefry, obs_dim=OBS_DIM,
                      action_dim=ACTION_DIM, horizon=HORIZON),
        figures={},
    )
    for name in names:
        module = agents.load_agent(name)
        for size in FLAGS.sizes:
            figures = (compare_threefry if FLAGS.compare_threefry else measure)(module, size, host_data, device_data)
            results['figures'][f'{name}/{size}'] = figures
            print(f'{name:8s} {size:10s} ' + '  '.join(f'{k}={v:.4g}' for k, v in figures.items()), flush=True)
    results['host_peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if FLAGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        with open(FLAGS.out, 'w') as f:
            json.dump(results, f, indent=2)
        print(f'Wrote {FLAGS.out}')


if __name__ == '__main__':
    app.run(main)
