"""Paper tables and figures from a folder of finished runs, next to the QAM paper's published numbers.

    python -m sweeps.report runs/ --out reports/main                           # a folder of runs
    python -m sweeps.report paper --save_dir runs/ --out reports/paper         # a sweep (sweeps/sweeps.py)

reads every run directory under `runs/` (written by main.py or sweeps.launch) and writes, under --out:

* report.md: the whole report (grid, missing/diverged/unfinished runs, config conflicts, every table, figures);
* tables/aggregate.{md,tex,csv}: success (%) over all tasks at the end of the offline and online phases (or D4RL's
  normalised score with --metric=normalized_score, where the paper has no numbers);
* tables/domains_{offline,online}.*: per domain (and all); tables/tasks_{offline,online}.*: per task, by domain;
* tables/rliable.*: IQM and mean with stratified-bootstrap intervals; tables/improvement.*: P(QAM > baseline);
  every table has the paper's number under each of our rows ("(paper)" rows);
* figures/curves.{png,pdf}: learning curves per domain; figures/{aggregates,profiles,improvement}_<phase>.*;
* runs.csv (one line per run directory), missing.csv (every missing method x task x seed x phase, with why),
  results.csv (every table cell, long form).

Statistics (PROTOCOL §7; sweeps/report_stats.py): task = mean over seeds; domain = mean of its task means;
all = mean over the tasks; 95% percentile-bootstrap intervals over seeds (for a domain or all: over each seed's
average over the tasks). The expected grid is the sweep's runs, or every method x task x seed seen in the folder
(narrowed or set by --methods, --tasks, --seeds); a cell with fewer seeds than expected is marked with the count,
and a domain or aggregate with a task that has no value is shown without a number. Runs of one method with
different settings on the same task are separated into labelled variants (or, with --config_policy=newest, the
older ones are left out), and both cases are listed.
"""

import argparse
import collections
import csv
import datetime
import os
import shlex
import sys

import numpy as np

from sweeps import hyperparameters as hp
from sweeps import report_figures as figures
from sweeps import report_runs as runs_lib
from sweeps import report_tables as tables
from sweeps.report_published import PUBLISHED_CSV, Published
from sweeps.report_runs import PHASES, split_env_name
from sweeps.report_stats import Bootstrap, Stat, rliable_aggregates, rliable_improvement, rliable_profiles

PHASE_TITLES = {'offline': 'end of the offline phase', 'online': 'end of the online phase'}
PHASE_COLUMNS = {'offline': 'offline', 'online': 'online'}
QAM_FAMILY = ('QAM', 'QAM-F', 'QAM-E')


def base_method(method):
    return method.split(' [')[0]


def plural(n, word):
    return f'{n} {word}' + ('s' if n != 1 else '')


# ------------------------------------------------------------------------------------------- statistics


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


def paper_step(grid, method, phase):
    """The total step at which all of `method`'s runs end `phase`, or None when they end it at different steps."""
    steps = {r.end_step(phase) for r in grid.runs if r.method == method} - {None}
    return steps.pop() if len(steps) == 1 else None


def paper_row(published, key, method, phase, step=None):
    """The paper's row at our runs' step where it has a number there (its first evaluation, step 50,000, is where
    the `mini` sweep's offline phase ends), else at the end of its phase."""
    return (step is not None and published.get(key, method, phase, step)) or published.get(key, method, phase)


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


# ---------------------------------------------------------------------------------------------- tables


def phase_steps(grid):
    """'offline: step 100; online: step 160' from the runs of the grid (the paper: 1,000,000 and 1,500,000)."""
    runs = [r for rs in grid.cells.values() for r in rs[:1]]
    parts = []
    for phase, label, keep in (('offline', 'offline', lambda r: True), ('online', 'online', lambda r: r.offline_steps),
                               ('online', 'online only', lambda r: not r.offline_steps)):
        steps = sorted({r.end_step(phase) for r in runs if keep(r)} - {None})
        if steps:
            parts.append(f'{label}: step {" / ".join(f"{s:,}" for s in steps)}')
    return '; '.join(parts)


