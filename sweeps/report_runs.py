"""Reading finished (and unfinished) run directories written by main.py, and laying them on a grid.

A run directory is `<save_dir>/<agent>/<env_name>/seed<seed>-<hash>/` with flags.json, eval.csv and a DONE or
DIVERGED marker (see utils/experiment.py). This module turns a folder of them into `Run` records, labels each
run with its method (the `--method` flag, else derived from the agent config), separates runs of one method
whose settings differ on the same task (never averaged together), and builds the expected grid
methods x tasks x seeds with the reason for every missing cell. The grid's extent comes from the report's command
line: resolve_target finds the runs folder (given, or a sweep's --save_dir) and the runs a sweep expects, and
expected_grid narrows them to the methods, tasks and seeds given. It also holds what every report module shares:
the phases (PHASES, PHASE_TITLES), base_method and plural.
"""

import csv
import dataclasses
import hashlib
import json
import math
import os
import re

import numpy as np

from utils import experiment

PHASES = ('offline', 'online')  # end of the offline phase; end of the online phase (offline-to-online, or online only)
PHASE_TITLES = {'offline': 'end of the offline phase', 'online': 'end of the online phase'}
# Order of the paper's tables (PROTOCOL §2, §12.1); other names follow alphabetically.
DOMAIN_ORDER = (
    'antmaze-large-navigate', 'antmaze-giant-navigate', 'humanoidmaze-medium-navigate', 'humanoidmaze-large-navigate',
    'scene-play', 'puzzle-3x3-play', 'puzzle-4x4-play', 'cube-double-play', 'cube-triple-play', 'cube-quadruple-play',
    'antmaze-large-stitch', 'humanoidmaze-medium-stitch', 'scene-noisy', 'puzzle-3x3-noisy', 'cube-double-noisy',
    'cube-triple-noisy',
)
METHOD_ORDER = ('QAM', 'QAM-F', 'QAM-E', 'BAM', 'FQL', 'FBRAC', 'FEdit', 'DSRL', 'IFQL', 'FAWAC', 'CGQL', 'CGQL-M',
                'CGQL-L', 'QSM', 'DAC', 'ReBRAC', 'RLPD')
AGENT_METHODS = {  # agent_name -> the paper's method name (QAM and CGQL variants come from their config)
    'qam': 'QAM', 'bam': 'BAM', 'fql': 'FQL', 'fbrac': 'FBRAC', 'fedit': 'FEdit', 'dsrl': 'DSRL', 'ifql': 'IFQL',
    'fawac': 'FAWAC', 'cgql': 'CGQL', 'dac': 'DAC', 'qsm': 'QSM', 'rebrac': 'ReBRAC', 'rlpd': 'RLPD',
}
# What the report averages, by its eval.csv column: the label in tables and figures, and the factor to percent.
METRICS = {'success': ('success (%)', 100.0), 'normalized_score': ('normalised score', 1.0)}
_ENV_RE = re.compile(r'^(?P<domain>.+)-singletask-task(?P<task>\d+)-v0$')
_DIR_RE = re.compile(r'^seed(?P<seed>-?\d+)-(?P<hash>[0-9a-f]+)$')


def split_env_name(env_name):
    """'cube-double-play-singletask-task2-v0' -> ('cube-double-play', 2); a D4RL id is its own domain, task 1."""
    match = _ENV_RE.match(env_name)
    if not match:
        return env_name, 1 if env_name.startswith('D4RL/') else 0
    return match['domain'], int(match['task'])


def domain_sort_key(domain):
    return (DOMAIN_ORDER.index(domain), '') if domain in DOMAIN_ORDER else (len(DOMAIN_ORDER), domain)


def task_sort_key(env_name):
    domain, task = split_env_name(env_name)
    return domain_sort_key(domain) + (task, env_name)


def base_method(method):
    """A method label without the config-variant suffix separate_configs gives it: 'QAM [batch_size=64]' -> 'QAM'."""
    return method.split(' [')[0]


