"""Statistics of the report: means with percentile-bootstrap intervals (PROTOCOL §7) and rliable aggregates.

Cell statistics (success in %):
* task: mean over the seeds present; 95% interval = 2.5% and 97.5% quantiles of the means of B resamples of
  the per-seed values with replacement (percentile bootstrap). No interval from fewer than 2 seeds.
* domain / aggregate ("all"): mean of the task means. When every task has the same seeds (the protocol's
  case), the interval is the percentile bootstrap of the per-seed values, each seed's value being its average
  over the tasks (PROTOCOL §7). When the seeds differ between tasks, each task's seeds are resampled
  independently and the resampled task means averaged (stratified bootstrap); the cell says so. A domain or
  aggregate with a task that has no value at all has no number: averaging over fewer tasks changes what it means.

compute_stats gives every cell of the report's tables (each method and phase, per task, per domain and over all
tasks); published_stats the paper's number for each of those cells (sweeps/report_published.py), recomputed from
its per-seed values when our tasks are not exactly the paper's.

rliable (Agarwal et al., 2021): scores are per-run success fractions arranged runs x tasks; IQM and mean with
stratified-bootstrap intervals, score-distribution performance profiles, and the probability of improvement
P(X > Y) = mean over tasks of P(x > y) + P(x = y) / 2 for a run x of X and y of Y on that task. score_matrices
arranges ours and the paper's so.
"""

import contextlib
import dataclasses
import warnings

import numpy as np

from sweeps.report_published import paper_row, paper_step
from sweeps.report_runs import PHASES, base_method, plural, split_env_name


@dataclasses.dataclass
class Stat:
    mean: float = None  # None: no number (nothing present, or a task missing from a domain/aggregate)
    low: float = None
    high: float = None
    n: int = 0  # runs averaged
    expected: int = 0  # runs expected
    tasks: int = 1  # tasks with a value
    tasks_expected: int = 1
    method: str = 'seeds'  # how the interval was made: seeds | paired | stratified
    missing: list = dataclasses.field(default_factory=list)  # (task, seed, reason)
    note: str = ''

    @property
    def complete(self):
        return self.mean is not None and self.n == self.expected and self.tasks == self.tasks_expected


class Bootstrap:
    """Percentile-bootstrap intervals of means, with `num_resamples` resamples from a fixed seed."""

    def __init__(self, num_resamples=500_000, seed=0):
        self.num_resamples, self.seed = int(num_resamples), seed
        self._counts = {}

    def counts(self, n):
        """(B, n) resample counts: row r says how often each of n values is drawn in resample r."""
        if n not in self._counts:
            rng = np.random.default_rng([self.seed, n])
            self._counts[n] = rng.multinomial(n, np.full(n, 1.0 / n), size=self.num_resamples).astype(np.float64)
        return self._counts[n]

    def resampled_means(self, values):
        values = np.asarray(values, np.float64)
        return self.counts(len(values)) @ values / len(values)

    def interval(self, values):
        """(low, high): the 2.5% and 97.5% quantiles of the resampled means; (None, None) for fewer than 2 values."""
        if len(values) < 2:
            return None, None
        low, high = np.percentile(self.resampled_means(values), [2.5, 97.5])
        return float(low), float(high)

    def stratified_interval(self, groups, stream=0):
        """Interval of the mean of group means, each group's values resampled independently."""
        rng = np.random.default_rng([self.seed, 1_000_003, *np.atleast_1d(stream).tolist()])
        total = np.zeros(self.num_resamples)
        for values in groups:
            values = np.asarray(values, np.float64)
            idx = rng.integers(0, len(values), size=(self.num_resamples, len(values)))
            total += values[idx].mean(axis=1)
        low, high = np.percentile(total / len(groups), [2.5, 97.5])
        return float(low), float(high)

    def task_stat(self, present, missing, task=''):
        """Stat of one task from {seed: value} present and {seed: reason} missing."""
        values = [present[s] for s in sorted(present)]
        stat = Stat(n=len(values), expected=len(present) + len(missing),
                    missing=[(task, s, r) for s, r in sorted(missing.items())])
        if values:
            stat.mean = float(np.mean(values))
            stat.low, stat.high = self.interval(values)
        return stat

    def pooled_stat(self, per_task, stream=0):
        """Stat of a domain or aggregate from {task: ({seed: value} present, {seed: reason} missing)}."""
        stat = Stat(tasks_expected=len(per_task), tasks=sum(1 for p, _ in per_task.values() if p),
                    n=sum(len(p) for p, _ in per_task.values()),
                    expected=sum(len(p) + len(m) for p, m in per_task.values()),
                    missing=[(t, s, r) for t, (_, m) in per_task.items() for s, r in sorted(m.items())])
        if stat.tasks < stat.tasks_expected or not per_task:
            stat.note = f'{stat.tasks_expected - stat.tasks} of {stat.tasks_expected} tasks have no value'
            return stat
        presents = [p for p, _ in per_task.values()]
        stat.mean = float(np.mean([np.mean(list(p.values())) for p in presents]))
        seed_sets = {tuple(sorted(p)) for p in presents}
        if len(seed_sets) == 1:
            seeds = sorted(presents[0])
            per_seed = [np.mean([p[s] for p in presents]) for s in seeds]  # each seed's average over the tasks
            stat.low, stat.high = self.interval(per_seed)
            stat.method = 'paired'
        else:
            groups = [[p[s] for s in sorted(p)] for p in presents]
            if any(len(g) > 1 for g in groups):
                stat.low, stat.high = self.stratified_interval(groups, stream)
            stat.method = 'stratified'
            stat.note = 'seeds differ between tasks: stratified bootstrap'
        return stat