def grid_caption(grid, boot, with_paper=True):
    seeds = ', '.join(str(s) for s in grid.seeds)
    paper_steps = (' (paper: offline 1,000,000; online 1,500,000, RLPD 500,000; where our runs end a phase at a step '
                   'the paper evaluated, e.g. its first evaluation at 50,000, the paper\'s number is from that step)'
                   if with_paper else '')
    paper_rows = (f'*(paper)*: the QAM paper\'s number for the same cell ({tables.MARK_RECOMPUTED}: recomputed over the '
                  f'same tasks from its per-seed values). ' if with_paper else '')
    return (f'End of phase here: {phase_steps(grid)}{paper_steps}. '
            f'{grid.metric_label.capitalize()}: mean over seeds [95% percentile-bootstrap interval, '
            f'{boot.num_resamples:,} resamples]; '
            f'domain = mean of its tasks, all = mean over the {plural(len(grid.tasks), "task")}. Expected: '
            f'{len(grid.seeds)} seeds per task ({seeds}). **Bold**: best of our methods in the column. '
            f'{paper_rows}{tables.MARK_INCOMPLETE} n/N: fewer runs than expected '
            f'(missing.csv says which and why); — : no value; n/a: phase not run (RLPD is online only).')


def method_rows(grid, cell, published):
    """Our row and, when the paper has the method, its row, for every method; `cell(method, source)` -> Cell."""
    rows = []
    for method in grid.methods:
        rows.append(tables.Row(method, cell(method, 'ours')))
        name = published.method_name(base_method(method))
        if name:
            rows.append(tables.Row(f'{name} (paper)', cell(method, 'paper'), kind='paper'))
    return rows


def make_cell(stats, pub_stats, level, key, method, phase, source):
    if source == 'ours':
        stat = stats.get((level, key, method, phase))
        return tables.Cell(stat, tables.cell_marks(stat))
    if (level, key, method, phase) not in stats:
        return tables.Cell(None)
    stat, recomputed = pub_stats[(level, key, method, phase)]
    if stat is None:
        return tables.Cell(Stat(note='not in the paper'))
    return tables.Cell(stat, tables.cell_marks(stat, recomputed))


def build_tables(grid, stats, pub_stats, published, boot):
    caption = grid_caption(grid, boot, with_paper=bool(published.rows))
    out = {}

    def cell_for(level, key, phase):
        return lambda method, source: make_cell(stats, pub_stats, level, key, method, phase, source)

    columns = [p for p in PHASES if any(p in grid.phases[m] for m in grid.methods)]
    out['aggregate'] = [tables.Table(
        'aggregate', f'Aggregate over {plural(len(grid.tasks), "task")}: {grid.metric_label} at the end of each phase',
        caption, 'method',
        [PHASE_TITLES[p] for p in columns],
        method_rows(grid, lambda m, s: [cell_for('all', 'all', p)(m, s) for p in columns], published),
    ).mark_best()]
    domains = grid.domains()
    for phase in columns:
        keys = [('domain', d) for d in domains] + ([('all', 'all')] if len(domains) > 1 else [])
        out[f'domains_{phase}'] = [tables.Table(
            f'domains_{phase}', f'Domains: {grid.metric_label} at the {PHASE_TITLES[phase]}', caption, 'method',
            [f'{k} ({len(grid.domain_tasks(k)) if lvl == "domain" else len(grid.tasks)})' for lvl, k in keys],
            method_rows(grid, lambda m, s: [cell_for(lvl, k, phase)(m, s) for lvl, k in keys], published),
        ).mark_best()]
        task_tables = []
        for domain in domains:
            tasks = grid.domain_tasks(domain)
            keys = [('task', t) for t in tasks] + [('domain', domain)]
            task_tables.append(tables.Table(
                f'tasks_{phase}', f'{domain}: {grid.metric_label} per task at the {PHASE_TITLES[phase]}', caption,
                'method',
                [f'task{split_env_name(t)[1]}' for t in tasks] + [f'{domain} ({plural(len(tasks), "task")})'],
                method_rows(grid, lambda m, s: [cell_for(lvl, k, phase)(m, s) for lvl, k in keys], published),
            ).mark_best())
        out[f'tasks_{phase}'] = task_tables
    return out


# --------------------------------------------------------------------------------------------- rliable


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


def focus_methods(methods, chosen):
    if chosen:
        return [m for m in methods if m in chosen or base_method(m) in chosen]
    return [m for m in methods if base_method(m) in QAM_FAMILY]


