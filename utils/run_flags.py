"""main.py's flags, and which run a command line is: defined once for main.py, the sweep launcher and its status.

A run is its resolved settings (the flags that change results, the agent config completed with the domain's
values, PROTOCOL §3) and its seed; its directory is <save_dir>/<agent>/<env_name>/seed<seed>-<hash of the settings>.
main.py parses its command line on absl's FLAGS; the launcher parses a run's command line with `parse` on flags of
its own. Both then call `resolve_run` and `run_dirs`, so a launcher finds the directory main.py writes:

    flag_values = run_flags.parse(['main.py', '--agent=qam', '--env_name=scene-play-singletask-task1-v0'])
    task, config, settings = run_flags.resolve_run(flag_values)
    run_flags.run_dirs(flag_values, settings)   # [(10001, 'runs/qam/scene-play-singletask-task1-v0/seed10001-<hash>')]

Mistakes in the flags raise app.UsageError with what to do instead.
"""

import os

from absl import app, flags
from ml_collections import config_flags

import agents
from envs import data_sources, tasks
from utils import agent_base, experiment


def define_flags(flag_values, argv=None):
    """Define main.py's flags on `flag_values`. `argv`: the command line they will be parsed from, where it is not
    sys.argv (config_flags reads the --agent.<key> overrides from it)."""
    def define(kind, name, default, help_text):
        getattr(flags, f'DEFINE_{kind}')(name, default, help_text, flag_values=flag_values)

    # Run identity.
    define('string', 'env_name', 'cube-double-play-singletask-task2-v0',
           'OGBench single-task environment name, or a D4RL dataset id of Minari (D4RL/antmaze/umaze-v1).')
    define('integer', 'seed', 10001, 'Seed of the agent, batch sampling and evaluation (paper: 10001*k, k=1..12).')
    define('string', 'save_dir', 'runs', 'Root folder of run directories.')
    define('integer', 'num_seeds', 1, 'Train this many seeds, seed + 10001*k for k < num_seeds, vmapped in one process.')
    define('string', 'hyper_sweep', '', "Also vmap over values of one scalar agent hyperparameter, e.g. 'inv_temp=1,3,10'.")
    define('string', 'method', '', 'Method label recorded in flags.json for reports (e.g. QAM-E); default: the agent name.')
    # Budget and loop (PROTOCOL §4).
    define('integer', 'offline_steps', 1_000_000, 'Offline gradient steps (0: online only, as RLPD).')
    define('integer', 'online_steps', 500_000, 'Online environment steps.')
    define('integer', 'eval_interval', 50_000, 'Evaluate every this many steps of the current phase.')
    define('integer', 'eval_episodes', 50, 'Evaluation episodes, run in lockstep.')
    define('integer', 'eval_envs', 50, 'Most evaluation environments alive at once, all seeds of the process together '
           '(at least one per seed; an OGBench manipulation one holds 150-170 MB): more episodes run in waves, '
           'with the same results.')
    define('integer', 'log_interval', 5_000, 'Log training metrics every this many steps.')
    define('integer', 'save_interval', 100_000, 'Checkpoint every this many steps of the current phase.')
    define('integer', 'utd_ratio', 1, 'Online updates per environment step.')
    define('integer', 'start_training', 5_000, 'Online step from which updates start.')
    define('bool', 'balanced_sampling', False, 'Online batches: half offline data, half online buffer (RLPD).')
    # Domain settings (PROTOCOL §3); unset means the domain's value.
    define('integer', 'horizon_length', None, 'Action chunk length H (default: 5 manipulation, 1 mazes).')
    flags.DEFINE_enum('sparse', 'auto', ['auto', 'true', 'false', 'True', 'False'],
                      'Sparse reward conversion (auto: scene, puzzle).', flag_values=flag_values)
    # Data (see envs/data_sources.py).
    flags.DEFINE_enum('dataset_source', 'auto', list(data_sources.SOURCES), 'Where the dataset comes from.',
                      flag_values=flag_values)
    define('string', 'dataset_dir', '', 'Folder of the official OGBench files, or of Minari datasets for D4RL '
           f'(default: {data_sources.DEFAULT_DATASET_DIR}, or Minari\'s folder).')
    define('string', 'dataset_cache_dir', data_sources.DEFAULT_CACHE_DIR, 'Folder of locally generated datasets.')
    define('integer', 'dataset_episodes', None, 'Episodes to generate (default: the standard size).')
    define('integer', 'dataset_seed', 0, 'Seed of local dataset generation.')
    define('integer', 'num_workers', 1, 'Processes for dataset generation.')
    define('bool', 'sharded_dataset', True, 'Use the 100M sharded set where the paper does (cube-quadruple, puzzle-4x4).')
    define('integer', 'dataset_shards', 100, 'Shards to generate or use for a sharded set (fewer is a deviation).')
    define('integer', 'shard_interval', 1_000, 'Swap to the next shard every this many steps.')
    # Output.
    define('bool', 'wandb', False, 'Also log to Weights & Biases.')
    define('string', 'wandb_project', 'qam-suite', 'Weights & Biases project.')
    define('integer', 'video_episodes', 0, 'Save this many evaluation episodes per evaluation as GIFs.')
    define('bool', 'progress', True, 'Show a progress bar.')
    define('bool', 'keep_checkpoints', False, 'Keep the checkpoints of a finished run (they hold the replay buffer).')
    define('integer', 'stop_at_step', None, 'Checkpoint and stop (resumable) at this total step, e.g. before a job time limit.')
    define('bool', 'force_restart', False, 'Start a run that diverged over from step 0 (its files are moved aside).')
    config_flags.DEFINE_config_file(
        'agent', os.path.join(agents.AGENTS_DIR, 'qam.py'), 'Agent: a bare name (qam) or a path to an agent file; '
        'override its config with --agent.<key>=<value>.', flag_values=flag_values, lock_config=True, sys_argv=argv,
    )


