"""Tables of the report, written as Markdown, LaTeX (booktabs) and CSV, and the report's account of its runs.

A table is rows x columns of cells; each cell holds a Stat (sweeps/report_stats.py) or nothing (n/a). Rows are
'ours' (from the runs) or 'paper' (the QAM paper's numbers, shown under the method they belong to). The best of
our rows in each column is marked (bold); ties at the printed precision are all marked. build_tables lays the cell
statistics out as the report's tables: the aggregate over all tasks, per domain and per task, at the end of each
phase.

The account of the runs: runs_table (runs.csv, one line per run directory), missing_table (missing.csv, every
missing method x task x seed x phase, with why) and summary_section (the report's Grid section: the expected grid,
the missing, diverged and unfinished runs, config conflicts, duplicates, deviations and code versions).
"""

import collections
import csv
import dataclasses
import os

from sweeps import report_runs as runs_lib
from sweeps.report_runs import PHASE_TITLES, PHASES, base_method, plural, split_env_name
from sweeps.report_stats import Stat

MARK_INCOMPLETE = '†'  # averaged over fewer runs than expected
MARK_RECOMPUTED = '‡'  # paper number recomputed over the same tasks from its per-seed values
LATEX_MARKS = {MARK_INCOMPLETE: r'$^\dagger$', MARK_RECOMPUTED: r'$^\ddagger$'}


@dataclasses.dataclass
class Cell:
    stat: object = None  # Stat, or None: not applicable
    marks: str = ''
    best: bool = False


@dataclasses.dataclass
class Row:
    label: str
    cells: list
    kind: str = 'ours'  # ours | paper


@dataclasses.dataclass
class Table:
    name: str  # file stem
    title: str
    caption: str
    row_header: str
    columns: list
    rows: list
    digits: int = 1  # decimals printed (and compared when marking the best)

    def mark_best(self):
        for j in range(len(self.columns)):
            means = [round(r.cells[j].stat.mean, self.digits) for r in self.rows
                     if r.kind == 'ours' and r.cells[j].stat is not None and r.cells[j].stat.mean is not None]
            if len(means) < 2:
                continue
            best = max(means)
            for row in self.rows:
                cell = row.cells[j]
                cell.best = (row.kind == 'ours' and cell.stat is not None and cell.stat.mean is not None
                             and round(cell.stat.mean, self.digits) == best)
        return self


def cell_marks(stat, recomputed=False):
    marks = ''
    if stat is not None and stat.mean is not None and (stat.n < stat.expected or stat.tasks < stat.tasks_expected):
        marks += MARK_INCOMPLETE
    if recomputed:
        marks += MARK_RECOMPUTED
    return marks


def _count(stat):
    """'3/5 seeds' or '4/5 tasks' for an incomplete cell, else ''."""
    if stat.tasks < stat.tasks_expected:
        return f'{stat.tasks}/{stat.tasks_expected} tasks'
    if stat.n < stat.expected:
        unit = 'seeds' if stat.tasks_expected == 1 else 'runs'
        return f'{stat.n}/{stat.expected} {unit}'
    return ''


def cell_text(cell, fmt='md', digits=1):
    stat = cell.stat
    if stat is None:
        return 'n/a'
    if stat.mean is None:
        count = _count(stat)
        return f'— ({count})' if count else '—'
    mean = f'{stat.mean:.{digits}f}'
    if cell.best:
        mean = {'md': f'**{mean}**', 'tex': rf'\textbf{{{mean}}}'}.get(fmt, mean)
    interval = f'[{stat.low:.{digits}f}, {stat.high:.{digits}f}]' if stat.low is not None else ''
    marks = cell.marks
    count = _count(stat)
    if fmt == 'tex':
        marks = ''.join(LATEX_MARKS.get(m, m) for m in marks)
        interval = rf' {{\scriptsize {interval}}}' if interval else ''
        count = rf' {{\scriptsize {count}}}' if count else ''
        return f'{mean}{interval}{marks}{count}'
    return ' '.join(p for p in (mean, interval, marks, count) if p)


def latex_escape(text):
    for a, b in (('\\', r'\textbackslash{}'), ('&', r'\&'), ('%', r'\%'), ('_', r'\_'), ('#', r'\#'), ('$', r'\$'),
                 ('{', r'\{'), ('}', r'\}'), ('—', '---'), ('†', r'$^\dagger$'), ('‡', r'$^\ddagger$')):
        text = text.replace(a, b)
    return text