def rliable_section(grid, published, args, fig_dir):
    """rliable tables (IQM/mean; probability of improvement) and figures for each phase."""
    agg_rows, poi_rows, notes, figure_paths = {}, {}, [], []
    columns, poi_columns = [], []
    taus = np.linspace(0, 1, 51)
    for phase in PHASES:
        ours, paper, phase_notes = score_matrices(grid, published, phase)
        notes += [f'{PHASE_TITLES[phase]}: {n}' for n in phase_notes]
        if not ours:
            continue
        scores = {**ours, **paper}
        points, intervals = rliable_aggregates(scores, args.rliable_reps, args.bootstrap_seed)
        columns += [f'IQM, {phase}', f'mean, {phase}']
        for name, matrix in scores.items():
            stats = [Stat(mean=100 * points[name][k], low=100 * intervals[name][0][k], high=100 * intervals[name][1][k],
                          n=matrix.shape[0] * matrix.shape[1], expected=matrix.shape[0] * matrix.shape[1],
                          method='stratified (rliable)') for k in range(2)]
            agg_rows.setdefault(name, {}).update({f'IQM, {phase}': stats[0], f'mean, {phase}': stats[1]})
        names = [r.label for r in _interleave([tables.Row(n, [], 'paper' if n in paper else 'ours') for n in scores])]
        figure_paths += figures.interval_estimates(
            {n: 100 * points[n] for n in names}, {n: 100 * intervals[n] for n in names}, names, ['IQM', 'mean'],
            fig_dir, f'aggregates_{phase}', f'{PHASE_TITLES[phase]} ({plural(len(grid.tasks), "task")})')
        profiles, profile_cis = rliable_profiles(scores, taus, args.rliable_reps, args.bootstrap_seed)
        figure_paths += figures.performance_profiles(taus, profiles, profile_cis, names, fig_dir, f'profiles_{phase}',
                                                     f'Performance profiles, {PHASE_TITLES[phase]}')
        focus = focus_methods(list(ours), args.poi_methods)
        pairs = {}
        for x in focus:
            for y in ours:
                if y not in focus:
                    pairs[(x, y, 'ours')] = (ours[x], ours[y])
                    px, py = (f'{published.method_name(base_method(m))} (paper)' for m in (x, y))
                    if px in paper and py in paper:
                        pairs[(x, y, 'paper')] = (paper[px], paper[py])
        if not pairs:
            notes.append(f'{PHASE_TITLES[phase]}: no probability of improvement (needs a QAM method and a baseline; '
                         f'--poi_methods picks the methods to compare)')
            continue
        poi, poi_cis = rliable_improvement(pairs, args.rliable_reps, args.bootstrap_seed)
        poi_columns.append(phase)
        for (x, y, source), value in poi.items():
            low, high = np.ravel(poi_cis[(x, y, source)])[:2]
            poi_rows.setdefault((x, y), {})[(phase, source)] = Stat(mean=float(value), low=float(low), high=float(high),
                                                                   n=1, expected=1, method='stratified (rliable)')
        figure_paths += figures.improvement(poi, poi_cis, fig_dir, f'improvement_{phase}',
                                            f'Probability of improvement, {PHASE_TITLES[phase]}')
    out = []
    if agg_rows:
        rows = [tables.Row(name, [tables.Cell(agg_rows[name].get(c)) if c in agg_rows[name] else tables.Cell(None)
                                  for c in columns], kind='paper' if name.endswith('(paper)') else 'ours')
                for name in agg_rows]
        rows = _interleave(rows)
        caption = (f'rliable over {plural(len(grid.tasks), "task")}: interquartile mean (IQM) and mean of per-run '
                   f'{grid.metric_label} '
                   f'[95% stratified-bootstrap interval, {args.rliable_reps:,} resamples]. '
                   + ('*(paper)*: the same statistics of the QAM paper\'s 12 seeds on the same tasks. '
                      if published.rows else '') + '**Bold**: best of our methods.')
        out.append(('rliable', [tables.Table('rliable', 'Aggregate metrics (rliable)', caption, 'method', columns,
                                             rows).mark_best()]))
    if poi_rows:
        cols = [(p, s) for p in poi_columns for s in ('ours', 'paper')]
        def poi_cell(pair, phase, source):
            if (phase, source) in poi_rows[pair]:
                return tables.Cell(poi_rows[pair][(phase, source)])
            if (phase, 'ours') not in poi_rows[pair]:
                return tables.Cell(None)  # a method without this phase (RLPD offline): n/a
            return tables.Cell(Stat(note='not in the paper'))

        rows = [tables.Row(f'{x} > {y}', [poi_cell((x, y), p, s) for p, s in cols]) for (x, y) in poi_rows]
        caption = (f'rliable probability of improvement P(X > Y): the probability that a run of X beats a run of Y '
                   f'on a task drawn at random (ties count half), [95% stratified independent bootstrap interval, '
                   f'{args.rliable_reps:,} resamples]; *paper*: the same from the QAM paper\'s per-seed values.')
        out.append(('improvement', [tables.Table('improvement', 'Probability of improvement (rliable)', caption,
                                                 'X > Y', [f'{p} ({s})' for p, s in cols], rows, digits=2)]))
    return out, notes, figure_paths