# Flags that do not change results stay out of the run directory's hash.
NON_RESULT_FLAGS = (
    'seed', 'num_seeds', 'hyper_sweep', 'save_dir', 'method', 'log_interval', 'save_interval', 'dataset_source',
    'dataset_dir', 'dataset_cache_dir', 'num_workers', 'wandb', 'wandb_project', 'video_episodes', 'progress',
    'keep_checkpoints', 'stop_at_step', 'force_restart', 'eval_envs',
)
# The flags that flags.json records (the agent, horizon_length and sparse are recorded resolved, in the settings).
RUN_FLAGS = (
    'env_name', 'offline_steps', 'online_steps', 'eval_interval', 'eval_episodes', 'utd_ratio', 'start_training',
    'balanced_sampling', 'dataset_episodes', 'dataset_seed', 'sharded_dataset', 'dataset_shards', 'shard_interval',
) + NON_RESULT_FLAGS


def flag_names():
    """(every flag name, the boolean ones) of main.py."""
    flag_values = flags.FlagValues()
    define_flags(flag_values, argv=['main.py'])
    names = frozenset(flag_values)
    return names, frozenset(name for name in names if isinstance(flag_values[name], flags.BooleanFlag))


def joined_agent_args(argv):
    """argv with absl's `--agent <value>` written as `--agent=<value>`, the one form the agent checks read."""
    argv, joined = list(argv), []
    while argv:
        arg = argv.pop(0)
        joined.append(f'--agent={argv.pop(0)}' if arg == '--agent' and argv else arg)
    return joined


def prepare_agent_args(argv):
    """Let `--agent=qam` name an agent by its bare name (config_flags needs the file's path), and check the agent
    and every `--agent.<key>` before the flags are parsed (config_flags reports those mistakes as tracebacks).
    Returns the rewritten command line; app.UsageError names a mistake."""
    rewritten, agent = [], 'qam'
    for arg in joined_agent_args(argv):
        if arg.startswith('--agent='):
            agent = arg.split('=', 1)[1]
            try:
                arg = '--agent=' + agents.agent_path(agent)
            except ValueError as e:
                raise app.UsageError(str(e))
        rewritten.append(arg)
    try:
        config = agents.load_agent(agent).get_config()
    except Exception as e:  # a broken agent file: say which, without its traceback
        raise app.UsageError(f'cannot load agent {agent!r}: {type(e).__name__}: {e}')
    for arg in rewritten:
        if arg.startswith('--agent.'):
            key = arg[len('--agent.'):].split('=', 1)[0]
            if key.split('.')[0] not in config:
                raise app.UsageError(f'--agent.{key}: {config.agent_name} has no config key {key!r}. Its keys: '
                                     f'{", ".join(sorted(config))}.')
    return rewritten


HELP_FLAGS = ('--help', '-h', '-?', '--helpshort', '--helpfull')


def agent_help(argv):
    """The agent's config keys, each with its comment and default, for `--help`: absl lists only the flags, and
    the agent's keys are the `--agent.<key>` overrides of its config file. The agent is the last `--agent=` in argv
    (as absl takes it), or qam."""
    agent = ([arg.split('=', 1)[1] for arg in joined_agent_args(argv) if arg.startswith('--agent=')] or ['qam'])[-1]
    get_config = agents.load_agent(agent).get_config
    comments, config = agent_base.config_comments(get_config), get_config()
    lines = [f'Agent {config.agent_name}: set a key of its config with --agent.<key>=<value>']
    for key in sorted(config):
        lines += [f'  --agent.{key}: {comments.get(key, "")}', f'    (default: {config[key]!r})']
    return '\n'.join(lines)


def parse(argv):
    """A main.py command line (`argv[0]` is the program) parsed as main.py parses it, on flags of its own."""
    argv = prepare_agent_args(list(argv))
    flag_values = flags.FlagValues()
    define_flags(flag_values, argv)
    try:
        flag_values(argv)
    except flags.Error as e:
        raise app.UsageError(str(e))
    return flag_values


