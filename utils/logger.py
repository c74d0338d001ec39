"""CSV logging whose columns never silently drop keys, and that survives a resume."""

import csv
import math
import os

from utils import files


class CsvLogger:
    """Appends rows (dicts) to a CSV file.

    A row with keys the header lacks rewrites the file once with the union of the columns (old rows get
    empty cells), so no key is ever dropped. On resume, `truncate_after(step)` removes rows that were
    logged after the checkpoint being resumed, so no row is duplicated.
    """

    def __init__(self, path):
        self.path = path
        self.columns = []
        if os.path.exists(path):
            with open(path, newline='') as f:
                self.columns = next(csv.reader(f), [])

    def _rows(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline='') as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows):
        with files.atomic_write(self.path, newline='') as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, row):
        row = {k: _format(v) for k, v in row.items()}
        new_columns = [k for k in row if k not in self.columns]
        if new_columns:
            rows = self._rows()
            self.columns = self.columns + new_columns
            self._rewrite(rows)
        with open(self.path, 'a', newline='') as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(row)

    def truncate_after(self, step):
        """Drop rows whose `step` is greater than `step`."""
        rows = self._rows()
        kept = [r for r in rows if float(r['step']) <= step]
        if len(kept) != len(rows):
            self._rewrite(kept)

    def read(self):
        """All rows as dicts; numeric cells as floats, empty cells as NaN, text (the phase) as is."""
        return [{k: _parse(v) for k, v in r.items()} for r in self._rows()]


def _format(value):
    if hasattr(value, 'item'):
        value = value.item()
    return value


def _parse(cell):
    if cell == '':
        return math.nan
    try:
        return float(cell)
    except ValueError:
        return cell
