"""Agent registry: `--agent=qam` names a file in this folder; `--agent=path/to/file.py` any agent file.

An agent file defines `get_config()` (an ml_collections ConfigDict) and `Agent`, a flax PyTreeNode class
with `create(seed, ex_observations, ex_actions, config)`, `update(batch)` and
`sample_actions(observations, rng)`; `update` and `sample_actions` are `jax.jit`-compiled methods.
"""

import importlib.util
import os

AGENTS_DIR = os.path.dirname(os.path.abspath(__file__))


def available_agents():
    return sorted(f[:-3] for f in os.listdir(AGENTS_DIR) if f.endswith('.py') and not f.startswith('_'))


def agent_path(name_or_path):
    """The file of an agent given by bare name or by path; ValueError listing the agents otherwise."""
    if name_or_path.endswith('.py'):
        if os.path.isfile(name_or_path):
            return os.path.abspath(name_or_path)
        raise ValueError(f'Agent file {name_or_path!r} does not exist.')
    path = os.path.join(AGENTS_DIR, f'{name_or_path}.py')
    if not os.path.isfile(path):
        raise ValueError(f'Unknown agent {name_or_path!r}. Available: {", ".join(available_agents())}, or a path to an agent file.')
    return path


def load_agent(name_or_path):
    """The agent module (with `Agent` and `get_config`)."""
    path = agent_path(name_or_path)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f'agents.{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for attribute in ('Agent', 'get_config'):
        if not hasattr(module, attribute):
            raise ValueError(f'{path} defines no {attribute!r}; an agent file needs `Agent` and `get_config()`.')
    return module
