"""Figures of the report (matplotlib, Agg backend): learning curves and rliable plots, each as PNG and PDF.

curve_panels gives the learning-curve figures their panels (one per domain, and all, or one per task: the mean over
tasks at every evaluation, with the paper's curve where the runs follow its schedule, or the paper's number at the
step where a shorter offline phase ends, e.g. the mini sweep's 50K); rliable_section makes the report's rliable
section (IQM, mean, performance profiles and probability of improvement of ours and the paper's: figures, tables
and notes).
"""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sweeps import report_tables as tables  # noqa: E402
from sweeps.report_published import EVAL_INTERVAL, PAPER_OFFLINE_STEPS, paper_curve_key  # noqa: E402
from sweeps.report_runs import PHASE_TITLES, PHASES, base_method, plural, split_env_name  # noqa: E402
from sweeps.report_stats import (  # noqa: E402
    Stat, published_stat, rliable_aggregates, rliable_improvement, rliable_profiles, score_matrices)

PAPER = ' (paper)'
QAM_FAMILY = ('QAM', 'QAM-F', 'QAM-E')  # the methods whose probability of improvement is computed by default
PAPER_POINT_LABEL = 'paper at that step (95% interval)'
MAX_TASK_PANELS = 12  # the report draws one panel per task (curves_tasks) up to this many tasks


def _colors(names):
    """One color per method; the paper's entry of a method ('X (paper)') gets the method's color."""
    bases = list(dict.fromkeys(n.removesuffix(PAPER) for n in names))
    cmap = plt.get_cmap('tab20' if len(bases) > 10 else 'tab10')
    base_colors = {name: cmap(i % cmap.N) for i, name in enumerate(bases)}
    return {name: base_colors[name.removesuffix(PAPER)] for name in names}