def method_sort_key(method):
    base = base_method(method)
    return (METHOD_ORDER.index(base), method) if base in METHOD_ORDER else (len(METHOD_ORDER), method)


def plural(n, word):
    return f'{n} {word}' + ('s' if n != 1 else '')


def method_label(flags, agent_config):
    """The method a run belongs to: its --method label, else the paper's name derived from the agent config."""
    if flags.get('method'):
        return flags['method']
    name = agent_config.get('agent_name', '')
    if name == 'qam':
        if agent_config.get('fql_alpha', 0) > 0:
            return 'QAM-F'
        if agent_config.get('edit_scale', 0) > 0:
            return 'QAM-E'
        return 'QAM'
    if name == 'cgql':
        return {'mse': 'CGQL-M', 'linex': 'CGQL-L'}.get(agent_config.get('mode', 'simple'), 'CGQL')
    return AGENT_METHODS.get(name, name or 'unknown')


def flatten(settings, prefix=''):
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(flatten(value, f'{prefix}{key}.'))
        else:
            out[prefix + key] = value
    return out


@dataclasses.dataclass
class Run:
    path: str
    agent: str
    method: str  # label used in the report (after separating configs, it may carry a [key=value] suffix)
    base_method: str  # the method label before separating configs
    env_name: str
    domain: str
    task_id: int
    seed: int
    config_hash: str
    settings: dict
    status: str  # finished | diverged | unfinished
    offline_steps: int
    online_steps: int
    eval_interval: int
    steps: np.ndarray  # evaluation steps (total)
    phases: list  # phase of each evaluation
    scores: np.ndarray  # the report's metric at each evaluation (METRICS: success in %, or the normalised score)
    diverged: dict = None  # DIVERGED marker: step, keys
    done: dict = None  # DONE marker
    started: str = ''
    code_version: str = ''
    dataset_name: str = ''  # what it trained on (flags.json 'data'; '' = not recorded)
    dataset_fingerprint: str = ''  # of the training arrays' contents (envs/data_sources.dataset_identity)
    excluded: str = ''  # why the run is left out of every statistic ('' = used)
    csv_problems: str = ''  # repeated or out-of-order steps in its CSV files ('' = none)

    def end_step(self, phase):
        """Step of the evaluation that ends `phase`, or None when the run has no such phase."""
        if phase == 'offline':
            if self.offline_steps <= 0:
                return None
            return self.offline_steps - self.offline_steps % self.eval_interval or None
        if self.online_steps <= 0 or self.online_steps < self.eval_interval:
            return None
        return self.offline_steps + self.online_steps - self.online_steps % self.eval_interval

    def end_value(self, phase):
        """The metric at the end of `phase`, or None when that evaluation has not been written."""
        step = self.end_step(phase)
        if step is None:
            return None
        for s, p, v in zip(self.steps, self.phases, self.scores):
            if s == step and p == phase and math.isfinite(v):
                return float(v)
        return None

    @property
    def last_step(self):
        return int(self.steps[-1]) if len(self.steps) else 0

    def missing_reason(self, phase):
        """Why end_value(phase) is None."""
        if self.excluded:
            return self.excluded
        if self.end_step(phase) is None:
            return 'phase not run'
        if self.status == 'diverged':
            return f'diverged at step {self.diverged.get("step")}'
        if self.status == 'unfinished':
            return f'unfinished (last evaluation at step {self.last_step})'
        return f'no evaluation at step {self.end_step(phase)}'


def _read_eval(path, metric='success'):
    """(steps, phases, metric values) of a run's eval.csv, by step; a value the row lacks is NaN."""
    steps, phases, scores = [], [], []
    scale = METRICS[metric][1]
    if os.path.exists(path):
        with open(path, newline='') as f:
            for row in csv.DictReader(f):
                try:
                    step, value = int(float(row['step'])), float(row[metric]) if row.get(metric) else math.nan
                except (KeyError, ValueError):
                    continue
                steps.append(step)
                phases.append(row.get('phase', ''))
                scores.append(scale * value)
    order = np.argsort(steps, kind='stable')
    return np.asarray(steps, np.int64)[order], [phases[i] for i in order], np.asarray(scores, np.float64)[order]