def to_markdown(table, heading='###', caption=True):
    lines = [f'{heading} {table.title}', ''] + ([table.caption, ''] if caption else [])
    lines.append('| ' + ' | '.join([table.row_header] + table.columns) + ' |')
    lines.append('|' + '---|' + '---:|' * len(table.columns))
    for row in table.rows:
        label = f'*{row.label}*' if row.kind == 'paper' else row.label
        cells = [cell_text(c, 'md', table.digits) for c in row.cells]
        if row.kind == 'paper':
            cells = [f'*{c}*' if c not in ('n/a', '—') else c for c in cells]
        lines.append('| ' + ' | '.join([label] + cells) + ' |')
    return '\n'.join(lines) + '\n'


def to_latex(table):
    """A booktabs tabular; the caption goes in a comment (wrap it in your own table environment)."""
    caption = table.caption.replace('**', '').replace('*', '')
    lines = [f'% {table.title}', *(f'% {line}' for line in caption.splitlines()),
             r'\begin{tabular}{l' + 'r' * len(table.columns) + '}', r'\toprule',
             ' & '.join(latex_escape(c) for c in [table.row_header] + table.columns) + r' \\', r'\midrule']
    previous = None
    for row in table.rows:
        if previous == 'paper' and row.kind == 'ours':
            lines.append(r'\addlinespace')
        cells = []
        for cell in row.cells:
            text = cell_text(cell, 'tex', table.digits).replace('—', '---').replace('n/a', '--')
            cells.append(rf'\textit{{{text}}}' if row.kind == 'paper' else text)
        label = latex_escape(row.label)
        lines.append(' & '.join([rf'\textit{{{label}}}' if row.kind == 'paper' else label] + cells) + r' \\')
        previous = row.kind
    lines += [r'\bottomrule', r'\end{tabular}']
    return '\n'.join(lines) + '\n'


def csv_rows(table):
    """Long form: one line per cell."""
    out = []
    for row in table.rows:
        for column, cell in zip(table.columns, row.cells):
            stat = cell.stat
            out.append(dict(
                table=table.name, row=row.label, kind=row.kind, column=column,
                mean='' if stat is None or stat.mean is None else f'{stat.mean:.{table.digits + 1}f}',
                ci95_low='' if stat is None or stat.low is None else f'{stat.low:.{table.digits + 1}f}',
                ci95_high='' if stat is None or stat.high is None else f'{stat.high:.{table.digits + 1}f}',
                runs='' if stat is None else stat.n, expected_runs='' if stat is None else stat.expected,
                tasks='' if stat is None else stat.tasks, expected_tasks='' if stat is None else stat.tasks_expected,
                interval='' if stat is None else stat.method, best=int(cell.best), marks=cell.marks,
                applicable=int(stat is not None), note='' if stat is None else stat.note,
            ))
    return out


CSV_COLUMNS = ('table', 'row', 'kind', 'column', 'mean', 'ci95_low', 'ci95_high', 'runs', 'expected_runs', 'tasks',
               'expected_tasks', 'interval', 'best', 'marks', 'applicable', 'note')


def write_csv(path, rows, columns=CSV_COLUMNS):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator='\n', extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)


