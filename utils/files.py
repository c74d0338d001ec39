"""Atomic file writes: every file the suite writes (datasets, run records, logs, reports) goes through here.

A file is written under a hidden temporary name in its own folder, flushed to disk, then renamed onto its path,
so a reader (or a run killed mid-write) sees the old file or the new one, never half of one. The temporary name
drops the extension (`.<stem>.<random>.partial`), so no `*.npz` or `*.csv` glob can pick up a partial file.
"""

import contextlib
import os
import secrets

TEMP_SUFFIX = '.partial'


def temp_path(path):
    """A hidden temporary name next to `path`, without its extension: `.<stem>.<random>.partial`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(path)), f'.{stem}.{secrets.token_hex(4)}{TEMP_SUFFIX}')


@contextlib.contextmanager
def atomic_write(path, binary=False, newline=None, before_replace=None):
    """`with atomic_write(path) as f: ...` writes `path` atomically (see the module docstring); on an error inside
    the block the temporary file is removed and `path` is left as it was. `before_replace()`, if given, runs just
    before the rename (e.g. to refuse a file that appeared meanwhile: raising there leaves `path` untouched)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, 'xb' if binary else 'x', newline=None if binary else newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
