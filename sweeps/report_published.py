"""The QAM paper's published numbers, derived from its released data and shipped as one small CSV.

Source: the pickles released with the QAM paper, in `../shared/reference/` (PROTOCOL §12.2):
`qam-exp-data.pkl` (main study: 50 tasks, 10 domains, `all`, 17 methods), `qam-exp-data-quality.pkl`
(data-quality study: 6 datasets, 7 methods) and `qam-exp-data-sensitive.pkl` (QAM-E sensitivity: 10
representative tasks and `all-rep`, 10 variants). Each entry is a (30, 12) array of success fractions,
row j = evaluation at 50,000·(j + 1) total steps, column = seed (RLPD: (10, 12), online steps only).

The shipped file `sweeps/published/qam_paper_results.csv` has one row per (study, key, method, phase):

    study, level, task, method, phase, step, mean, ci95_low, ci95_high, seeds, seed_values

* `level`: task (an environment name), domain (e.g. `cube-double-play`, `cube-double-noisy`) or all
  (`all`: the 50 main tasks; `all-rep`: the 10 representative tasks of the sensitivity study).
* `phase` and `step`: offline at the paper's first evaluation (row 0, step 50,000: where the `mini` sweep's
  offline phase ends) and at its end (row 19, step 1,000,000), offline_to_online (row 29, step 1,500,000),
  online (RLPD only, row 9, step 500,000).
* `mean`: 100 × the mean over the 12 seed columns (exact, rounded to 2 decimals).
* `ci95_low/high`: 95% percentile bootstrap over the 12 per-seed values (PROTOCOL §7), 500,000
  resamples from a fixed seed. Domain and `all` rows are bootstrapped over their own seed columns: in
  the released data these are per-seed averages whose columns are not aligned with the task columns.
* `seed_values`: task rows only, the 12 per-seed successes in percent (integers: 50 episodes each), in
  the pickle's column order, separated by spaces; they let a report bootstrap the published numbers over
  any subset of tasks and compute rliable statistics for them.

`sweeps/published/qam_paper_curves.csv` has the mean learning curves of the domain and aggregate entries (one row per
study, key and method: `first_step`, `step_interval`, and the mean success in % over the seeds at every evaluation,
separated by spaces), drawn next to ours when a report's runs follow the paper's schedule.

Re-derive both (about a minute on 2 cores) and compare with the committed files (git diff):

    python -m sweeps.report_published --reference_dir=../shared/reference

The report (sweeps/report.py) reads them through `Published`, and sets the paper's number beside each of ours with
`paper_step` and `paper_row` (the paper's row at the step where our runs end a phase, else at the paper's end of that
phase) and `paper_curve_key` (the paper's curve of a learning-curve panel with exactly its tasks).
"""

import argparse
import csv
import os
import pickle

import numpy as np

from sweeps.report_runs import split_env_name
from utils import files

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED_CSV = os.path.join(HERE, 'published', 'qam_paper_results.csv')
PUBLISHED_CURVES_CSV = os.path.join(HERE, 'published', 'qam_paper_curves.csv')
DEFAULT_REFERENCE_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'shared', 'reference')
STUDIES = (  # study name, pickle file
    ('main', 'qam-exp-data.pkl'),
    ('data_quality', 'qam-exp-data-quality.pkl'),
    ('sensitivity', 'qam-exp-data-sensitive.pkl'),
)
EVAL_INTERVAL = 50_000
# (phase, row of the (30, 12) array): the first evaluation and the ends of the two phases; RLPD's (10, 12) arrays
# have only the online phase.
PHASE_ROWS = (('offline', 0), ('offline', 19), ('offline_to_online', 29))
ONLINE_ONLY_ROW = 9
PAPER_OFFLINE_STEPS = 1_000_000  # the paper's schedule: evaluations every 50K steps, 1M offline then 500K online
NUM_RESAMPLES = 500_000  # as the reference (PROTOCOL §7)
BOOTSTRAP_SEED = 0
COLUMNS = ('study', 'level', 'task', 'method', 'phase', 'step', 'mean', 'ci95_low', 'ci95_high', 'seeds', 'seed_values')
CURVE_COLUMNS = ('study', 'level', 'task', 'method', 'first_step', 'step_interval', 'mean')


def key_level(key):
    if 'singletask' in key:
        return 'task'
    return 'all' if key.startswith('all') else 'domain'