def csv_problems(run_dir):
    """Repeated or out-of-order steps in a run's train.csv and eval.csv (main.py writes each step once, in order)."""
    problems = []
    for name in ('train.csv', 'eval.csv'):
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            continue
        with open(path, newline='') as f:
            keys = [(row.get('step'), row.get('phase')) for row in csv.DictReader(f)]
        steps = [int(float(step)) for step, _ in keys if step not in (None, '')]
        repeated = len(keys) - len(set(keys))
        backwards = sum(b < a for a, b in zip(steps, steps[1:]))
        if repeated or backwards:
            problems.append(f'{name}: {repeated} repeated and {backwards} out-of-order steps')
    return '; '.join(problems)


def _read_json(path):
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def read_run(path, metric='success'):
    """One run directory as a Run (with `metric` at each evaluation), or None when it has no readable flags.json."""
    record = _read_json(os.path.join(path, 'flags.json'))
    if not record or 'flags' not in record:
        return None
    flags, settings = record['flags'], record.get('settings', {})
    agent_config, data = settings.get('agent', {}), record.get('data') or {}
    env_name = flags.get('env_name') or settings.get('env_name', '')
    domain, task_id = split_env_name(env_name)
    match = _DIR_RE.match(os.path.basename(os.path.normpath(path)))
    config_hash = match['hash'] if match else experiment.config_hash(settings)
    done = _read_json(os.path.join(path, experiment.DONE))
    diverged = _read_json(os.path.join(path, experiment.DIVERGED))
    status = 'diverged' if diverged is not None else 'finished' if done is not None else 'unfinished'
    steps, phases, scores = _read_eval(os.path.join(path, 'eval.csv'), metric)
    label = method_label(flags, agent_config)
    return Run(
        path=path, agent=agent_config.get('agent_name', ''), method=label, base_method=label, env_name=env_name,
        domain=domain, task_id=task_id, seed=int(flags.get('seed', match['seed'] if match else 0)),
        config_hash=config_hash, settings=settings, status=status,
        offline_steps=int(flags.get('offline_steps', settings.get('offline_steps', 0))),
        online_steps=int(flags.get('online_steps', settings.get('online_steps', 0))),
        eval_interval=max(int(flags.get('eval_interval', settings.get('eval_interval', 1))), 1),
        steps=steps, phases=phases, scores=scores, diverged=diverged, done=done,
        started=record.get('started', ''), code_version=record.get('code_version', ''),
        dataset_name=data.get('dataset_name', ''), dataset_fingerprint=data.get('fingerprint', ''),
        excluded=experiment.online_results_invalid(settings), csv_problems=csv_problems(path),
    )


def find_runs(root, metric='success'):
    """Every run directory (a folder with flags.json) under `root`, read with `metric` (a METRICS key)."""
    runs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if 'flags.json' in filenames:
            run = read_run(dirpath, metric)
            if run is not None:
                runs.append(run)
            dirnames[:] = []  # a run directory holds no other runs (what it moved aside is in its discarded/)
    return runs


@dataclasses.dataclass
class Conflict:
    """Runs of one method on one task whose settings differ."""

    method: str
    env_name: str
    configs: dict  # config hash -> dict(values of the differing settings, runs, seeds, label, kept)