# -------------------------------------------------------------------------------------------- report cells


def compute_stats(grid, boot):
    """{(level, key, method, phase): Stat} for level task (key: env name), domain and all; phases a method did
    not run are absent (n/a)."""
    stats = {}
    for m, method in enumerate(grid.methods):
        for p, phase in enumerate(PHASES):
            if phase not in grid.phases[method]:
                continue
            per_task = {t: grid.seed_values(method, t, phase) for t in grid.tasks}
            for task, (present, missing) in per_task.items():
                stats[('task', task, method, phase)] = boot.task_stat(present, missing, task)
            for d, domain in enumerate(grid.domains()):
                stats[('domain', domain, method, phase)] = boot.pooled_stat(
                    {t: per_task[t] for t in grid.domain_tasks(domain)}, stream=(m, p, d + 1))
            stats[('all', 'all', method, phase)] = boot.pooled_stat(per_task, stream=(m, p, 0))
    return stats


def stat_from_row(row):
    return Stat(mean=row['mean'], low=row['ci95_low'], high=row['ci95_high'], n=row['seeds'], expected=row['seeds'])


def published_stat(published, boot, level, key, tasks, method, phase, step=None):
    """(Stat of the paper's number for the same cell, recomputed?) or (None, False) when the paper has none.

    A domain or `all` cell whose tasks are exactly the paper's is the paper's row; over another set of tasks
    it is recomputed from the paper's per-seed task values (mean of the task means; the interval from the
    per-seed averages over those tasks, the paper's seed columns taken as aligned). `step`: see paper_row."""
    method = base_method(method)
    if level == 'task' or len(tasks) == 1:  # a domain or aggregate of one task is that task
        row = paper_row(published, key if level == 'task' else tasks[0], method, phase, step)
        return (stat_from_row(row), False) if row else (None, False)
    rows = {t: paper_row(published, t, method, phase, step) for t in tasks}
    if not tasks or any(r is None or r['seed_values'] is None for r in rows.values()):
        return None, False
    if len({r['step'] for r in rows.values()}) > 1:  # some tasks at our step, some at the paper's end: no number
        return None, False
    domains = {split_env_name(t)[0] for t in tasks}
    paper_key = key if level == 'domain' else 'all' if len(domains) > 1 else domains.pop()  # all of one domain
    row = paper_row(published, paper_key, method, phase, next(iter(rows.values()))['step'])
    if row is not None:
        if paper_key == 'all':
            paper_tasks = published.tasks(study=row['study'])
        else:
            paper_tasks = [t for t in published.tasks() if split_env_name(t)[0] == paper_key]
        if sorted(paper_tasks) == sorted(tasks):
            return stat_from_row(row), False
    per_task = {t: ({i: v for i, v in enumerate(r['seed_values'])}, {}) for t, r in rows.items()}
    stat = boot.pooled_stat(per_task)
    stat.note = f'paper, recomputed over {plural(len(tasks), "task")}'
    return stat, True


