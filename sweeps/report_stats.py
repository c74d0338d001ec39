"""Statistics of the report: means with percentile-bootstrap intervals (PROTOCOL §7) and rliable aggregates.

Cell statistics (success in %):
* task: mean over the seeds present; 95% interval = 2.5% and 97.5% quantiles of the means of B resamples of
  the per-seed values with replacement (percentile bootstrap). No interval from fewer than 2 seeds.
* domain / aggregate ("all"): mean of the task means. When every task has the same seeds (the protocol's
  case), the interval is the percentile bootstrap of the per-seed values, each seed's value being its average
  over the tasks (PROTOCOL §7). When the seeds differ between tasks, each task's seeds are resampled
  independently and the resampled task means averaged (stratified bootstrap); the cell says so. A domain or
  aggregate with a task that has no value at all has no number: averaging over fewer tasks changes what it means.

rliable (Agarwal et al., 2021): scores are per-run success fractions arranged runs x tasks; IQM and mean with
stratified-bootstrap intervals, score-distribution performance profiles, and the probability of improvement
P(X > Y) = mean over tasks of P(x > y) + P(x = y) / 2 for a run x of X and y of Y on that task.
"""

import contextlib
import dataclasses
import warnings

import numpy as np


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


# ------------------------------------------------------------------------------------------------- rliable


@contextlib.contextmanager
def _quiet():
    """rliable passes a seeded RandomState to arch, which warns that the argument is deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='random_state is deprecated', category=FutureWarning)
        yield


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

    with _quiet():
        return rly.get_interval_estimates(score_dict, aggregate, reps=reps, random_state=np.random.RandomState(seed))


def rliable_profiles(score_dict, taus, reps, seed=0):
    """Score-distribution performance profiles: the fraction of runs (over all tasks) with score > tau, with
    stratified-bootstrap intervals (rliable.library.create_performance_profile, with a seeded random state)."""
    from rliable import library as rly

    taus = np.asarray(taus)

    def profile(scores):
        return np.array([np.mean(scores > tau) for tau in taus])

    with _quiet():
        return rly.get_interval_estimates(score_dict, profile, reps=reps, random_state=np.random.RandomState(seed))


def rliable_improvement(pairs, reps, seed=0):
    """Probability of improvement of X over Y for {'X,Y': (scores_x, scores_y)}, with stratified independent
    bootstrap intervals (rliable.library.get_interval_estimates on pairs)."""
    from rliable import library as rly

    if not pairs:
        return {}, {}
    with _quiet():
        return rly.get_interval_estimates(pairs, probability_of_improvement, reps=reps,
                                          random_state=np.random.RandomState(seed))
