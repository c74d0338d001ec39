"""Train one agent on one OGBench single-task environment: offline, then online (PROTOCOL §4).

    python main.py --agent=qam --env_name=cube-triple-play-singletask-task2-v0 --agent.inv_temp=3

Results go to <save_dir>/<agent>/<env_name>/seed<seed>-<hash of the settings>/: flags.json, train.csv,
eval.csv, checkpoints/, and DONE (the final summary) once the run has finished. Running the same command
again resumes from the last checkpoint, or skips the run if it is DONE.
"""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')
# Compiled programs are cached across runs (a grid of runs compiles each shape once).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/qam_suite/jax'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '1')

import functools  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import flax.serialization  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import agents  # noqa: E402
from envs import data_sources, env_utils, tasks  # noqa: E402
from utils import datasets, evaluation, experiment  # noqa: E402
from utils.checkpoints import Checkpointer  # noqa: E402
from utils.logger import CsvLogger  # noqa: E402

FLAGS = flags.FLAGS

# ---------------------------------------------------------------------------------------------- flags
# Run identity.
flags.DEFINE_string('env_name', 'cube-double-play-singletask-task2-v0', 'OGBench single-task environment name.')
flags.DEFINE_integer('seed', 10001, 'Seed of the agent, batch sampling and evaluation (paper: 10001*k, k=1..12).')
flags.DEFINE_string('save_dir', 'runs', 'Root folder of run directories.')
flags.DEFINE_string('method', '', 'Method label recorded in flags.json for reports (e.g. QAM-E); default: the agent name.')
# Budget and loop (PROTOCOL §4).
flags.DEFINE_integer('offline_steps', 1_000_000, 'Offline gradient steps (0: online only, as RLPD).')
flags.DEFINE_integer('online_steps', 500_000, 'Online environment steps.')
flags.DEFINE_integer('eval_interval', 50_000, 'Evaluate every this many steps of the current phase.')
flags.DEFINE_integer('eval_episodes', 50, 'Evaluation episodes, run in lockstep.')
flags.DEFINE_integer('log_interval', 5_000, 'Log training metrics every this many steps.')
flags.DEFINE_integer('save_interval', 100_000, 'Checkpoint every this many steps of the current phase.')
flags.DEFINE_integer('utd_ratio', 1, 'Online updates per environment step.')
flags.DEFINE_integer('start_training', 5_000, 'Online step from which updates start.')
flags.DEFINE_bool('balanced_sampling', False, 'Online batches: half offline data, half online buffer (RLPD).')
# Domain settings (PROTOCOL §3); unset means the domain's value.
flags.DEFINE_integer('horizon_length', None, 'Action chunk length H (default: 5 manipulation, 1 mazes).')
flags.DEFINE_enum('sparse', 'auto', ['auto', 'true', 'false', 'True', 'False'], 'Sparse reward conversion (auto: scene, puzzle).')
# Data (see envs/data_sources.py).
flags.DEFINE_enum('dataset_source', 'auto', list(data_sources.SOURCES), 'Where the dataset comes from.')
flags.DEFINE_string('dataset_dir', data_sources.DEFAULT_DATASET_DIR, 'Folder of the official OGBench files.')
flags.DEFINE_string('dataset_cache_dir', data_sources.DEFAULT_CACHE_DIR, 'Folder of locally generated datasets.')
flags.DEFINE_integer('dataset_episodes', None, 'Episodes to generate (default: the standard size).')
flags.DEFINE_integer('dataset_seed', 0, 'Seed of local dataset generation.')
flags.DEFINE_integer('num_workers', 1, 'Processes for dataset generation.')
flags.DEFINE_bool('sharded_dataset', True, 'Use the 100M sharded set where the paper does (cube-quadruple, puzzle-4x4).')
flags.DEFINE_integer('dataset_shards', 100, 'Shards to generate or use for a sharded set (fewer is a deviation).')
flags.DEFINE_integer('shard_interval', 1_000, 'Swap to the next shard every this many steps.')
# Output.
flags.DEFINE_bool('wandb', False, 'Also log to Weights & Biases.')
flags.DEFINE_string('wandb_project', 'qam-suite', 'Weights & Biases project.')
flags.DEFINE_integer('video_episodes', 0, 'Save this many evaluation episodes per evaluation as GIFs.')
flags.DEFINE_bool('progress', True, 'Show a progress bar.')
flags.DEFINE_bool('keep_checkpoints', False, 'Keep the checkpoints of a finished run (they hold the replay buffer).')
flags.DEFINE_integer('stop_at_step', None, 'Checkpoint and stop (resumable) at this total step, e.g. before a job time limit.')
config_flags.DEFINE_config_file(
    'agent', os.path.join(agents.AGENTS_DIR, 'qam.py'), 'Agent: a bare name (qam) or a path to an agent file; '
    'override its config with --agent.<key>=<value>.', lock_config=True,
)

