"""Run directories: deterministic names, recorded flags, and the markers that make runs resumable."""

import hashlib
import json
import os
import platform
import subprocess
import time

import jax

DONE = 'DONE'  # written last, holding the final summary: a run with it is finished and is never overwritten
DIVERGED = 'DIVERGED'  # written when a loss became NaN or inf


def config_hash(settings):
    """Short stable hash of the settings that change results (not paths, logging or the seed)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_dir_name(save_dir, agent_name, env_name, seed, settings):
    return os.path.join(save_dir, agent_name, env_name, f'seed{seed}-{config_hash(settings)}')


def code_version():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=root, capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + ('-dirty' if dirty.stdout.strip() else '')
    except Exception:  # not a git checkout: the version is simply unknown
        return 'unknown'


def write_flags(run_dir, flags, settings):
    """flags.json: every flag, the resolved settings, the code version and the machine."""
    record = dict(
        flags=flags,
        settings=settings,
        code_version=code_version(),
        machine=dict(host=platform.node(), platform=platform.platform(), devices=[str(d) for d in jax.devices()]),
        started=time.strftime('%Y-%m-%d %H:%M:%S'),
    )
    with open(os.path.join(run_dir, 'flags.json'), 'w') as f:
        json.dump(record, f, indent=2, sort_keys=True, default=str)


def read_marker(run_dir, name):
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_marker(run_dir, name, content):
    tmp = os.path.join(run_dir, f'.{name}.tmp')
    with open(tmp, 'w') as f:
        json.dump(content, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, os.path.join(run_dir, name))