def resample_counts(num_seeds, num_resamples, seed):
    """Bootstrap resamples of `num_seeds` values as counts (num_resamples, num_seeds): row r says how often each
    value was drawn, so the resampled means of many value vectors V are V @ counts.T / num_seeds."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=num_resamples).astype(np.float64)


def percentile_intervals(values, counts, chunk=16):
    """95% percentile-bootstrap intervals of the mean of each row of `values` (K, n): (K, 2)."""
    values = np.asarray(values, np.float64)
    out = np.empty((len(values), 2))
    for start in range(0, len(values), chunk):
        means = values[start : start + chunk] @ counts.T / counts.shape[1]
        out[start : start + chunk] = np.percentile(means, [2.5, 97.5], axis=1).T
    return out


def derive(reference_dir=DEFAULT_REFERENCE_DIR, num_resamples=NUM_RESAMPLES, seed=BOOTSTRAP_SEED, keep=None):
    """Rows of the published CSV (dicts with COLUMNS), from the released pickles.

    `keep(study, key, method)` selects entries (default: all); the result of a row does not depend on which other
    rows are derived (every row uses the same resample counts), so a subset re-derives exactly."""
    entries = []  # (study, key, method, phase, step, per-seed fractions)
    for study, filename in STUDIES:
        with open(os.path.join(reference_dir, filename), 'rb') as f:
            data = pickle.load(f)
        for (key, method), array in data.items():
            if keep is not None and not keep(study, key, method):
                continue
            array = np.asarray(array, np.float64)
            if array.shape[0] == 30:
                phases = [(phase, row, EVAL_INTERVAL * (row + 1)) for phase, row in PHASE_ROWS]
            elif array.shape[0] == 10:
                phases = [('online', ONLINE_ONLY_ROW, EVAL_INTERVAL * (ONLINE_ONLY_ROW + 1))]
            else:
                raise ValueError(f'Unexpected shape {array.shape} for {(key, method)} in {filename}.')
            for phase, row, step in phases:
                entries.append((study, key, method, phase, step, array[row]))
    if not entries:
        return []
    num_seeds = {len(e[5]) for e in entries}
    if len(num_seeds) != 1:
        raise ValueError(f'Entries have different numbers of seeds: {sorted(num_seeds)}.')
    counts = resample_counts(num_seeds.pop(), num_resamples, seed)
    percent = np.stack([100 * e[5] for e in entries])
    intervals = percentile_intervals(percent, counts)
    rows = []
    for (study, key, method, phase, step, fractions), values, (low, high) in zip(entries, percent, intervals):
        level = key_level(key)
        rows.append(dict(
            study=study, level=level, task=key, method=method, phase=phase, step=step,
            mean=f'{values.mean():.2f}', ci95_low=f'{low:.2f}', ci95_high=f'{high:.2f}', seeds=len(values),
            seed_values=' '.join(str(int(round(v))) for v in values) if level == 'task' else '',
        ))
    order = {study: i for i, (study, _) in enumerate(STUDIES)}
    levels = {'all': 0, 'domain': 1, 'task': 2}
    rows.sort(key=lambda r: (order[r['study']], levels[r['level']], r['task'], r['method'], r['step']))
    return rows


def derive_curves(reference_dir=DEFAULT_REFERENCE_DIR):
    """Rows of the published curves CSV: the mean over seeds (%) at every evaluation of each domain and aggregate."""
    rows = []
    for study, filename in STUDIES:
        with open(os.path.join(reference_dir, filename), 'rb') as f:
            data = pickle.load(f)
        for (key, method), array in data.items():
            if key_level(key) == 'task':
                continue
            means = 100 * np.asarray(array, np.float64).mean(axis=1)
            rows.append(dict(study=study, level=key_level(key), task=key, method=method, first_step=EVAL_INTERVAL,
                             step_interval=EVAL_INTERVAL, mean=' '.join(f'{m:.2f}' for m in means)))
    order = {study: i for i, (study, _) in enumerate(STUDIES)}
    rows.sort(key=lambda r: (order[r['study']], r['level'] != 'all', r['task'], r['method']))
    return rows


def write_csv(rows, path, columns=COLUMNS):
    with files.atomic_write(path, newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)


class Published:
    """The shipped published numbers, looked up by (task or domain key, method, phase[, step]).

    Our phases are 'offline' and 'online' (end of the online phase); the paper's 'online' is
    'offline_to_online' for every method with an offline phase and 'online' for RLPD (online only)."""

    def __init__(self, path=PUBLISHED_CSV, curves_path=PUBLISHED_CURVES_CSV):
        self.path = path
        self.rows, self.curves = {}, {}
        if curves_path and os.path.exists(curves_path):
            with open(curves_path, newline='') as f:
                for row in csv.DictReader(f):
                    means = np.array([float(v) for v in row['mean'].split()])
                    steps = int(row['first_step']) + int(row['step_interval']) * np.arange(len(means))
                    self.curves[(row['task'], row['method'])] = (steps, means)
        with open(path, newline='') as f:
            for row in csv.DictReader(f):
                entry = dict(row)
                for name in ('mean', 'ci95_low', 'ci95_high'):
                    entry[name] = float(row[name])
                entry['step'], entry['seeds'] = int(row['step']), int(row['seeds'])
                seeds = row['seed_values'].split()
                entry['seed_values'] = np.array([float(v) for v in seeds]) if seeds else None
                self.rows[(row['task'], row['method'], row['phase'], entry['step'])] = entry
        self.methods = sorted({m for _, m, _, _ in self.rows})
        self.end_steps = {}  # (key, method, paper phase) -> the step of its end-of-phase row (the largest)
        for key, method, phase, step in self.rows:
            self.end_steps[(key, method, phase)] = max(step, self.end_steps.get((key, method, phase), 0))
        self._lower = {m.lower(): m for m in self.methods}

    @classmethod
    def empty(cls):
        """No published numbers: tables without "(paper)" rows, curves without the paper's."""
        published = cls.__new__(cls)
        published.path, published.rows, published.curves, published.methods = '', {}, {}, []
        published.end_steps, published._lower = {}, {}
        return published

    def has_task(self, task):
        """Whether the paper has any number for this environment name (the paper's tasks are OGBench's)."""
        return any(key == task for key, _, _, _ in self.rows)

    def method_name(self, method):
        """The paper's name of a method label (case-insensitive), or None."""
        return self._lower.get(method.lower())

    def get(self, key, method, phase, step=None):
        """The row for one of our phases ('offline' | 'online') at the paper's end of that phase, or at total step
        `step` (None when the paper has no number at that step), or None."""
        name = self.method_name(method)
        if name is None:
            return None
        for paper_phase in (('offline_to_online', 'online') if phase == 'online' else (phase,)):
            at = self.end_steps.get((key, name, paper_phase)) if step is None else step
            row = self.rows.get((key, name, paper_phase, at))
            if row is not None:
                return row
        return None

    def curve(self, key, method):
        """(steps, mean success %) of a domain or aggregate entry, or None. Online-only curves (RLPD) count their
        steps from the start of the online phase."""
        name = self.method_name(method)
        return self.curves.get((key, name)) if name else None

    def tasks(self, level='task', study=None):
        return sorted({k for (k, _, _, _), r in self.rows.items()
                       if r['level'] == level and (study is None or r['study'] == study)})