def _interleave(rows):
    """Each paper row right after the first of our rows of the same method."""
    ours = [r for r in rows if r.kind == 'ours']
    paper = {r.label: r for r in rows if r.kind == 'paper'}
    out, used = [], set()
    for row in ours:
        out.append(row)
        key = f'{base_method(row.label)} (paper)'
        for label, paper_row in paper.items():
            if label.lower() == key.lower() and label not in used:
                out.append(paper_row)
                used.add(label)
    return out + [r for label, r in paper.items() if label not in used]


# ---------------------------------------------------------------------------------------------- curves


PAPER_OFFLINE_STEPS = 1_000_000  # the paper's schedule: evaluations every 50K steps, 1M offline then 500K online


def paper_curve_key(published, title, tasks):
    """The paper's domain or aggregate entry that covers exactly these tasks, or None."""
    if title == 'all':
        return 'all' if sorted(tasks) == published.tasks(study='main') else None
    paper_tasks = [t for t in published.tasks() if split_env_name(t)[0] == title]
    return title if sorted(tasks) == sorted(paper_tasks) else None


def curve_panels(grid, boot, published=None):
    """Panels of the learning-curve figure: one per domain (and all). The paper's mean curve of a method is added
    when the panel has exactly the paper's tasks of that domain and the runs follow the paper's schedule."""
    domains = grid.domains()
    groups = [(d, grid.domain_tasks(d)) for d in domains] + ([('all', grid.tasks)] if len(domains) > 1 else [])
    panels = []
    for title, tasks in groups:
        curves, notes = {}, []
        panel_runs = {m: [rs[0] for t in tasks for s in grid.seeds for rs in [grid.cells.get((m, t, s), [])] if rs]
                      for m in grid.methods}
        offline_ends = {r.offline_steps for runs in panel_runs.values() for r in runs if r.offline_steps > 0}
        offline_end = offline_ends.pop() if len(offline_ends) == 1 else None
        for method in grid.methods:
            runs = panel_runs[method]
            if not runs:
                continue
            # Online-only runs (RLPD) are drawn from the start of the online phase of the others.
            shift = [offline_end if (r.offline_steps == 0 and offline_end) else 0 for r in runs]
            lookup = [(r.env_name, r.seed, {s + d: v for s, v in zip(r.steps.tolist(), r.scores.tolist())})
                      for r, d in zip(runs, shift)]
            steps = sorted({s for _, _, values in lookup for s in values})
            curve = dict(steps=[], mean=[], low=[], high=[], full=[])
            for step in steps:
                per_task = {t: ({}, {}) for t in tasks}
                for task, seed, values in lookup:
                    if step in values and np.isfinite(values[step]):
                        per_task[task][0][seed] = values[step]
                stat = boot.pooled_stat(per_task)
                if stat.mean is None:
                    continue
                curve['steps'].append(step)
                curve['mean'].append(stat.mean)
                curve['low'].append(stat.mean if stat.low is None else stat.low)
                curve['high'].append(stat.mean if stat.high is None else stat.high)
                curve['full'].append(stat.n == len(runs))
            paper_key = paper_curve_key(published, title, tasks) if published is not None else None
            paper = published.curve(paper_key, base_method(method)) if paper_key else None
            if paper is not None and offline_end == PAPER_OFFLINE_STEPS and runs[0].eval_interval == 50_000:
                steps_p, means_p = paper
                curve['paper'] = (steps_p + (offline_end if len(steps_p) == 10 else 0), means_p)  # RLPD: online only
            curves[method] = curve
            expected = len(tasks) * len(grid.seeds)
            covered = len({r.env_name for r in runs})
            if covered < len(tasks):
                notes.append(f'{method}: {covered}/{len(tasks)} tasks, not drawn')
            elif len(runs) < expected:
                notes.append(f'{method}: {len(runs)}/{expected} runs')
        label = f'{title} ({plural(len(tasks), "task")}, {plural(len(grid.seeds), "seed")})'
        if notes:
            label += '\n' + '\n'.join(f'{tables.MARK_INCOMPLETE} {n}' for n in notes)
        panels.append((label, offline_end, curves))
    return panels


# ---------------------------------------------------------------------------------------------- report


def runs_table(grid, root):
    rows = []
    order = lambda r: (runs_lib.method_sort_key(r.method), runs_lib.task_sort_key(r.env_name), r.seed)  # noqa: E731
    for run in sorted(grid.runs, key=order):
        diverged = run.diverged or {}
        row = dict(path=os.path.relpath(run.path, root), method=run.method, base_method=run.base_method, agent=run.agent,
                   env_name=run.env_name, domain=run.domain, seed=run.seed, config_hash=run.config_hash,
                   status=run.status, excluded=run.excluded, last_step=run.last_step,
                   diverged_step=diverged.get('step', ''), diverged_keys=' '.join(diverged.get('keys', [])),
                   dataset_source=(run.done or {}).get('dataset_source', ''),
                   deviations='; '.join((run.done or {}).get('deviations', [])), code_version=run.code_version)
        for phase in PHASES:
            value = run.end_value(phase)
            row[f'{phase}_step'] = run.end_step(phase) or ''
            row[f'{phase}_success'] = '' if value is None else f'{value:.2f}'
        rows.append(row)
    return rows


