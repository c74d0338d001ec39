"""Sweeps: a grid of methods x datasets x tasks x seeds that expands to `main.py` command lines.

A sweep file (`sweeps/paper.py`, `rlpd.py`, `quality.py`, `sensitivity.py`, or any file of yours) defines
`SWEEP = Sweep(...)`; the values of every run come from `sweeps/hyperparameters.py`. `expand` turns a sweep and a
selection (methods, domains, tasks, seeds) into `Run`s, each one `main.py` command line:

    from sweeps import sweeps
    runs = sweeps.expand(sweeps.load('paper'), methods=['QAM'], domains=['c2'], tasks=[2])
    runs[0].argv('runs')   # [python, .../main.py, --agent=qam, --env_name=..., --seed=10001, --method=QAM, ...]

Every bad name (method, domain, task, seed, flag, agent key) raises SweepError before anything runs.
"""

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import os
import re
import shlex
import sys

from envs import tasks as env_tasks
from sweeps import hyperparameters as hp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, 'main.py')
SWEEP_FILES = ('paper', 'rlpd', 'quality', 'sensitivity', 'mini', 'd4rl')  # the sweeps shipped in this folder
# A few-second version of any run (launch --tiny): checks a sweep end to end (data, agents, launcher, cluster)
# before the real budget is spent. Only keys every agent has (ALGORITHMS §1.13); never overrides what defines a
# method (RLPD keeps --offline_steps=0).
TINY_ARGS = (
    '--offline_steps=20 --online_steps=20 --start_training=10 --eval_interval=20 --eval_episodes=1 '
    "--log_interval=10 --save_interval=10 --progress=false --agent.actor_hidden_dims='(32, 32)' "
    "--agent.value_hidden_dims='(32, 32)' --agent.num_qs=2 --agent.batch_size=16"
)
# Flags the launcher sets itself; a sweep or --extra_args may not set them.
RESERVED_FLAGS = ('agent', 'env_name', 'seed', 'method', 'save_dir')


class SweepError(ValueError):
    """A sweep or a selection names something that does not exist."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    methods: tuple  # names in hyperparameters.METHODS or VARIANTS
    datasets: tuple  # '<domain>-<dataset type>', e.g. 'cube-double-play': env names '<dataset>-singletask-task<n>-v0';
    # or D4RL dataset ids, e.g. 'D4RL/antmaze/umaze-v1', which are their env names (one task each)
    tasks: object = env_tasks.TASK_IDS  # task ids of every dataset, or {dataset: task ids}
    seeds: tuple = hp.SEEDS
    flags: tuple = ()  # (name, value) main.py flags of every run, e.g. (('agent.num_qs', 2),)

    def tasks_of(self, dataset):
        if is_d4rl(dataset):
            return (1,)
        return tuple(self.tasks[dataset] if isinstance(self.tasks, dict) else self.tasks)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: a `main.py` command line (the launcher adds --save_dir)."""

    sweep: str
    method: str
    agent: str
    dataset: str  # e.g. 'cube-double-play'
    task: int
    seed: int
    flags: tuple  # ((name, value string), ...) in command-line order; agent keys as 'agent.<key>'

    @property
    def env_name(self):
        return env_name(self.dataset, self.task)

    @property
    def key(self):
        return f'{self.method}/{self.env_name}/seed{self.seed}'

    @property
    def flag_dict(self):
        return dict(self.flags)

    @property
    def command_hash(self):
        """8 hex digits identifying the whole command (two configurations of a method/task/seed never share it)."""
        return hashlib.sha256(repr(self.flags).encode()).hexdigest()[:8]

    def save_dir(self, root):
        """Each method gets its own folder: QAM, QAM-E and QAM-F share one configuration on some domains (PROTOCOL
        §8.2) but are separate runs, and main.py's run directory does not depend on the method label."""
        return os.path.join(os.path.abspath(root), method_slug(self.method))

    def argv(self, root, python=None):
        flags = [f'--{name}={value}' for name, value in self.flags]
        return [python or sys.executable, MAIN] + flags[:4] + [f'--save_dir={self.save_dir(root)}'] + flags[4:]

    def command(self, root, python=None):
        return shlex.join(self.argv(root, python))


