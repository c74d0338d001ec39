"""Tables of the report, written as Markdown, LaTeX (booktabs) and CSV.

A table is rows x columns of cells; each cell holds a Stat (sweeps/report_stats.py) or nothing (n/a). Rows are
'ours' (from the runs) or 'paper' (the QAM paper's numbers, shown under the method they belong to). The best of
our rows in each column is marked (bold); ties at the printed precision are all marked.
"""

import csv
import dataclasses
import os

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