def save(fig, out_dir, name):
    """Write `name`.png and `name`.pdf; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f'{name}.{ext}') for ext in ('png', 'pdf')]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches='tight')
    plt.close(fig)
    return paths


def learning_curves(panels, methods, out_dir, name='curves', ylabel='success (%)', ylim=(-2, 102)):
    """One panel per domain: the metric (success in %, or `ylabel`) vs total steps per method, shaded 95% interval,
    the end of the offline phase as a dashed line. `ylim=None`: the axis fits the curves (a normalised score).

    panels: [(title, offline_end_step or None, {method: dict(steps, mean, low, high, full)})]; `full` is False at
    steps where fewer runs than the method has contribute (unfinished or diverged runs): drawn dotted."""
    colors = _colors(methods)
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, (title, offline_end, curves) in zip(axes.flat, panels):
        for method in methods:
            curve = curves.get(method)
            if curve is None or not len(curve['steps']):
                continue
            steps, mean = np.asarray(curve['steps']), np.asarray(curve['mean'], float)
            low, high = np.asarray(curve['low'], float), np.asarray(curve['high'], float)
            full = np.asarray(curve['full'], bool)
            color = colors[method]
            ax.plot(steps, mean, ':', color=color, lw=1, marker='.' if len(steps) <= 12 else None, ms=4)
            ax.plot(steps, np.where(full, mean, np.nan), '-', color=color, lw=1.6, label=method)
            ax.fill_between(steps, low, high, color=color, alpha=0.18, lw=0)
            if curve.get('paper') is not None:
                ax.plot(*curve['paper'], '--', color=color, lw=1, alpha=0.8, label='paper (dashed)')
            if curve.get('paper_point') is not None:
                step, stat = curve['paper_point']
                yerr = None if stat.low is None else [[stat.mean - stat.low], [stat.high - stat.mean]]
                ax.errorbar([step], [stat.mean], yerr=yerr, fmt='D', color=color, mfc='none', ms=5, capsize=2, lw=1,
                            label=PAPER_POINT_LABEL)
        if offline_end:
            ax.axvline(offline_end, color='0.4', ls='--', lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('steps (offline, then online)', fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_xlim(left=0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    handles, labels = [], []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if 'paper (dashed)' in labels:  # one grey entry for the paper's curves of every method
        handles[labels.index('paper (dashed)')] = plt.Line2D([], [], color='0.4', ls='--', lw=1)
    if PAPER_POINT_LABEL in labels:
        handles[labels.index(PAPER_POINT_LABEL)] = plt.Line2D([], [], color='0.4', marker='D', mfc='none', ls='')
    legend_rows = -(-len(labels) // 6)
    bottom = (0.22 * legend_rows + 0.15) / fig.get_figheight() if labels else 0
    if labels:
        fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), 6), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0))
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return save(fig, out_dir, name)


def interval_estimates(points, intervals, names, metric_names, out_dir, name, title=''):
    """rliable-style interval plot: one subplot per metric, one row per method, point estimate and 95% interval.
    points: {method: [metric values]}, intervals: {method: (2, metrics) array}; values in %."""
    colors = _colors(names)
    fig, axes = plt.subplots(1, len(metric_names), figsize=(3.4 * len(metric_names), 0.4 * len(names) + 1.2),
                             squeeze=False)
    for k, (ax, metric) in enumerate(zip(axes.flat, metric_names)):
        for i, method in enumerate(names):
            low, high = intervals[method][0][k], intervals[method][1][k]
            paper = method.endswith(PAPER)
            ax.barh(i, high - low, left=low, height=0.6, color=colors[method], alpha=0.35 if paper else 0.75,
                    hatch='//' if paper else None, edgecolor=colors[method] if paper else None)
            ax.vlines(points[method][k], i - 0.3, i + 0.3, color='k', lw=1.5)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names if k == 0 else [], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=10)
        ax.set_xlim(-1, 101)
        ax.set_xlabel('success (%)', fontsize=8)
        ax.grid(axis='x', alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, name)


def performance_profiles(taus, profiles, intervals, names, out_dir, name, title=''):
    """Fraction of runs with success > tau, with shaded 95% stratified-bootstrap intervals."""
    colors = _colors(names)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method in names:
        style = '--' if method.endswith(PAPER) else '-'
        ax.plot(100 * np.asarray(taus), profiles[method], style, color=colors[method], lw=1.6, label=method)
        ax.fill_between(100 * np.asarray(taus), intervals[method][0], intervals[method][1], color=colors[method],
                        alpha=0.15, lw=0)
    ax.set_xlabel(r'success threshold $\tau$ (%)')
    ax.set_ylabel(r'fraction of runs with success $> \tau$')
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(names) > 8 else 1)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, name)


def improvement(points, intervals, out_dir, name, title=''):
    """Probability of improvement P(X > Y) with 95% intervals: one panel per X, one row per Y, ours (solid) and
    the paper's (hatched) side by side. points/intervals are keyed by (X, Y, 'ours' | 'paper')."""
    focus = list(dict.fromkeys(x for x, _, _ in points))
    baselines = list(dict.fromkeys(y for _, y, _ in points))
    fig, axes = plt.subplots(1, len(focus), figsize=(3.6 * len(focus), 0.32 * len(baselines) + 1.3), squeeze=False)
    for ax, x in zip(axes.flat, focus):
        for i, y in enumerate(baselines):
            for source, offset in (('ours', -0.17), ('paper', 0.17)):
                if (x, y, source) not in points:
                    continue
                low, high = np.ravel(intervals[(x, y, source)])[:2]
                paper = source == 'paper'
                ax.barh(i + offset, high - low, left=low, height=0.32, color='tab:gray' if paper else 'tab:blue',
                        alpha=0.35 if paper else 0.75, hatch='//' if paper else None)
                ax.vlines(points[(x, y, source)], i + offset - 0.16, i + offset + 0.16, color='k', lw=1.2)
        ax.axvline(0.5, color='0.4', ls='--', lw=0.8)
        ax.set_yticks(range(len(baselines)))
        ax.set_yticklabels(baselines if ax is axes.flat[0] else [], fontsize=8)
        ax.set_ylim(len(baselines) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f'P({x} > Y)', fontsize=9)
        ax.grid(axis='x', alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color='tab:blue', alpha=0.75),
               plt.Rectangle((0, 0), 1, 1, color='tab:gray', alpha=0.35, hatch='//')]
    fig.legend(handles, ['ours', 'paper'], loc='upper right', fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, name)


# ----------------------------------------------------------------------------------------- learning curves


def task_title(env_name):
    """'scene-play-singletask-task2-v0' -> 'scene-play task 2' (a D4RL id stays as it is)."""
    domain, task_id = split_env_name(env_name)
    return env_name if domain == env_name else f'{domain} task {task_id}'