def missing_table(grid):
    rows = []
    for method in grid.methods:
        for phase in grid.phases[method]:
            for task in grid.tasks:
                for seed in grid.seeds:
                    value, reason = grid.value(method, task, seed, phase)
                    if value is None:
                        rows.append(dict(method=method, task=task, seed=seed, phase=phase, reason=reason))
    return rows


def _write_rows(path, rows, columns=None):
    columns = columns or (list(rows[0]) if rows else ['empty'])
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)


def missing_groups(grid, missing):
    """Missing runs compacted for reading: rows (method, phases, tasks, seeds, reason) that share everything but
    the tasks, tasks grouped by domain ('cube-double-play: task1, task3'), 'all N' for every expected seed."""
    phases = {}
    for row in missing:
        phases.setdefault((row['method'], row['task'], row['seed'], row['reason']), []).append(row['phase'])
    seeds = {}
    for (method, task, seed, reason), ps in phases.items():
        seeds.setdefault((method, ', '.join(ps), reason, task), []).append(seed)
    tasks = {}
    for (method, ps, reason, task), ss in seeds.items():
        tasks.setdefault((method, ps, reason, tuple(sorted(ss))), []).append(task)
    rows = []
    for (method, ps, reason, ss), ts in tasks.items():
        by_domain = {}
        for task in ts:
            domain, task_id = split_env_name(task)
            by_domain.setdefault(domain, []).append(f'task{task_id}')
        task_text = '; '.join(f'{d}: {", ".join(ids)}' for d, ids in by_domain.items())
        seed_text = f'all {len(ss)}' if list(ss) == list(grid.seeds) else ', '.join(map(str, ss))
        rows.append((method, ps, task_text, seed_text, reason))
    return rows