def is_d4rl(dataset):
    return dataset.startswith('D4RL/')


def env_name(dataset, task):
    """main.py's --env_name of a sweep's dataset and task."""
    return dataset if is_d4rl(dataset) else f'{dataset}-singletask-task{task}-v0'


def method_slug(method):
    """A folder name for a method: 'QAM-E (0.1x tau)' -> 'QAM-E_0.1x_tau'."""
    return re.sub(r'_+', '_', re.sub(r'[^A-Za-z0-9.=+-]', '_', method)).strip('_')


def format_value(value):
    """A value as main.py's flag parsers read it."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format(value, '.10g')
    return str(value)


# ------------------------------------------------------------------------------------------- loading sweeps
def load(name_or_path):
    """The Sweep of a shipped sweep file (`paper`, `rlpd`, `quality`, `sensitivity`) or of any `.py` file."""
    if name_or_path.endswith('.py'):
        if not os.path.isfile(name_or_path):
            raise SweepError(f'Sweep file {name_or_path!r} does not exist.')
        module_name = f'sweep_{method_slug(os.path.basename(name_or_path)[:-3])}'
        spec = importlib.util.spec_from_file_location(module_name, name_or_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    elif name_or_path in SWEEP_FILES:
        module = importlib.import_module(f'sweeps.{name_or_path}')
    else:
        raise SweepError(f'Unknown sweep {name_or_path!r}. Sweeps: {", ".join(SWEEP_FILES)}, or a path to a .py file '
                         'defining SWEEP = sweeps.Sweep(...).')
    sweep = getattr(module, 'SWEEP', None)
    if not isinstance(sweep, Sweep):
        raise SweepError(f'{module.__file__} defines no SWEEP = sweeps.Sweep(...).')
    check_sweep(sweep)
    return sweep


def check_sweep(sweep):
    """Every name in the sweep exists (methods, datasets, tasks, flags); raises SweepError otherwise."""
    for method in sweep.methods:
        if method not in hp.method_names():
            raise SweepError(f'Sweep {sweep.name!r}: unknown method {method!r}. Known: {", ".join(hp.method_names())}.')
    for dataset in sweep.datasets:
        column = dataset_column(dataset)
        if is_d4rl(dataset):
            missing = [m for m in sweep.methods if m not in hp.D4RL_METHODS]
            if column not in hp.D4RL_COLUMNS or missing:
                raise SweepError(f'Sweep {sweep.name!r}: {dataset!r} needs D4RL settings for every method; there are '
                                 f'none for {", ".join(missing) or "this dataset"} (sweeps/hyperparameters.py, '
                                 f'D4RL_METHODS).')
            continue
        if column not in hp.COLUMNS:
            raise SweepError(f'Sweep {sweep.name!r}: dataset {dataset!r} is of domain {column!r}, which has no '
                             f'tuned hyperparameters (domains: {", ".join(hp.COLUMNS)}).')
        bad = [t for t in sweep.tasks_of(dataset) if t not in env_tasks.TASK_IDS]
        if bad:
            raise SweepError(f'Sweep {sweep.name!r}: tasks {bad} of {dataset!r} do not exist (tasks 1-5).')
    if isinstance(sweep.tasks, dict) and set(sweep.tasks) != set(sweep.datasets):
        raise SweepError(f'Sweep {sweep.name!r}: tasks must list exactly its datasets.')
    if not sweep.seeds or any(not isinstance(s, int) or s < 0 for s in sweep.seeds):
        raise SweepError(f'Sweep {sweep.name!r}: seeds must be non-negative integers, got {sweep.seeds}.')
    check_flag_names([name for name, _ in sweep.flags], f'sweep {sweep.name!r}')


def dataset_column(dataset):
    """'cube-double-noisy' -> 'cube-double' (the domain whose tuned values apply), a D4RL id -> itself (tuned per
    dataset); SweepError if unknown."""
    try:
        if is_d4rl(dataset):
            env_tasks.parse_env_name(dataset)  # an unknown id raises
            return dataset
        return env_tasks.parse_env_name(f'{dataset}-singletask-task1-v0').domain.name
    except ValueError:
        raise SweepError(f'Unknown dataset {dataset!r}: use <domain>-<dataset type>, e.g. cube-double-play, '
                         'antmaze-large-navigate, cube-triple-noisy, or a D4RL dataset id such as '
                         'D4RL/antmaze/umaze-v1.') from None


# -------------------------------------------------------------------------------------------------- flags
@functools.cache
def main_flag_names():
    """(every flag of main.py, the boolean ones)."""
    from utils import run_flags  # here: it loads the agents' package and the data sources

    return run_flags.flag_names()


def check_flag_names(names, where):
    known, _ = main_flag_names()
    for name in names:
        if name in RESERVED_FLAGS:
            raise SweepError(f'{where}: --{name} is set by the sweep itself; it cannot be overridden.')
        if name in ('num_seeds', 'hyper_sweep'):
            raise SweepError(f'{where}: --{name} would train several runs under one run of the sweep; every seed and '
                             'value is a run of its own (launch several seeds as one process with --seeds_per_process).')
        if not name.startswith('agent.') and name not in known:
            raise SweepError(f'{where}: unknown main.py flag --{name}. Flags: {", ".join(sorted(known))}, '
                             'or --agent.<key>.')


def parse_overrides(text):
    """'--offline_steps=40 --agent.num_qs=2 --noprogress' -> [('offline_steps', '40'), ('agent.num_qs', '2'),
    ('progress', 'False')]. Only --name=value and boolean --name / --noname; SweepError otherwise."""
    _, bools = main_flag_names()
    items = shlex.split(text) if isinstance(text, str) else list(text)
    overrides = []
    for item in items:
        match = re.fullmatch(r'--([\w.]+)(?:=(.*))?', item, re.S)
        if not match:
            raise SweepError(f'--extra_args: expected --name=value, got {item!r}.')
        name, value = match.groups()
        if value is None:
            if name in bools:
                value = 'True'
            elif name.startswith('no') and name[2:] in bools:
                name, value = name[2:], 'False'
            else:
                raise SweepError(f'--extra_args: {item!r} needs a value (--{name}=...).')
        overrides.append((name, value))
    check_flag_names([name for name, _ in overrides], '--extra_args')
    return overrides


def merge_flags(flags, overrides):
    """Flags with overrides applied: a flag already present keeps its place and takes the new value."""
    merged = dict(flags)
    merged.update(overrides)
    return tuple(merged.items())


# ---------------------------------------------------------------------------------------------- expansion
def resolve_domains(sweep, names):
    """Domain selectors -> the sweep's datasets. A selector is a dataset ('cube-double-play'), a domain
    ('cube-double', also selects 'cube-double-noisy'), an abbreviation of PROTOCOL §8.2 ('c2') or a tuned-table
    key ('scene-play-sparse')."""
    chosen = []
    for name in names:
        column = hp.ABBREVIATIONS.get(name, name)
        stripped = name[: -len('-sparse')] if name.endswith('-sparse') else name
        matches = [d for d in sweep.datasets
                   if stripped == d or column == dataset_column(d) or (is_d4rl(d) and d.startswith(name + '/'))]
        if not matches:
            raise SweepError(f'Unknown domain {name!r} for sweep {sweep.name!r}. Its datasets: '
                             f'{", ".join(sweep.datasets)} (also by domain, e.g. cube-double, or abbreviation: '
                             f'{", ".join(hp.ABBREVIATIONS)}).')
        chosen += [d for d in matches if d not in chosen]
    return [d for d in sweep.datasets if d in chosen]


def _select(kind, wanted, available, known=None):
    if wanted is None:
        return list(available)
    wanted = list(wanted)
    for item in wanted:
        if known is not None and item not in known:
            raise SweepError(f'Unknown {kind} {item!r}. Known: {", ".join(map(str, known))}.')
        if item not in available:
            raise SweepError(f'{kind.capitalize()} {item!r} is not in this sweep; '
                             f'it has {", ".join(map(str, available))}.')
    return [a for a in available if a in wanted]


def expand(sweep, methods=None, domains=None, tasks=None, seeds=None, extra_args=(), tiny=False):
    """The runs of `sweep` restricted to the given methods, domains, tasks and seeds (None: all), with
    `extra_args` (a string or (name, value) pairs) applied to every command, last. `tiny` adds TINY_ARGS where the
    method and the sweep do not set the flag themselves (RLPD stays online only)."""
    overrides = parse_overrides(extra_args) if isinstance(extra_args, str) else list(extra_args)
    check_flag_names([name for name, _ in overrides], '--extra_args')
    presets = parse_overrides(TINY_ARGS) if tiny else []
    methods = _select('method', methods, sweep.methods, known=hp.method_names())
    datasets = sweep.datasets if domains is None else resolve_domains(sweep, domains)
    tasks = _select('task', tasks, sorted({t for d in datasets for t in sweep.tasks_of(d)}), known=env_tasks.TASK_IDS)
    seeds = _select('seed', seeds, sweep.seeds)
    runs = []
    for method in methods:
        for dataset in datasets:
            agent, settings, run_flags = hp.resolve(method, dataset_column(dataset))
            for task in sweep.tasks_of(dataset):
                if task not in tasks:
                    continue
                for seed in seeds:
                    flags = [('agent', agent), ('env_name', env_name(dataset, task)), ('seed', seed),
                             ('method', method)]
                    flags += list(run_flags.items()) + [(f'agent.{k}', v) for k, v in settings.items()]
                    flags = merge_flags(flags + list(sweep.flags), [])
                    flags = merge_flags(flags, [(n, v) for n, v in presets if n not in dict(flags)])
                    flags = merge_flags(flags, overrides)
                    flags = tuple((name, format_value(value)) for name, value in flags)
                    runs.append(Run(sweep.name, method, agent, dataset, task, seed, flags))
    if not runs:
        raise SweepError(f'The selection is empty: no run of sweep {sweep.name!r} has these domains and tasks.')
    return runs


# ---------------------------------------------------------------------------------------- agent settings
def agent_config_keys(agent):
    """The keys of an agent's get_config(), or None when agents/<agent>.py does not exist (yet)."""
    import agents

    if not os.path.isfile(os.path.join(agents.AGENTS_DIR, f'{agent}.py')):
        return None
    try:
        return set(agents.load_agent(agent).get_config().keys())
    except Exception as e:  # noqa: BLE001 - an agent that does not load is reported with the reason
        raise SweepError(f'Agent {agent!r} (agents/{agent}.py) cannot be loaded: {type(e).__name__}: {e}') from e


def check_agents(runs, require_agents=True):
    """Every --agent.<key> of every run exists in its agent's config. A missing agent file is an error when
    `require_agents` (anything that runs), else a warning returned as a string (a dry run)."""
    warnings = []
    by_agent = {}
    for run in runs:
        by_agent.setdefault(run.agent, set()).update(n[len('agent.'):] for n, _ in run.flags if n.startswith('agent.'))
    for agent, keys in sorted(by_agent.items()):
        known = agent_config_keys(agent)
        methods = sorted({r.method for r in runs if r.agent == agent})
        if known is None:
            message = f'agent {agent!r} (methods {", ".join(methods)}) does not exist in agents/ yet'
            if require_agents:
                raise SweepError(f'Cannot launch: {message}.')
            warnings.append(message)
            continue
        unknown = sorted(keys - known)
        if unknown:
            raise SweepError(f'Unknown key(s) {", ".join(unknown)} for agent {agent!r} (methods {", ".join(methods)}). '
                             f'Its keys: {", ".join(sorted(known))}.')
    return warnings
