"""The environment names the suite knows, and the run settings of each domain.

An OGBench name `<domain>-<dataset type>-singletask-task<n>-v0` (PROTOCOL §2) names three things:
the gymnasium environment (`<domain>-singletask-task<n>-v0`, the dataset type removed), the dataset
(`<domain>-<dataset type>-v0`, or the 100M sharded set for cube-quadruple and puzzle-4x4 play), and the
domain whose run settings apply (PROTOCOL §3: chunk length, discount, pessimism, sparse reward).

A D4RL name is a Minari dataset id, `D4RL/<environment>/<dataset>-v<n>` (e.g. `D4RL/antmaze/large-diverse-v1`,
`D4RL/door/human-v2`): the dataset, whose metadata names the environment (envs/minari_data.py), and the domain
`D4RL/<environment>` with the settings that published D4RL results train with (see the README, "D4RL tasks").
"""

import dataclasses
import re

TASK_IDS = (1, 2, 3, 4, 5)


@dataclasses.dataclass(frozen=True)
class Domain:
    """Run settings shared by every task of one OGBench domain (PROTOCOL §3)."""

    name: str  # e.g. 'cube-double'
    dataset_types: tuple  # dataset types that exist for this domain, e.g. ('play', 'noisy')
    horizon_length: int  # action-chunk length H
    discount: float  # gamma
    rho: float  # pessimism coefficient of the TD target
    sparse: bool  # convert rewards to -1[r != 0] (scene and puzzle)
    manipulation: bool  # datasets can be generated locally (oracles ship with ogbench)
    sharded_play_dataset: str = ''  # the 100M dataset that the paper trains on, when there is one
    minari_version: int = 0  # D4RL through Minari: the dataset version its ids end with (0: an OGBench domain)


def _manipulation(name, sparse=False, sharded=''):
    return Domain(name, ('play', 'noisy'), 5, 0.99, 0.5, sparse, True, sharded)


def _maze(name, discount, rho):
    return Domain(name, ('navigate', 'stitch'), 1, discount, rho, False, False)


DOMAINS = {
    d.name: d
    for d in (
        _maze('antmaze-large', 0.99, 0.5),
        _maze('antmaze-giant', 0.995, 0.5),
        _maze('humanoidmaze-medium', 0.995, 0.0),
        _maze('humanoidmaze-large', 0.995, 0.0),
        _manipulation('cube-single'),
        _manipulation('cube-double'),
        _manipulation('cube-triple'),
        _manipulation('cube-quadruple', sharded='cube-quadruple-play-100m-v0'),
        _manipulation('scene', sparse=True),
        _manipulation('puzzle-3x3', sparse=True),
        _manipulation('puzzle-4x4', sparse=True, sharded='puzzle-4x4-play-100m-v0'),
    )
}


def _d4rl(environment, dataset_names, version):
    # The defaults of antmaze-large on OGBench (H = 1, gamma 0.99, rho 0.5, no sparse conversion): the QAM paper has
    # no D4RL settings. --horizon_length, --agent.discount and --agent.rho override them. The data conventions of
    # each environment (reward shift, masks, observations, evaluation) are in envs/minari_data.py.
    return Domain(f'D4RL/{environment}', dataset_names, 1, 0.99, 0.5, False, False, '', version)


MINARI_DOMAINS = {
    d.name: d
    for d in (
        _d4rl('antmaze', ('umaze', 'umaze-diverse', 'medium-play', 'medium-diverse', 'large-play', 'large-diverse'), 1),
        *(_d4rl(environment, ('human', 'cloned', 'expert'), 2) for environment in ('pen', 'door', 'hammer', 'relocate')),
    )
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One single-task environment name, resolved."""

    env_name: str  # as the user wrote it, e.g. 'cube-triple-play-singletask-task2-v0' or 'D4RL/door/human-v2'
    domain: Domain
    dataset_type: str  # 'play', 'noisy', 'navigate' or 'stitch'; D4RL: the dataset, e.g. 'large-diverse'
    task_id: int  # 1..5 (D4RL: 1, each dataset has one task)
    gym_id: str  # the registered gymnasium id, e.g. 'cube-triple-singletask-task2-v0' ('' for D4RL: Minari's)
    dataset_name: str  # the 1M-style OGBench dataset, e.g. 'cube-triple-play-v0', or the Minari dataset id
    sharded_dataset_name: str  # the 100M sharded dataset the paper uses instead, or ''

    @property
    def is_minari(self):
        return self.domain.minari_version > 0


_MINARI_RE = re.compile(r'^(?P<domain>D4RL/[a-z]+)/(?P<dataset>[a-z-]+)-v(?P<version>\d+)$')
_NAME_RE = re.compile(r'^(?P<domain>[a-z0-9x-]+?)-(?P<type>[a-z]+)-singletask(?:-task(?P<task>\d+))?-v0$')


def valid_env_names():
    """Every single-task environment name the suite accepts (OGBench, then the D4RL ids)."""
    return [
        f'{domain.name}-{dataset_type}-singletask-task{task_id}-v0'
        for domain in DOMAINS.values()
        for dataset_type in domain.dataset_types
        for task_id in TASK_IDS
    ] + minari_ids()


def minari_ids():
    """Every D4RL dataset id the suite accepts."""
    return [f'{d.name}/{name}-v{d.minari_version}' for d in MINARI_DOMAINS.values() for name in d.dataset_types]


def _parse_minari_id(env_name):
    match = _MINARI_RE.match(env_name)
    domain = MINARI_DOMAINS.get(match['domain']) if match else None
    if domain is None or match['dataset'] not in domain.dataset_types or int(match['version']) != domain.minari_version:
        raise ValueError(f'Unknown D4RL dataset id {env_name!r}. The suite runs the Minari datasets '
                         f'{", ".join(minari_ids())}.')
    return Task(env_name=env_name, domain=domain, dataset_type=match['dataset'], task_id=1, gym_id='',
                dataset_name=env_name, sharded_dataset_name='')


def parse_env_name(env_name):
    """Resolve an environment name, or raise ValueError listing the valid ones."""
    if env_name.startswith('D4RL/'):
        return _parse_minari_id(env_name)
    match = _NAME_RE.match(env_name)
    domain = DOMAINS.get(match['domain']) if match else None
    if domain is None or match['type'] not in domain.dataset_types or int(match['task'] or 1) not in TASK_IDS:
        examples = ', '.join(f'{d.name}-{d.dataset_types[0]}' for d in DOMAINS.values())
        types = '; '.join(f'{d.name}: {"/".join(d.dataset_types)}' for d in DOMAINS.values())
        raise ValueError(
            f'Unknown environment name {env_name!r}. Use <domain>-<dataset type>-singletask-task<1-5>-v0 '
            f'with one of: {examples} (dataset types per domain: {types}); '
            f'e.g. cube-triple-play-singletask-task2-v0; or a D4RL dataset id such as D4RL/antmaze/large-diverse-v1.'
        )
    task_id = int(match['task'] or 1)
    dataset_type = match['type']
    return Task(
        env_name=env_name,
        domain=domain,
        dataset_type=dataset_type,
        task_id=task_id,
        gym_id=f'{domain.name}-singletask-task{task_id}-v0',
        dataset_name=f'{domain.name}-{dataset_type}-v0',
        sharded_dataset_name=domain.sharded_play_dataset if dataset_type == 'play' else '',
    )