def separate_configs(runs, policy='split'):
    """Give runs of one method with different settings on the same task different labels (or keep one config).

    For each method, the settings that differ between runs on the same task are found; with policy 'split',
    every run of that method is labelled `METHOD [key=value, ...]` by its values of those settings, so that a
    consistent change (e.g. another batch size on every task) still forms one variant across tasks. With policy
    'newest', only the config whose runs started last is kept on each task; the other runs are excluded.
    Returns the list of Conflicts (one per method and task with more than one config)."""
    conflicts = []
    by_method = {}
    for run in runs:
        if run.excluded:  # already left out (invalid online results): no config to separate it from
            continue
        by_method.setdefault(run.base_method, []).append(run)
    for method, method_runs in by_method.items():
        by_env = {}
        for run in method_runs:
            by_env.setdefault(run.env_name, {}).setdefault(run.config_hash, []).append(run)
        differing = []
        for env_name, configs in by_env.items():
            if len(configs) < 2:
                continue
            flat = {h: flatten(rs[0].settings) for h, rs in configs.items()}
            keys = sorted({k for f in flat.values() for k in f} - {'env_name'})
            diff = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flat.values()}) > 1]
            differing += [k for k in diff if k not in differing]
            conflicts.append(Conflict(method, env_name, {
                h: dict(values={k: flat[h].get(k) for k in diff}, runs=len(rs), seeds=sorted(r.seed for r in rs),
                        started=max(r.started for r in rs)) for h, rs in configs.items()
            }))
        if not differing:
            continue
        if policy == 'newest':
            for conflict in (c for c in conflicts if c.method == method):
                newest = max(conflict.configs, key=lambda h: conflict.configs[h]['started'])
                for h, info in conflict.configs.items():
                    info['kept'] = h == newest
                    for run in by_env[conflict.env_name][h]:
                        if h != newest:
                            run.excluded = f'another config of {method} on this task is newer ({newest})'
            continue
        for run in method_runs:
            flat = flatten(run.settings)
            run.method = f'{method} [{variant_suffix(flat, differing)}]'
        for conflict in (c for c in conflicts if c.method == method):
            for h, info in conflict.configs.items():
                info['label'] = by_env[conflict.env_name][h][0].method
    return conflicts


def variant_suffix(flat, keys):
    shown = [f'{k.removeprefix("agent.")}={_short(flat.get(k))}' for k in keys]
    if len(shown) <= 3:
        return ', '.join(shown)
    digest = hashlib.sha256(json.dumps([flat.get(k) for k in keys], default=str).encode()).hexdigest()[:6]
    return f'config {digest}'


def _short(value):
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, (list, tuple)):
        return '(' + ','.join(_short(v) for v in value) + ')'
    return str(value)


@dataclasses.dataclass
class Grid:
    """The expected grid and what each cell holds."""

    methods: list
    tasks: list  # environment names
    seeds: list
    runs: list  # every run read (including excluded ones)
    cells: dict  # (method, task, seed) -> list of used runs (more than one = duplicates, reported)
    phases: dict  # method -> phases it has ('offline', 'online')
    origin: str  # where the expected grid comes from (inferred, the command line, a sweep)
    metric: str = 'success'  # what the runs' values are (a METRICS key)

    @property
    def metric_label(self):
        return METRICS[self.metric][0]

    def domains(self):
        return sorted({split_env_name(t)[0] for t in self.tasks}, key=domain_sort_key)

    def domain_tasks(self, domain):
        return [t for t in self.tasks if split_env_name(t)[0] == domain]

    def value(self, method, task, seed, phase):
        """(the metric, None) or (None, reason)."""
        runs = self.cells.get((method, task, seed), [])
        if not runs:
            return None, 'no run'
        values = [(r.end_value(phase), r) for r in runs]
        present = [v for v, _ in values if v is not None]
        if present:
            return present[0], None
        return None, runs[0].missing_reason(phase)

    def seed_values(self, method, task, phase):
        """{seed: the metric} of the seeds present, and {seed: reason} of the missing ones."""
        present, missing = {}, {}
        for seed in self.seeds:
            value, reason = self.value(method, task, seed, phase)
            if value is None:
                missing[seed] = reason
            else:
                present[seed] = value
        return present, missing