def write_tables(out_dir, name, tables, preamble=''):
    """`name`.md, .tex and .csv holding one or more tables (e.g. one per domain); returns the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    markdown = preamble + '\n'.join(to_markdown(t, caption=i == 0) for i, t in enumerate(tables))
    with open(os.path.join(out_dir, f'{name}.md'), 'w') as f:
        f.write(markdown)
    with open(os.path.join(out_dir, f'{name}.tex'), 'w') as f:
        f.write('% Needs \\usepackage{booktabs}.\n' + '\n'.join(to_latex(t) for t in tables))
    write_csv(os.path.join(out_dir, f'{name}.csv'), [r for t in tables for r in csv_rows(t)])
    return markdown


# ------------------------------------------------------------------------------------------- result tables


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
    paper_rows = (f'*(paper)*: the QAM paper\'s number for the same cell ({MARK_RECOMPUTED}: recomputed over the '
                  f'same tasks from its per-seed values). ' if with_paper else '')
    return (f'End of phase here: {phase_steps(grid)}{paper_steps}. '
            f'{grid.metric_label.capitalize()}: mean over seeds [95% percentile-bootstrap interval, '
            f'{boot.num_resamples:,} resamples]; '
            f'domain = mean of its tasks, all = mean over the {plural(len(grid.tasks), "task")}. Expected: '
            f'{len(grid.seeds)} seeds per task ({seeds}). **Bold**: best of our methods in the column. '
            f'{paper_rows}{MARK_INCOMPLETE} n/N: fewer runs than expected '
            f'(missing.csv says which and why); — : no value; n/a: phase not run (RLPD is online only).')


def method_rows(grid, cell, published):
    """Our row and, when the paper has the method, its row, for every method; `cell(method, source)` -> Cell."""
    rows = []
    for method in grid.methods:
        rows.append(Row(method, cell(method, 'ours')))
        name = published.method_name(base_method(method))
        if name:
            rows.append(Row(f'{name} (paper)', cell(method, 'paper'), kind='paper'))
    return rows


def make_cell(stats, pub_stats, level, key, method, phase, source):
    if source == 'ours':
        stat = stats.get((level, key, method, phase))
        return Cell(stat, cell_marks(stat))
    if (level, key, method, phase) not in stats:
        return Cell(None)
    stat, recomputed = pub_stats[(level, key, method, phase)]
    if stat is None:
        return Cell(Stat(note='not in the paper'))
    return Cell(stat, cell_marks(stat, recomputed))


def build_tables(grid, stats, pub_stats, published, boot):
    caption = grid_caption(grid, boot, with_paper=bool(published.rows))
    out = {}

    def cell_for(level, key, phase):
        return lambda method, source: make_cell(stats, pub_stats, level, key, method, phase, source)

    columns = [p for p in PHASES if any(p in grid.phases[m] for m in grid.methods)]
    out['aggregate'] = [Table(
        'aggregate', f'Aggregate over {plural(len(grid.tasks), "task")}: {grid.metric_label} at the end of each phase',
        caption, 'method',
        [PHASE_TITLES[p] for p in columns],
        method_rows(grid, lambda m, s: [cell_for('all', 'all', p)(m, s) for p in columns], published),
    ).mark_best()]
    domains = grid.domains()
    for phase in columns:
        keys = [('domain', d) for d in domains] + ([('all', 'all')] if len(domains) > 1 else [])
        out[f'domains_{phase}'] = [Table(
            f'domains_{phase}', f'Domains: {grid.metric_label} at the {PHASE_TITLES[phase]}', caption, 'method',
            [f'{k} ({len(grid.domain_tasks(k)) if lvl == "domain" else len(grid.tasks)})' for lvl, k in keys],
            method_rows(grid, lambda m, s: [cell_for(lvl, k, phase)(m, s) for lvl, k in keys], published),
        ).mark_best()]
        task_tables = []
        for domain in domains:
            tasks = grid.domain_tasks(domain)
            keys = [('task', t) for t in tasks] + [('domain', domain)]
            task_tables.append(Table(
                f'tasks_{phase}', f'{domain}: {grid.metric_label} per task at the {PHASE_TITLES[phase]}', caption,
                'method',
                [f'task{split_env_name(t)[1]}' for t in tasks] + [f'{domain} ({plural(len(tasks), "task")})'],
                method_rows(grid, lambda m, s: [cell_for(lvl, k, phase)(m, s) for lvl, k in keys], published),
            ).mark_best())
        out[f'tasks_{phase}'] = task_tables
    return out


# ------------------------------------------------------------------------------- runs and the grid section


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
                   deviations='; '.join((run.done or {}).get('deviations', [])), code_version=run.code_version,
                   dataset=run.dataset_name, dataset_fingerprint=run.dataset_fingerprint)
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
    return lines + _dataset_lines(grid.runs)


def _dataset_lines(runs):
    """A warning when runs of one dataset trained on different arrays (their recorded fingerprints differ). A
    generated dataset is the same for the same seed on one machine, but can differ on another: the mini sweep's
    scene-play data generated again on a new machine, with the same code, pins and seed, had another fingerprint."""
    fingerprints = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in runs:
        if r.dataset_fingerprint:
            fingerprints[r.dataset_name][r.dataset_fingerprint].append(r)
    lines = []
    for name, by_fingerprint in sorted(fingerprints.items()):
        if len(by_fingerprint) > 1:
            counts = ', '.join(f'{f} ({plural(len(rs), "run")}: {", ".join(sorted({r.method for r in rs}))})'
                               for f, rs in sorted(by_fingerprint.items()))
            lines.append(f'- {name}: {len(by_fingerprint)} different datasets by fingerprint, {counts}')
    if lines:
        lines = ['### Datasets', '', 'Runs of one dataset did not all train on the same arrays (runs.csv has each '
                 'run\'s fingerprint; a set generated before the generator pinned its numerical kernels can differ '
                 'from one machine to another, and one generated on a CPU without AVX2 still can):', '', *lines, '']
    return lines