# Flags that do not change results stay out of the run directory's hash.
NON_RESULT_FLAGS = (
    'seed', 'save_dir', 'method', 'log_interval', 'save_interval', 'dataset_source', 'dataset_dir', 'dataset_cache_dir',
    'num_workers', 'wandb', 'wandb_project', 'video_episodes', 'progress', 'keep_checkpoints', 'stop_at_step',
)
RUN_FLAGS = (
    'env_name', 'offline_steps', 'online_steps', 'eval_interval', 'eval_episodes', 'utd_ratio', 'start_training',
    'balanced_sampling', 'dataset_episodes', 'dataset_seed', 'sharded_dataset', 'dataset_shards', 'shard_interval',
) + NON_RESULT_FLAGS


def rewrite_agent_flag(argv):
    """Let `--agent=qam` name an agent by its bare name: config_flags needs the file's path."""
    rewritten = []
    for arg in argv:
        if arg.startswith('--agent=') and not arg.endswith('.py'):
            try:
                arg = '--agent=' + agents.agent_path(arg.split('=', 1)[1])
            except ValueError as e:
                sys.exit(f'FATAL Flags parsing error: {e}')
        rewritten.append(arg)
    return rewritten


def check_flags(config):
    positive = ('eval_interval', 'eval_episodes', 'log_interval', 'save_interval', 'utd_ratio', 'num_workers',
                'dataset_shards', 'shard_interval')
    for name in positive:
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f'--{name} must be at least 1, got {getattr(FLAGS, name)}.')
    for name in ('offline_steps', 'online_steps', 'start_training'):
        if getattr(FLAGS, name) < 0:
            raise app.UsageError(f'--{name} must be >= 0, got {getattr(FLAGS, name)}.')
    if FLAGS.offline_steps + FLAGS.online_steps == 0:
        raise app.UsageError('Nothing to do: --offline_steps and --online_steps are both 0.')
    if FLAGS.horizon_length is not None and FLAGS.horizon_length < 1:
        raise app.UsageError(f'--horizon_length must be at least 1, got {FLAGS.horizon_length}.')
    if FLAGS.dataset_episodes is not None and FLAGS.dataset_episodes < 1:
        raise app.UsageError(f'--dataset_episodes must be at least 1, got {FLAGS.dataset_episodes}.')
    if FLAGS.balanced_sampling and config.batch_size % 2:
        raise app.UsageError(f'--balanced_sampling needs an even batch size, got {config.batch_size}.')
    if FLAGS.online_steps and FLAGS.start_training < config.horizon_length:
        raise app.UsageError(f'--start_training must be at least the chunk length {config.horizon_length}.')


def resolve_settings(task):
    """The agent config with the domain's defaults (PROTOCOL §3) and everything that defines the results."""
    config = FLAGS.agent
    overridden = {arg.split('=')[0][len('--agent.'):] for arg in sys.argv if arg.startswith('--agent.')}
    config.horizon_length = FLAGS.horizon_length or task.domain.horizon_length
    for key in ('discount', 'rho'):
        if key in config and key not in overridden:
            setattr(config, key, getattr(task.domain, key))
    sparse = task.domain.sparse if FLAGS.sparse == 'auto' else FLAGS.sparse.lower() == 'true'
    settings = {name: getattr(FLAGS, name) for name in RUN_FLAGS if name not in NON_RESULT_FLAGS}
    settings.update(agent=config.to_dict(), sparse=sparse)
    return config, settings