def summary_section(grid, conflicts, missing, policy):
    lines = ['## Grid', '']
    by_domain = {d: [f'task{split_env_name(t)[1]}' for t in grid.domain_tasks(d)] for d in grid.domains()}
    size = len(grid.methods) * len(grid.tasks) * len(grid.seeds)
    lines += [f'Expected grid ({grid.origin}): {plural(len(grid.methods), "method")} x {plural(len(grid.tasks), "task")} '
              f'x {plural(len(grid.seeds), "seed")} = {plural(size, "run")}.', '',
              f'- methods: {", ".join(grid.methods)}',
              '- tasks: ' + '; '.join(f'{d}: {", ".join(ts)}' for d, ts in by_domain.items()),
              f'- seeds: {", ".join(str(s) for s in grid.seeds)}', '']
    status = {}
    for run in grid.runs:
        status[run.status] = status.get(run.status, 0) + 1
    excluded = [r for r in grid.runs if r.excluded]
    outside = [r for r in grid.runs if not r.excluded and
               (r.method not in grid.methods or r.env_name not in grid.tasks or r.seed not in grid.seeds)]
    lines.append(f'Run directories read: {len(grid.runs)} ({", ".join(f"{v} {k}" for k, v in sorted(status.items()))})'
                 + (f'; {len(excluded)} left out: ' + '; '.join(
                     f'{n} {reason}' for reason, n in sorted(collections.Counter(r.excluded for r in excluded).items()))
                    if excluded else '')
                 + (f'; {len(outside)} outside the grid' if outside else '') + '.')
    lines.append('Unfinished runs count for the phases they have finished (their end-of-phase evaluation is written).')
    lines.append('')
    damaged = [r for r in grid.runs if r.csv_problems]
    if damaged:
        lines += ['**Warning: CSV files with repeated or out-of-order steps** (two processes wrote the run, or it was '
                  'edited); their evaluations are read in step order, the first row of a repeated step counting:', '']
        lines += [f'- `{r.path}`: {r.csv_problems}' for r in damaged] + ['']
    for phase in PHASES:
        expected = sum(len(grid.tasks) * len(grid.seeds) for m in grid.methods if phase in grid.phases[m])
        absent = sum(1 for r in missing if r['phase'] == phase)
        if expected:
            lines.append(f'- {PHASE_TITLES[phase]}: {expected - absent}/{expected} expected runs have a value'
                         + (' (complete)' if not absent else f'; **{absent} missing**'))
    lines.append('')
    if missing:
        lines += ['### Missing', '', 'Not averaged over: each cell below is absent from the means, and the tables mark '
                  'the cells with fewer runs than expected. Every missing run is in missing.csv.', '',
                  '| method | phase | tasks | seeds | reason |', '|---|---|---|---|---|']
        groups = missing_groups(grid, missing)
        for method, phases, tasks, seeds, reason in groups[:200]:
            lines.append(f'| {method} | {phases} | {tasks} | {seeds} | {reason} |')
        if len(groups) > 200:
            lines.append(f'| … | | | | {len(groups) - 200} more rows: see missing.csv |')
        lines.append('')
    diverged = [r for r in grid.runs if r.status == 'diverged']
    if diverged:
        lines += ['### Diverged runs', '', 'A loss became NaN or inf (DIVERGED marker); the phases the run had '
                  'finished before that still count.', '',
                  '| method | task | seed | step | non-finite | run |', '|---|---|---|---|---|---|']
        for r in diverged:
            lines.append(f'| {r.method} | {r.env_name} | {r.seed} | {r.diverged.get("step", "?")} | '
                         f'{", ".join(r.diverged.get("keys", []))} | {os.path.basename(r.path)} |')
        lines.append('')
    unfinished = [r for r in grid.runs if r.status == 'unfinished']
    if unfinished:
        lines += ['### Unfinished runs', '', '| method | task | seed | last evaluation step |', '|---|---|---|---|']
        lines += [f'| {r.method} | {r.env_name} | {r.seed} | {r.last_step} |' for r in unfinished]
        lines.append('')
    if conflicts:
        lines += ['### Different configs of one method', '',
                  'Runs of one method on one task with different settings (config hashes) are never averaged together. '
                  + ('They are reported as separate methods, labelled by the settings that differ.' if policy == 'split'
                     else 'Only the newest config is kept on each task (--config_policy=newest).'), '',
                  '| method | task | config | differing settings | seeds | reported as |', '|---|---|---|---|---|---|']
        for c in conflicts:
            for h, info in c.configs.items():
                values = ', '.join(f'{k}={runs_lib._short(v)}' for k, v in info['values'].items())
                shown = info.get('label') or ('kept' if info.get('kept') else 'left out')
                seeds = ', '.join(map(str, info['seeds']))
                lines.append(f'| {c.method} | {c.env_name} | {h} | {values} | {seeds} | {shown} |')
        lines.append('')
    duplicates = {k: v for k, v in grid.cells.items() if len(v) > 1}
    if duplicates:
        lines += ['### Duplicate runs', '', 'More than one directory for the same method, task, seed and config; the '
                  'first finished one is used.', '']
        lines += [f'- {m}, {t}, seed {s}: ' + ', '.join(r.path for r in rs) for (m, t, s), rs in duplicates.items()]
        lines.append('')
    deviations = {}
    for r in grid.runs:
        for d in (r.done or {}).get('deviations', []):
            deviations.setdefault(d, []).append(r)
    if deviations:
        lines += ['### Deviations recorded by the runs', '']
        for deviation, rs in deviations.items():
            lines.append(f'- {deviation}: {len(rs)} runs ({", ".join(sorted({r.method for r in rs}))})')
        lines.append('')
    versions = {}
    for r in grid.runs:
        versions[r.code_version or 'unknown'] = versions.get(r.code_version or 'unknown', 0) + 1
    if len(versions) > 1:
        lines += ['Code versions: ' + ', '.join(f'{v} ({plural(n, "run")})' for v, n in sorted(versions.items())), '']
    return lines


def parse_list(text, cast=str):
    return [cast(x) for x in text.replace(',', ' ').split()] if text else None


def expand_tasks(names):
    """Environment names, or domain names (each meaning its 5 tasks)."""
    if not names:
        return None
    out = []
    for name in names:
        out += [name] if 'singletask' in name else [f'{name}-singletask-task{k}-v0' for k in range(1, 6)]
    return out


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


