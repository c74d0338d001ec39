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

This module is the command (its arguments, and build_report putting the pieces together); the pieces are its
siblings: sweeps/report_runs.py reads the run directories and lays them on the expected grid, report_stats.py
computes every cell (ours and the paper's) and the rliable statistics, report_tables.py builds the tables and the
account of the runs, report_figures.py the learning curves and the rliable section, and report_published.py holds
the paper's numbers.
"""

import argparse
import datetime
import os
import shlex
import sys

from sweeps import hyperparameters as hp
from sweeps import report_figures as figures
from sweeps import report_runs as runs_lib
from sweeps import report_tables as tables
from sweeps.report_published import PUBLISHED_CSV, Published
from sweeps.report_runs import PHASE_TITLES, PHASES, plural
from sweeps.report_stats import Bootstrap, compute_stats, published_stats


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


def build_report(args):
    root, expected, sweep = runs_lib.resolve_target(args.runs, args.sweep, args.save_dir)
    out_dir, fig_dir, table_dir = args.out, os.path.join(args.out, 'figures'), os.path.join(args.out, 'tables')
    os.makedirs(table_dir, exist_ok=True)
    runs = runs_lib.find_runs(root, args.metric)
    if not runs:
        raise SystemExit(f'No run directories (with flags.json) under {root}.')
    conflicts = runs_lib.separate_configs(runs, args.config_policy)
    methods, tasks = parse_list(args.methods), expand_tasks(parse_list(args.tasks))
    seeds = list(hp.SEEDS) if args.seeds == 'paper' else parse_list(args.seeds, int)
    methods, tasks, seeds, origin = runs_lib.expected_grid(methods, tasks, seeds, expected, sweep)
    grid = runs_lib.build_grid(runs, methods, tasks, seeds, origin, args.metric)
    boot = Bootstrap(args.bootstrap_samples, args.bootstrap_seed)
    published = Published(args.published)
    if args.metric != 'success' or not any(published.has_task(task) for task in grid.tasks):
        published = Published.empty()  # nothing to set beside ours (D4RL, or a metric the paper does not report)
    stats = compute_stats(grid, boot)
    pub_stats = published_stats(published, boot, grid, stats)
    built = tables.build_tables(grid, stats, pub_stats, published, boot)
    missing = tables.missing_table(grid)
    runs_rows = tables.runs_table(grid, root)
    tables.write_csv(os.path.join(out_dir, 'runs.csv'), runs_rows, list(runs_rows[0]))
    tables.write_csv(os.path.join(out_dir, 'missing.csv'), missing, ['method', 'task', 'seed', 'phase', 'reason'])

    command = 'python -m sweeps.report ' + ' '.join(shlex.quote(a) for a in args.argv)
    paper_source = (f'Paper numbers: `{os.path.relpath(args.published)}` (derived from the QAM paper\'s released '
                    f'data; see sweeps/report_published.py).' if published.rows else
                    'No paper numbers: the QAM paper has none for these tasks or this metric.')
    lines = ['# Results report', '', f'`{command}` ({datetime.datetime.now():%Y-%m-%d %H:%M}), from `{root}`. '
             + paper_source, '']
    lines += tables.summary_section(grid, conflicts, missing, args.config_policy)
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
        rliable_tables, notes, paths = figures.rliable_section(grid, published, fig_dir, args.rliable_reps,
                                                               args.bootstrap_seed, args.poi_methods)
        figure_paths += paths
        lines += ['## rliable', '']
        lines += [f'- {n}' for n in notes] + ([''] if notes else [])
        for name, table_list in rliable_tables:
            lines.append(tables.write_tables(table_dir, name, table_list))
            all_tables += table_list
        pngs = [os.path.basename(p) for p in paths if p.endswith('.png')]
        lines += [f'![{name}](figures/{name})' for name in pngs] + ['']
    curve_boot = Bootstrap(args.curve_bootstrap_samples, args.bootstrap_seed)
    ylim = (-2, 102) if grid.metric == 'success' else None
    paths = figures.learning_curves(figures.curve_panels(grid, curve_boot, published), grid.methods, fig_dir,
                                    ylabel=grid.metric_label, ylim=ylim)
    per_task = len(grid.tasks) <= figures.MAX_TASK_PANELS
    if per_task:
        paths += figures.learning_curves(figures.curve_panels(grid, curve_boot, published, per_task=True),
                                         grid.methods, fig_dir, name='curves_tasks', ylabel=grid.metric_label,
                                         ylim=ylim)
    figure_paths += paths
    lines += ['## Learning curves', '',
              f'{grid.metric_label.capitalize()} at every evaluation: mean over tasks of the mean over seeds, shaded '
              f'95% percentile-bootstrap '
              f'interval ({args.curve_bootstrap_samples:,} resamples); dashed vertical line: end of the offline phase '
              f'(online-only methods, such as RLPD, start there). '
              f'Dotted where fewer of the method\'s runs have reached the step (unfinished or diverged runs). '
              + ('Dashed: the paper\'s mean curve, drawn when a panel has all of the paper\'s tasks of the domain and '
                 'the runs follow its schedule (1M offline steps, evaluations every 50K). ◇: the paper\'s number '
                 'over the panel\'s tasks, with its 95% interval, at the step where the runs end a shorter offline '
                 'phase, if the paper evaluated that step (its first evaluation is at 50K).'
                 if published.rows else ''),
              '',
              '![learning curves](figures/curves.png)', '']
    if per_task:
        lines += ['One panel per task:', '', '![learning curves per task](figures/curves_tasks.png)', '']
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