def build_grid(runs, methods=None, tasks=None, seeds=None, origin=None, metric='success'):
    """The grid methods x tasks x seeds: given, or inferred from the runs present (every method is expected on
    every task and seed seen). A given method whose runs were separated into config variants is expected as those
    variants."""
    used = [r for r in runs if not r.excluded]
    if origin is None:
        origin = ('inferred from the runs present: every method is expected on every task and seed seen'
                  if methods is None and tasks is None and seeds is None else 'given on the command line')
    if methods is None:
        methods = sorted({r.method for r in used}, key=method_sort_key)
    else:
        expanded = []
        for method in methods:
            variants = sorted({r.method for r in used if r.base_method == method and r.method != method})
            expanded += variants or [method]
        methods = list(dict.fromkeys(expanded))
    tasks = sorted(tasks or {r.env_name for r in used}, key=task_sort_key)
    seeds = sorted(seeds or {r.seed for r in used})
    cells = {}
    for run in used:
        if run.method in methods and run.env_name in tasks and run.seed in seeds:
            cells.setdefault((run.method, run.env_name, run.seed), []).append(run)
    for key in cells:  # duplicates (copies of a run directory): finished, then diverged, then unfinished; newest first
        cells[key].sort(key=lambda r: r.started, reverse=True)
        cells[key].sort(key=lambda r: {'finished': 0, 'diverged': 1}.get(r.status, 2))
    phases = {}
    for method in methods:
        method_runs = [r for r in used if r.method == method]
        phases[method] = [p for p in PHASES if any(r.end_step(p) is not None for r in method_runs)] or list(PHASES)
    return Grid(methods, tasks, seeds, runs, cells, phases, origin, metric)


def load_sweep(name):
    """The runs a sweep expects (sweeps/sweeps.py: a shipped sweep name or a .py file), or None when `name` is not
    a sweep."""
    try:
        from sweeps import sweeps as sweep_lib
    except ImportError:
        return None
    try:
        return sweep_lib.expand(sweep_lib.load(name))
    except sweep_lib.SweepError:
        return None


def resolve_target(runs, sweep=None, save_dir='runs'):
    """(runs directory, expected runs of a sweep or None, sweep name or None) from the report's command line: `runs`
    (its positional argument) is a runs directory, or a sweep whose runs are under `save_dir` (as
    `python -m sweeps.launch` wrote them); `sweep` (--sweep) names the sweep of a runs directory."""
    root = runs
    if not os.path.isdir(root):
        if sweep is None and load_sweep(root) is not None:
            sweep, root = root, save_dir
        else:
            raise SystemExit(f'{runs!r} is not a directory of runs (nor a sweep). Give the folder that main.py or '
                             f'the launcher wrote into (--save_dir), e.g. `python -m sweeps.report runs --out '
                             f'reports/main`, or a sweep: `python -m sweeps.report paper --save_dir runs --out ...`.')
        if not os.path.isdir(root):
            raise SystemExit(f'Sweep {sweep!r}: its runs directory {root!r} (--save_dir) does not exist.')
    expected = None
    if sweep is not None:
        expected = load_sweep(sweep)
        if expected is None:
            raise SystemExit(f'Unknown sweep {sweep!r} (sweeps/sweeps.py: a shipped sweep name or a .py file).')
    return root, expected, sweep


def expected_grid(methods, tasks, seeds, expected=None, sweep=None):
    """(methods, tasks, seeds, origin) of the expected grid: the runs `expected` by a sweep, narrowed to the
    methods, tasks and seeds given (on the command line; None: all of the sweep's), or, without a sweep, those given
    (None for each to infer it from the runs present)."""
    if expected is None:
        return methods, tasks, seeds, None
    sweep_methods = list(dict.fromkeys(r.method for r in expected))
    sweep_tasks = sorted({r.env_name for r in expected}, key=task_sort_key)
    sweep_seeds = sorted({r.seed for r in expected})
    narrow = lambda given, full: full if given is None else [x for x in full if x in given]  # noqa: E731
    origin = f'the sweep {sweep!r}' + (', narrowed on the command line' if methods or tasks or seeds else '')
    return narrow(methods, sweep_methods), narrow(tasks, sweep_tasks), narrow(seeds, sweep_seeds), origin