def paper_step(grid, method, phase):
    """The total step at which all of `method`'s runs end `phase`, or None when they end it at different steps.
    A method without runs yet takes the step at which every other run ends it, so that a partly run sweep (the
    `mini` sweep ends its offline phase at 50,000) shows the paper's number at that step for every method, not
    its end-of-phase number for the methods not run yet."""
    own = {r.end_step(phase) for r in grid.runs if r.method == method} - {None}
    steps = own or {r.end_step(phase) for r in grid.runs} - {None}
    return steps.pop() if len(steps) == 1 else None


def paper_row(published, key, method, phase, step=None):
    """The paper's row at our runs' step where it has a number there (its first evaluation, step 50,000, is where
    the `mini` sweep's offline phase ends), else at the end of its phase."""
    return (step is not None and published.get(key, method, phase, step)) or published.get(key, method, phase)


def paper_curve_key(published, title, tasks):
    """The paper's domain or aggregate entry that covers exactly these tasks, or None."""
    if title == 'all':
        return 'all' if sorted(tasks) == published.tasks(study='main') else None
    paper_tasks = [t for t in published.tasks() if split_env_name(t)[0] == title]
    return title if sorted(tasks) == sorted(paper_tasks) else None


def main(argv=None):
    parser = argparse.ArgumentParser(description="Derive the published-numbers CSV from the QAM paper's released data.")
    parser.add_argument('--reference_dir', default=DEFAULT_REFERENCE_DIR, help='Folder with qam-exp-data*.pkl.')
    parser.add_argument('--out', default=PUBLISHED_CSV, help='CSV of the end-of-phase numbers to write.')
    parser.add_argument('--curves_out', default=PUBLISHED_CURVES_CSV, help='CSV of the mean curves to write.')
    parser.add_argument('--bootstrap_samples', type=int, default=NUM_RESAMPLES,
                        help='Bootstrap resamples per interval.')
    parser.add_argument('--seed', type=int, default=BOOTSTRAP_SEED, help='Seed of the bootstrap resamples.')
    args = parser.parse_args(argv)
    rows = derive(args.reference_dir, args.bootstrap_samples, args.seed)
    write_csv(rows, args.out)
    print(f'Wrote {len(rows)} rows to {args.out}.')
    curves = derive_curves(args.reference_dir)
    write_csv(curves, args.curves_out, CURVE_COLUMNS)
    print(f'Wrote {len(curves)} curves to {args.curves_out}.')


if __name__ == '__main__':
    main()