def published_stats(published, boot, grid, stats):
    out = {}
    groups = {'all': grid.tasks, **{d: grid.domain_tasks(d) for d in grid.domains()}}
    for (level, key, method, phase) in stats:
        tasks = [key] if level == 'task' else groups[key]
        out[(level, key, method, phase)] = published_stat(published, boot, level, key, tasks, method, phase,
                                                          paper_step(grid, method, phase))
    return out


# ------------------------------------------------------------------------------------------------- rliable


@contextlib.contextmanager
def _seeded_rliable(seed):
    """Makes rliable's bootstrap reproducible: rliable 1.2's StratifiedBootstrap draws its resamples from numpy's
    global generator (np.random.choice), whatever random_state it is given, so that generator is seeded here and
    restored afterwards. Also silences arch's warning that the random_state argument is deprecated."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='random_state is deprecated', category=FutureWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(saved)


def probability_of_improvement(scores_x, scores_y):
    """rliable's probability of improvement (metrics.probability_of_improvement: a Mann-Whitney U per task),
    computed by counting pairs so that it is fast enough to bootstrap: mean over tasks of P(x > y) + P(x = y)/2."""
    x, y = np.asarray(scores_x)[:, None, :], np.asarray(scores_y)[None, :, :]
    return float(np.mean(np.mean((x > y) + 0.5 * (x == y), axis=(0, 1))))


def rliable_aggregates(score_dict, reps, seed=0):
    """IQM and mean of {name: (runs, tasks) scores}: point estimates {name: [iqm, mean]} and intervals
    {name: (2, 2) array, row 0 lower, row 1 upper}."""
    from rliable import library as rly
    from rliable import metrics

    def aggregate(scores):
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])

    with _seeded_rliable(seed) as random_state:
        return rly.get_interval_estimates(score_dict, aggregate, reps=reps, random_state=random_state)


def rliable_profiles(score_dict, taus, reps, seed=0):
    """Score-distribution performance profiles: the fraction of runs (over all tasks) with score > tau, with
    stratified-bootstrap intervals (rliable.library.create_performance_profile, with a seeded random state)."""
    from rliable import library as rly

    taus = np.asarray(taus)

    def profile(scores):
        return np.array([np.mean(scores > tau) for tau in taus])

    with _seeded_rliable(seed) as random_state:
        return rly.get_interval_estimates(score_dict, profile, reps=reps, random_state=random_state)


def rliable_improvement(pairs, reps, seed=0):
    """Probability of improvement of X over Y for {'X,Y': (scores_x, scores_y)}, with stratified independent
    bootstrap intervals (rliable.library.get_interval_estimates on pairs)."""
    from rliable import library as rly

    if not pairs:
        return {}, {}
    with _seeded_rliable(seed) as random_state:
        return rly.get_interval_estimates(pairs, probability_of_improvement, reps=reps, random_state=random_state)


def score_matrices(grid, published, phase):
    """{name: (runs, tasks) success fractions} for our methods (the seeds with a value on every task) and the
    paper's (its 12 seeds on the same tasks), and notes on what was left out."""
    ours, paper, notes = {}, {}, []
    for method in grid.methods:
        if phase not in grid.phases[method]:
            continue
        values = {s: [grid.value(method, t, s, phase)[0] for t in grid.tasks] for s in grid.seeds}
        seeds = [s for s, v in values.items() if all(x is not None for x in v)]
        if not seeds:
            notes.append(f'{method}: left out (no seed has a value on every task)')
            continue
        if len(seeds) < len(grid.seeds):
            notes.append(f'{method}: {len(seeds)} of {len(grid.seeds)} seeds used (those with a value on every task)')
        ours[method] = np.array([values[s] for s in seeds]) / 100
        name = published.method_name(base_method(method))
        step = paper_step(grid, method, phase)
        rows = [paper_row(published, t, name, phase, step) for t in grid.tasks] if name else [None]
        if all(r is not None and r['seed_values'] is not None for r in rows):
            paper[f'{name} (paper)'] = np.stack([r['seed_values'] for r in rows], axis=1) / 100
    return ours, paper, notes
