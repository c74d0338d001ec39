"""Environment variables set for a while: for a library that reads one when called, or for child processes, which
copy the environment when they start."""

import contextlib
import os


@contextlib.contextmanager
def variables_set(values):
    """os.environ with `values` (name -> string) set inside the block, and each name's earlier value (or absence)
    restored on exit, also on an error. Not `unittest.mock.patch.dict(os.environ, ...)`: it restores by clearing the
    whole environment and refilling it, while other threads (JAX's, a download's) may be reading it."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