def make_train_functions(config, balanced):
    """Jitted training steps. Batches are sampled on the device inside the compiled loop (no host trips)."""
    batch_size, horizon, discount = config.batch_size, config.horizon_length, config.discount
    donate = dict(donate_argnums=(0,))

    def sample_batch(data, size, offline_data, key):
        if not balanced:
            return datasets.sample_chunks(data, key, batch_size, horizon, discount, size=size)
        offline_key, online_key = jax.random.split(key)
        halves = (
            datasets.sample_chunks(offline_data, offline_key, batch_size // 2, horizon, discount),
            datasets.sample_chunks(data, online_key, batch_size // 2, horizon, discount, size=size),
        )
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *halves)

    @functools.partial(jax.jit, static_argnames='num_updates', **donate)
    def offline_updates(agent, data, key, num_updates):
        def body(agent, key):
            return agent.update(sample_batch(data, None, None, key))

        agent, infos = jax.lax.scan(body, agent, jax.random.split(key, num_updates))
        return agent, jax.tree.map(lambda x: x[-1], infos)  # the metrics of the last update, as logged

    @functools.partial(jax.jit, donate_argnums=(0, 1), static_argnames='update')
    def online_step(agent, buffer, offline_data, transition, key, update):
        buffer = buffer.add(transition)
        if not update:
            return agent, buffer, {}

        def body(agent, key):
            return agent.update(sample_batch(buffer.data, buffer.size, offline_data, key))

        agent, infos = jax.lax.scan(body, agent, jax.random.split(key, FLAGS.utd_ratio))
        return agent, buffer, jax.tree.map(lambda x: x.mean(0), infos)

    @jax.jit
    def act(agent, observations, key):
        return agent.sample_actions(observations, key)

    replace_prefix = jax.jit(lambda buffer, shard: buffer.replace_prefix(shard), donate_argnums=(0,))
    return offline_updates, online_step, act, replace_prefix


def host_metrics(info):
    return {k: float(v) for k, v in jax.device_get(info).items()}


def check_finite(metrics, run_dir, step):
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        experiment.write_marker(run_dir, experiment.DIVERGED, dict(step=step, keys=bad))
        raise SystemExit(f'Diverged at step {step}: non-finite {bad}. Marked {os.path.join(run_dir, experiment.DIVERGED)}.')


def main(_):
    logging.set_verbosity(logging.WARNING)  # orbax reports every checkpoint write at INFO
    # ------------------------------------------------------------------------------------- settings
    try:
        task = tasks.parse_env_name(FLAGS.env_name)
    except ValueError as e:
        raise app.UsageError(str(e))
    config, settings = resolve_settings(task)
    check_flags(config)
    run_dir = experiment.run_dir_name(FLAGS.save_dir, config.agent_name, FLAGS.env_name, FLAGS.seed, settings)
    done = experiment.read_marker(run_dir, experiment.DONE)
    if done is not None:
        print(f'Run already finished, skipping (delete {run_dir} to rerun): {done.get("summary", "")}')
        return
    os.makedirs(run_dir, exist_ok=True)
    experiment.write_flags(run_dir, {name: getattr(FLAGS, name) for name in RUN_FLAGS}, settings)
    print(f'Run directory: {run_dir}')

    # ----------------------------------------------------------------------------------------- data
    try:
        env, make_eval_env, train_data, _, data_info = env_utils.make_env_and_datasets(
            FLAGS.env_name,
            dataset_source=FLAGS.dataset_source,
            dataset_dir=FLAGS.dataset_dir,
            cache_dir=FLAGS.dataset_cache_dir,
            dataset_episodes=FLAGS.dataset_episodes,
            generation_seed=FLAGS.dataset_seed,
            num_workers=FLAGS.num_workers,
            sparse=settings['sparse'],
            use_sharded=FLAGS.sharded_dataset,
            num_shards=FLAGS.dataset_shards,
        )
    except data_sources.DatasetError as e:
        raise app.UsageError(str(e))
    sharded = isinstance(train_data, env_utils.ShardedDataset)
    dataset = train_data.current if sharded else train_data
    horizon, action_dim = config.horizon_length, dataset['actions'].shape[-1]

    # ---------------------------------------------------------------------------------------- agent
    agent = agents.load_agent(FLAGS['agent'].config_filename).Agent.create(
        FLAGS.seed, dataset['observations'][0], dataset['actions'][0], config
    )
    offline_updates, online_step, act, replace_prefix = make_train_functions(config, FLAGS.balanced_sampling)
    root_key = jax.random.PRNGKey(FLAGS.seed)
    offline_key, online_key, act_key = (jax.random.fold_in(root_key, i) for i in range(1, 4))

    # ------------------------------------------------------------------------- logging and resume
    train_log, eval_log = CsvLogger(os.path.join(run_dir, 'train.csv')), CsvLogger(os.path.join(run_dir, 'eval.csv'))
    checkpointer = Checkpointer(os.path.join(run_dir, 'checkpoints'))
    wandb_run = None
    if FLAGS.wandb:
        try:
            import wandb
        except ImportError:
            raise app.UsageError('--wandb needs the wandb package: pip install wandb.')
        wandb_run = wandb.init(project=FLAGS.wandb_project, name=os.path.basename(run_dir), config=settings,
                               dir=run_dir, id=experiment.config_hash([settings, FLAGS.seed]), resume='allow')
    start_step, meta, online_rows = 0, {}, None
    if checkpointer.latest_step() is not None:
        start_step = checkpointer.latest_step()
        meta = checkpointer.restore_meta(start_step)
        like = {'agent': flax.serialization.to_state_dict(agent)}
        if meta.get('online_rows'):
            like['online_rows'] = {k: jnp.zeros((meta['online_rows'],) + dataset[k].shape[1:]) for k in datasets.TRANSITION_KEYS}
        state, meta = checkpointer.restore(start_step, like)
        agent = flax.serialization.from_state_dict(agent, state['agent'])
        online_rows = state.get('online_rows')
        if sharded:
            dataset = train_data.seek(meta['shard_index'])
        print(f'Resumed from the checkpoint at step {start_step}.')
    for log in (train_log, eval_log):
        log.truncate_after(start_step)  # rows written after that checkpoint are redone
    eval_envs = [make_eval_env() for _ in range(FLAGS.eval_episodes)]
    video_envs = [make_eval_env(render=True) for _ in range(FLAGS.video_episodes)]
    progress = tqdm.tqdm(total=FLAGS.offline_steps + FLAGS.online_steps, initial=start_step, unit='step',
                         disable=not FLAGS.progress, dynamic_ncols=True, smoothing=0.05)
    results = {}

    last_log = [time.time(), start_step]

    def log_train(step, phase, metrics):
        now = time.time()
        row = dict(step=step, phase=phase, **metrics, steps_per_second=(step - last_log[1]) / (now - last_log[0]))
        last_log[:] = [now, step]
        train_log.log(row)
        if wandb_run:
            wandb_run.log({f'train/{k}': v for k, v in row.items() if k != 'phase'}, step=step)

    def run_evaluation(step, phase, eval_index):
        policy = lambda observations, key: act(agent, jnp.asarray(observations), key)  # noqa: E731
        metrics, _ = evaluation.evaluate(policy, eval_envs, FLAGS.seed, eval_index, horizon, action_dim)
        if video_envs:
            _, frames = evaluation.evaluate(policy, video_envs, FLAGS.seed, eval_index, horizon, action_dim, len(video_envs))
            save_videos(frames, step)
        eval_log.log(dict(step=step, phase=phase, **metrics))
        if wandb_run:
            wandb_run.log({f'eval/{k}': v for k, v in metrics.items()}, step=step)
        results[phase] = dict(step=step, success=metrics['success'])
        progress.write(f'step {step} ({phase}): success {100 * metrics["success"]:.1f}%, '
                       f'return {metrics["episode_return"]:.1f}, length {metrics["episode_length"]:.0f}')

    def save_videos(frames, step):
        import imageio

        os.makedirs(os.path.join(run_dir, 'videos'), exist_ok=True)
        for i, episode in enumerate(frames):
            imageio.mimsave(os.path.join(run_dir, 'videos', f'step{step}_episode{i}.gif'), episode[::2], duration=0.04)

    def stop(step):
        progress.close()
        checkpointer.close()
        print(f'Stopped at step {step} (--stop_at_step); run the same command again to resume. Run: {run_dir}')

    # ---------------------------------------------------------------------------------- offline phase
    if start_step < FLAGS.offline_steps:
        data = datasets.to_device(dataset)
        boundaries = [FLAGS.log_interval, FLAGS.eval_interval, FLAGS.save_interval, FLAGS.offline_steps]
        scan_length = math.gcd(*boundaries, FLAGS.shard_interval if sharded else 0)
        for step in range(start_step + scan_length, FLAGS.offline_steps + 1, scan_length):
            agent, info = offline_updates(agent, data, jax.random.fold_in(offline_key, step), scan_length)
            progress.update(scan_length)
            if sharded and step % FLAGS.shard_interval == 0:
                data = datasets.to_device(train_data.advance())
            if step % FLAGS.log_interval == 0:
                metrics = host_metrics(info)
                check_finite(metrics, run_dir, step)
                log_train(step, 'offline', metrics)
            if step % FLAGS.eval_interval == 0:
                run_evaluation(step, 'offline', step // FLAGS.eval_interval)
            stopping = FLAGS.stop_at_step is not None and step >= FLAGS.stop_at_step
            if step % FLAGS.save_interval == 0 or step == FLAGS.offline_steps or stopping:
                meta = dict(phase='offline', shard_index=train_data.index if sharded else 0)
                checkpointer.save(step, {'agent': flax.serialization.to_state_dict(agent)}, meta)
            if stopping:
                return stop(step)
        del data
        dataset = train_data.current if sharded else dataset

    # ----------------------------------------------------------------------------------- online phase
    first_online = max(start_step - FLAGS.offline_steps, 0) + 1
    if first_online <= FLAGS.online_steps:
        offline_rows = len(dataset['observations'])
        if FLAGS.balanced_sampling:
            offline_data = datasets.to_device(dataset)
            buffer = datasets.ReplayBuffer.create({k: dataset[k][0] for k in datasets.TRANSITION_KEYS}, FLAGS.online_steps)
            offline_rows = 0
        else:
            offline_data = {}
            buffer = datasets.ReplayBuffer.create_from_dataset(dataset, extra_capacity=FLAGS.online_steps)
        if online_rows is not None:
            buffer = buffer.replace(
                data={k: buffer.data[k].at[offline_rows : offline_rows + meta['online_rows']].set(online_rows[k])
                      for k in datasets.TRANSITION_KEYS},
                size=jnp.asarray(offline_rows + meta['online_rows'], jnp.int32),
            )
        act_randomly = FLAGS.offline_steps == 0  # an untrained agent explores uniformly until training starts
        observation, _ = env.reset(seed=int(np.random.SeedSequence([FLAGS.seed, first_online]).generate_state(1)[0]))
        queue, episode_return, episode_stats = [], 0.0, []
        for i in range(first_online, FLAGS.online_steps + 1):
            step = FLAGS.offline_steps + i
            if sharded and i % FLAGS.shard_interval == 0:
                shard = datasets.to_device(train_data.advance())
                if FLAGS.balanced_sampling:
                    offline_data = shard
                else:
                    buffer = replace_prefix(buffer, shard)
            if not queue:
                if act_randomly and i < FLAGS.start_training:
                    queue = [np.random.default_rng([FLAGS.seed, i]).uniform(-1, 1, action_dim).astype(np.float32)]
                else:
                    chunk = np.asarray(act(agent, jnp.asarray(observation), jax.random.fold_in(act_key, i)))
                    queue = list(chunk.reshape(horizon, action_dim))
            action = np.clip(queue.pop(0), -1.0, 1.0)
            next_observation, reward, terminated, truncated, env_info = env.step(action)
            reward = data_sources.to_sparse(reward) if settings['sparse'] else reward
            episode_return += float(reward)
            transition = dict(observations=observation, actions=action, rewards=reward,
                              terminals=float(terminated or truncated), masks=1.0 - float(terminated),
                              next_observations=next_observation)
            agent, buffer, info = online_step(agent, buffer, offline_data, transition,
                                              jax.random.fold_in(online_key, i), update=i >= FLAGS.start_training)
            if terminated or truncated:
                episode_stats.append((float(env_info['success']), episode_return))
                observation, _ = env.reset()
                queue, episode_return = [], 0.0
            else:
                observation = next_observation
            progress.update(1)
            if i % FLAGS.log_interval == 0 and info:
                metrics = host_metrics(info)
                check_finite(metrics, run_dir, step)
                if episode_stats:
                    metrics['online/episode_success'], metrics['online/episode_return'] = np.mean(episode_stats, 0)
                    episode_stats = []
                log_train(step, 'online', metrics)
            if i % FLAGS.eval_interval == 0:
                run_evaluation(step, 'online', (FLAGS.offline_steps // FLAGS.eval_interval) + i // FLAGS.eval_interval)
            stopping = FLAGS.stop_at_step is not None and step >= FLAGS.stop_at_step
            if i % FLAGS.save_interval == 0 or i == FLAGS.online_steps or stopping:
                filled = int(buffer.size) - offline_rows
                state = {'agent': flax.serialization.to_state_dict(agent)}
                if filled:
                    state['online_rows'] = {k: buffer.data[k][offline_rows : offline_rows + filled] for k in datasets.TRANSITION_KEYS}
                checkpointer.save(step, state, dict(phase='online', online_rows=filled,
                                                    shard_index=train_data.index if sharded else 0))
            if stopping:
                return stop(step)

    # ------------------------------------------------------------------------------------ summary
    progress.close()
    checkpointer.close()
    final = {phase: {'step': r['step'], 'success_pct': 100 * r['success']} for phase, r in results.items()}
    for phase, row in {'offline': 'offline', 'online': 'online'}.items():
        if phase not in final:  # evaluated before a resume: read it back from eval.csv
            rows = [r for r in eval_log.read() if r.get('phase') == phase]
            if rows:
                final[phase] = {'step': int(rows[-1]['step']), 'success_pct': 100 * rows[-1]['success']}
    parts = [f'{phase} success {r["success_pct"]:.1f}% at step {r["step"]}' for phase, r in final.items()]
    deviations = []
    if data_info['source'] in ('generate', 'cache'):
        deviations.append('locally generated dataset (not the official files)')
    if sharded and len(train_data) < 100:
        deviations.append(f'{len(train_data)} of 100 shards')
    summary = f'{config.agent_name} on {FLAGS.env_name}, seed {FLAGS.seed}: ' + '; '.join(parts or ['no evaluation'])
    experiment.write_marker(run_dir, experiment.DONE, dict(summary=summary, final=final, dataset=data_info['dataset_name'],
                                                             dataset_source=data_info['source'], deviations=deviations))
    if not FLAGS.keep_checkpoints:  # a finished run is never resumed; its checkpoints are large
        shutil.rmtree(os.path.join(run_dir, 'checkpoints'), ignore_errors=True)
    if wandb_run:
        wandb_run.finish()
    print(f'Finished. {summary}. Results in {run_dir}')


if __name__ == '__main__':
    sys.argv = rewrite_agent_flag(sys.argv)
    app.run(main)