def overridden_agent_keys(flag_values):
    """The agent config keys set on the command line (--agent.<key>=...)."""
    return set(config_flags.get_override_values(flag_values['agent']))


def check_agent_config(flag_values, config):
    """Config values of the right kind: tuples of positive ints where the default is one (network sizes), counts
    of at least 1 (config_flags checks scalar types, but takes `abc` for a tuple as ('abc',))."""
    defaults = agents.load_agent(flag_values['agent'].config_filename).get_config()
    for key, default in defaults.items():
        value = config[key]
        if isinstance(default, tuple) and default and isinstance(default[0], int):
            if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise app.UsageError(f'--agent.{key} must be a tuple of positive integers, e.g. {default!r}; got {value!r}.')
        elif key in ('batch_size', *agent_base.COUNT_KEYS) and value < 1:
            raise app.UsageError(f'--agent.{key} must be at least 1, got {value}.')


def check_flags(flag_values, config):
    positive = ('num_seeds', 'eval_interval', 'eval_episodes', 'eval_envs', 'log_interval', 'save_interval', 'utd_ratio',
                'num_workers', 'dataset_shards', 'shard_interval')
    for name in positive:
        if flag_values[name].value < 1:
            raise app.UsageError(f'--{name} must be at least 1, got {flag_values[name].value}.')
    for name in ('offline_steps', 'online_steps', 'start_training'):
        if flag_values[name].value < 0:
            raise app.UsageError(f'--{name} must be >= 0, got {flag_values[name].value}.')
    if flag_values.offline_steps + flag_values.online_steps == 0:
        raise app.UsageError('Nothing to do: --offline_steps and --online_steps are both 0.')
    if flag_values.horizon_length is not None and flag_values.horizon_length < 1:  # else 0 would become the domain's H
        raise app.UsageError(f'--horizon_length must be at least 1, got {flag_values.horizon_length}.')
    if flag_values.dataset_episodes is not None and flag_values.dataset_episodes < 1:
        raise app.UsageError(f'--dataset_episodes must be at least 1, got {flag_values.dataset_episodes}.')
    if flag_values.balanced_sampling and config.batch_size % 2:
        raise app.UsageError(f'--balanced_sampling needs an even batch size, got {config.batch_size}.')
    if flag_values.online_steps and flag_values.start_training < config.horizon_length:
        raise app.UsageError(f'--start_training must be at least the chunk length {config.horizon_length}.')


def resolve_run(flag_values):
    """(task, agent config, settings) of parsed main.py flags, checked: the agent config completed with the domain's
    values (PROTOCOL §3), and the settings, everything that defines the results (the run directory's hash). Leaves
    `flag_values` as it is."""
    try:
        task = tasks.parse_env_name(flag_values.env_name)
    except ValueError as e:
        raise app.UsageError(str(e))
    config = flag_values.agent.copy_and_resolve_references()
    overridden = overridden_agent_keys(flag_values)
    if 'horizon_length' in overridden:  # it would be silently replaced by the domain's value below
        raise app.UsageError('Set the chunk length with --horizon_length, not --agent.horizon_length.')
    config.horizon_length = flag_values.horizon_length or task.domain.horizon_length
    for key in ('discount', 'rho'):
        if key in config and key not in overridden:
            setattr(config, key, getattr(task.domain, key))
    sparse = task.domain.sparse if flag_values.sparse == 'auto' else flag_values.sparse.lower() == 'true'
    if task.is_minari and sparse:
        raise app.UsageError('--sparse converts OGBench rewards; D4RL tasks use their own rewards (leave it at auto).')
    if task.is_minari and flag_values.dataset_episodes is not None:
        raise app.UsageError('--dataset_episodes sizes a generated OGBench dataset; a D4RL dataset is used whole.')
    check_flags(flag_values, config)
    check_agent_config(flag_values, config)
    settings = {name: flag_values[name].value for name in RUN_FLAGS if name not in NON_RESULT_FLAGS}
    settings.update(agent=config.to_dict(), sparse=sparse)
    if flag_values.online_steps:  # online results of earlier data versions are invalid: a new version is a new run
        settings['online_data_version'] = experiment.ONLINE_DATA_VERSION
    return task, config, settings


def run_dir(flag_values, settings, seed):
    """The run directory of the run of `seed` with these flags and settings."""
    return experiment.run_dir_name(flag_values.save_dir, settings['agent']['agent_name'], flag_values.env_name, seed,
                                   settings)


def run_dirs(flag_values, settings):
    """[(seed, run directory)] of the runs these flags train with these settings: the seeds s + SEED_STRIDE·k,
    k < num_seeds."""
    seeds = [flag_values.seed + experiment.SEED_STRIDE * k for k in range(flag_values.num_seeds)]
    return [(seed, run_dir(flag_values, settings, seed)) for seed in seeds]


def recorded_flags(flag_values, seed):
    """The flags that flags.json records for the run of `seed`."""
    return {name: flag_values[name].value for name in RUN_FLAGS} | {'seed': seed}