def resolve_target(args):
    """(runs directory, expected runs of a sweep or None, sweep name or None) from the command line: the positional
    argument is a runs directory, or a sweep whose runs are under --save_dir (as `python -m sweeps.launch` wrote
    them); --sweep names the sweep of a runs directory."""
    sweep = args.sweep
    root = args.runs
    if not os.path.isdir(root):
        if sweep is None and load_sweep(root) is not None:
            sweep, root = root, args.save_dir
        else:
            raise SystemExit(f'{args.runs!r} is not a directory of runs (nor a sweep). Give the folder that main.py or '
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


def expected_grid(args, expected, sweep):
    """(methods, tasks, seeds, origin) of the expected grid: the sweep's runs (narrowed by --methods, --tasks,
    --seeds), the command line's, or None for each to infer it."""
    methods, tasks = parse_list(args.methods), expand_tasks(parse_list(args.tasks))
    seeds = list(hp.SEEDS) if args.seeds == 'paper' else parse_list(args.seeds, int)
    if expected is None:
        return methods, tasks, seeds, None
    sweep_methods = list(dict.fromkeys(r.method for r in expected))
    sweep_tasks = sorted({r.env_name for r in expected}, key=runs_lib.task_sort_key)
    sweep_seeds = sorted({r.seed for r in expected})
    narrow = lambda given, full: full if given is None else [x for x in full if x in given]  # noqa: E731
    origin = f'the sweep {sweep!r}' + (', narrowed on the command line' if methods or tasks or seeds else '')
    return narrow(methods, sweep_methods), narrow(tasks, sweep_tasks), narrow(seeds, sweep_seeds), origin


def build_report(args):
    root, expected, sweep = resolve_target(args)
    out_dir, fig_dir, table_dir = args.out, os.path.join(args.out, 'figures'), os.path.join(args.out, 'tables')
    os.makedirs(table_dir, exist_ok=True)
    runs = runs_lib.find_runs(root, args.metric)
    if not runs:
        raise SystemExit(f'No run directories (with flags.json) under {root}.')
    conflicts = runs_lib.separate_configs(runs, args.config_policy)
    methods, tasks, seeds, origin = expected_grid(args, expected, sweep)
    grid = runs_lib.build_grid(runs, methods, tasks, seeds, origin, args.metric)
    boot = Bootstrap(args.bootstrap_samples, args.bootstrap_seed)
    published = Published(args.published)
    if args.metric != 'success' or not any(published.has_task(task) for task in grid.tasks):
        published = Published.empty()  # nothing to set beside ours (D4RL, or a metric the paper does not report)
    stats = compute_stats(grid, boot)
    pub_stats = published_stats(published, boot, grid, stats)
    built = build_tables(grid, stats, pub_stats, published, boot)
    missing = missing_table(grid)
    _write_rows(os.path.join(out_dir, 'runs.csv'), runs_table(grid, root))
    _write_rows(os.path.join(out_dir, 'missing.csv'), missing, ['method', 'task', 'seed', 'phase', 'reason'])

    command = 'python -m sweeps.report ' + ' '.join(shlex.quote(a) for a in args.argv)
    paper_source = (f'Paper numbers: `{os.path.relpath(args.published)}` (derived from the QAM paper\'s released '
                    f'data; see sweeps/report_published.py).' if published.rows else
                    'No paper numbers: the QAM paper has none for these tasks or this metric.')
    lines = ['# Results report', '', f'`{command}` ({datetime.datetime.now():%Y-%m-%d %H:%M}), from `{root}`. '
             + paper_source, '']
    lines += summary_section(grid, conflicts, missing, args.config_policy)
    markdown = {}
    for name, table_list in built.items():
        markdown[name] = tables.write_tables(table_dir, name, table_list)
    lines += ['## Aggregate', '', markdown.pop('aggregate')]
    for phase in PHASES:
        if f'domains_{phase}' in markdown:
            lines += [f'## Domains, {PHASE_TITLES[phase]}', '', markdown.pop(f'domains_{phase}')]
    for phase in PHASES:
        if f'tasks_{phase}' in markdown:
            lines += [f'## Tasks, {PHASE_TITLES[phase]}', '', markdown.pop(f'tasks_{phase}')]
    all_tables = [t for ts in built.values() for t in ts]
    figure_paths = []
    if not args.no_rliable:
        rliable_tables, notes, paths = rliable_section(grid, published, args, fig_dir)
        figure_paths += paths
        lines += ['## rliable', '']
        lines += [f'- {n}' for n in notes] + ([''] if notes else [])
        for name, table_list in rliable_tables:
            lines.append(tables.write_tables(table_dir, name, table_list))
            all_tables += table_list
        pngs = [os.path.basename(p) for p in paths if p.endswith('.png')]
        lines += [f'![{name}](figures/{name})' for name in pngs] + ['']
    curve_boot = Bootstrap(args.curve_bootstrap_samples, args.bootstrap_seed)
    paths = figures.learning_curves(curve_panels(grid, curve_boot, published), grid.methods, fig_dir,
                                    ylabel=grid.metric_label, ylim=(-2, 102) if grid.metric == 'success' else None)
    figure_paths += paths
    lines += ['## Learning curves', '',
              f'{grid.metric_label.capitalize()} at every evaluation: mean over tasks of the mean over seeds, shaded '
              f'95% percentile-bootstrap '
              f'interval ({args.curve_bootstrap_samples:,} resamples); dashed vertical line: end of the offline phase '
              f'(online-only methods, such as RLPD, start there). '
              f'Dotted where fewer of the method\'s runs have reached the step (unfinished or diverged runs). '
              + ('Dashed: the paper\'s mean curve, drawn when a panel has all of the paper\'s tasks of the domain and '
                 'the runs follow its schedule (1M offline steps, evaluations every 50K).' if published.rows else ''),
              '',
              '![learning curves](figures/curves.png)', '']
    tables.write_csv(os.path.join(out_dir, 'results.csv'), [r for t in all_tables for r in tables.csv_rows(t)])
    lines += ['## Files', '', '- tables/*.md, *.tex (booktabs), *.csv (one line per cell): '
              + ', '.join(sorted({t.name for t in all_tables})),
              '- figures/*.png, *.pdf: ' + ', '.join(sorted({os.path.basename(p).rsplit('.', 1)[0] for p in figure_paths})),
              '- runs.csv (every run directory), missing.csv (every missing run and phase, with the reason), '
              'results.csv (every table cell)', '']
    with open(os.path.join(out_dir, 'report.md'), 'w') as f:
        f.write('\n'.join(lines))
    return dict(grid=grid, stats=stats, pub_stats=pub_stats, tables=built, missing=missing, conflicts=conflicts,
                figures=figure_paths, report=os.path.join(out_dir, 'report.md'))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m sweeps.report', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', help='Folder of run directories (main.py or sweeps.launch --save_dir), searched '
                                     'recursively; or a sweep name (its runs under --save_dir).')
    parser.add_argument('--sweep', help='The sweep (sweeps/sweeps.py name or .py file) whose runs the folder holds: '
                                        'its runs are the expected grid, and the ones absent are reported missing.')
    parser.add_argument('--save_dir', default='runs', help='Runs folder of a sweep given as the first argument.')
    parser.add_argument('--out', required=True, help='Output folder (report.md, tables/, figures/, CSVs).')
    parser.add_argument('--methods', help='Expected methods (comma-separated labels); default: every method present.')
    parser.add_argument('--tasks', help='Expected tasks: environment names or domain names (= its 5 tasks), '
                                        'comma-separated; default: every task present.')
    parser.add_argument('--seeds', help="Expected seeds, comma-separated, or 'paper' (10001*k, k=1..12); default: "
                                        'every seed present.')
    parser.add_argument('--config_policy', choices=('split', 'newest'), default='split',
                        help='Runs of one method with different settings on one task: report each config as its own '
                             'method (split) or keep only the newest config (newest). Either way they are listed.')
    parser.add_argument('--bootstrap_samples', type=int, default=500_000,
                        help='Bootstrap resamples per table interval (PROTOCOL §7: 500,000).')
    parser.add_argument('--curve_bootstrap_samples', type=int, default=2_000,
                        help='Bootstrap resamples per learning-curve point.')
    parser.add_argument('--rliable_reps', type=int, default=2_000,
                        help='Stratified-bootstrap resamples of the rliable statistics.')
    parser.add_argument('--bootstrap_seed', type=int, default=0,
                        help='Seed of every bootstrap (the report is reproducible).')
    parser.add_argument('--poi_methods', help='Methods whose probability of improvement over every other method is '
                                              'computed (comma-separated); default: QAM, QAM-F, QAM-E present.')
    parser.add_argument('--no_rliable', action='store_true', help='Skip the rliable statistics and figures.')
    parser.add_argument('--published', default=PUBLISHED_CSV, help='CSV of the published numbers.')
    parser.add_argument('--metric', choices=tuple(runs_lib.METRICS), default='success',
                        help="What to report from each run's eval.csv: success, or D4RL's normalised score "
                             '(normalized_score; D4RL runs only). The paper rows are shown for success only.')
    args = parser.parse_args(argv)
    args.poi_methods = parse_list(args.poi_methods)
    args.argv = list(argv)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    result = build_report(parse_args(argv))
    grid = result['grid']
    print(f'Report: {result["report"]} ({plural(len(grid.methods), "method")}, '
          f'{plural(len(grid.tasks), "task")}, {plural(len(grid.seeds), "seed")}; '
          f'{len(result["missing"])} missing method-task-seed-phase cells; '
          f'{len(result["conflicts"])} config conflicts; '
          f'{sum(r.status == "diverged" for r in grid.runs)} diverged runs).')
    return result


if __name__ == '__main__':
    main()