def curve_panels(grid, boot, published=None, per_task=False):
    """Panels of a learning-curve figure: one per domain (and all), or one per task with `per_task`. The paper's
    mean curve of a method is added when the panel has exactly the paper's tasks of that domain and the runs follow
    the paper's schedule; when the runs end the offline phase earlier, at a step the paper evaluated (the mini
    sweep's 50K), the paper's number over the panel's tasks at that step, with its 95% interval, is added instead
    (report_stats.published_stat: recomputed from the paper's per-seed values where the tasks are not all of the
    paper's, as in the tables)."""
    if per_task:
        groups = [(task_title(t), 'task', t, [t]) for t in grid.tasks]
    else:
        domains = grid.domains()
        groups = [(d, 'domain', d, grid.domain_tasks(d)) for d in domains]
        groups += [('all', 'all', 'all', grid.tasks)] if len(domains) > 1 else []
    panels = []
    for title, level, key, tasks in groups:
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
            if paper is not None and offline_end == PAPER_OFFLINE_STEPS and runs[0].eval_interval == EVAL_INTERVAL:
                steps_p, means_p = paper
                curve['paper'] = (steps_p + (offline_end if len(steps_p) == 10 else 0), means_p)  # RLPD: online only
            elif published is not None and offline_end and offline_end < PAPER_OFFLINE_STEPS and all(
                    published.get(t, method, 'offline', offline_end) for t in tasks):
                stat, _ = published_stat(published, boot, level, key, tasks, method, 'offline', offline_end)
                if stat is not None and stat.mean is not None:
                    curve['paper_point'] = (offline_end, stat)
            curves[method] = curve
            expected = len(tasks) * len(grid.seeds)
            covered = len({r.env_name for r in runs})
            if covered < len(tasks):
                notes.append(f'{method}: {covered}/{len(tasks)} tasks, not drawn')
            elif len(runs) < expected:
                notes.append(f'{method}: {len(runs)}/{expected} runs')
        label = f'{title} ({"" if per_task else plural(len(tasks), "task") + ", "}{plural(len(grid.seeds), "seed")})'
        if notes:
            label += '\n' + '\n'.join(f'{tables.MARK_INCOMPLETE} {n}' for n in notes)
        panels.append((label, offline_end, curves))
    return panels


# ------------------------------------------------------------------------------------------------- rliable


def focus_methods(methods, chosen):
    if chosen:
        return [m for m in methods if m in chosen or base_method(m) in chosen]
    return [m for m in methods if base_method(m) in QAM_FAMILY]


def rliable_section(grid, published, fig_dir, reps, seed=0, poi_methods=None):
    """rliable tables (IQM/mean; probability of improvement) and figures for each phase: ([(name, tables)], notes,
    figure paths). `reps` stratified-bootstrap resamples from `seed`; `poi_methods`: the methods whose probability
    of improvement over every other is computed (None: those of the QAM family present)."""
    agg_rows, poi_rows, notes, figure_paths = {}, {}, [], []
    columns, poi_columns = [], []
    taus = np.linspace(0, 1, 51)
    for phase in PHASES:
        ours, paper, phase_notes = score_matrices(grid, published, phase)
        notes += [f'{PHASE_TITLES[phase]}: {n}' for n in phase_notes]
        if not ours:
            continue
        scores = {**ours, **paper}
        points, intervals = rliable_aggregates(scores, reps, seed)
        columns += [f'IQM, {phase}', f'mean, {phase}']
        for name, matrix in scores.items():
            stats = [Stat(mean=100 * points[name][k], low=100 * intervals[name][0][k], high=100 * intervals[name][1][k],
                          n=matrix.shape[0] * matrix.shape[1], expected=matrix.shape[0] * matrix.shape[1],
                          method='stratified (rliable)') for k in range(2)]
            agg_rows.setdefault(name, {}).update({f'IQM, {phase}': stats[0], f'mean, {phase}': stats[1]})
        names = [r.label for r in _interleave([tables.Row(n, [], 'paper' if n in paper else 'ours') for n in scores])]
        figure_paths += interval_estimates(
            {n: 100 * points[n] for n in names}, {n: 100 * intervals[n] for n in names}, names, ['IQM', 'mean'],
            fig_dir, f'aggregates_{phase}', f'{PHASE_TITLES[phase]} ({plural(len(grid.tasks), "task")})')
        profiles, profile_cis = rliable_profiles(scores, taus, reps, seed)
        figure_paths += performance_profiles(taus, profiles, profile_cis, names, fig_dir, f'profiles_{phase}',
                                             f'Performance profiles, {PHASE_TITLES[phase]}')
        focus = focus_methods(list(ours), poi_methods)
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
        poi, poi_cis = rliable_improvement(pairs, reps, seed)
        poi_columns.append(phase)
        for (x, y, source), value in poi.items():
            low, high = np.ravel(poi_cis[(x, y, source)])[:2]
            poi_rows.setdefault((x, y), {})[(phase, source)] = Stat(mean=float(value), low=float(low), high=float(high),
                                                                   n=1, expected=1, method='stratified (rliable)')
        figure_paths += improvement(poi, poi_cis, fig_dir, f'improvement_{phase}',
                                    f'Probability of improvement, {PHASE_TITLES[phase]}')
    out = []
    if agg_rows:
        rows = [tables.Row(name, [tables.Cell(agg_rows[name].get(c)) if c in agg_rows[name] else tables.Cell(None)
                                  for c in columns], kind='paper' if name.endswith('(paper)') else 'ours')
                for name in agg_rows]
        rows = _interleave(rows)
        caption = (f'rliable over {plural(len(grid.tasks), "task")}: interquartile mean (IQM) and mean of per-run '
                   f'{grid.metric_label} '
                   f'[95% stratified-bootstrap interval, {reps:,} resamples]. '
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
                   f'{reps:,} resamples]; *paper*: the same from the QAM paper\'s per-seed values.')
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
