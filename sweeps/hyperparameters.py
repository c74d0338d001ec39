"""Every method of the QAM paper as data: its agent, the settings that define it, its per-domain tuned values.

The one place these values live (STYLE.md: one value, one place). Sources: `../shared/spec/PROTOCOL.md` §8.2
(per-domain tuned hyperparameters), §7 (seeds), §11 (sensitivity study) and `ALGORITHMS.md` §0.1 (method ->
agent). What is *not* here, because `main.py` already sets it from the environment name (`envs/tasks.py`): the
domain's chunk length, discount, pessimism rho and sparse rewards (PROTOCOL §3). Everything else of PROTOCOL §3
and §8.1 (4x512 networks, 10 critics, batch 256, lr 3e-4, EMA 0.005, 10 flow steps, budgets, evaluation) is the
agents' and `main.py`'s defaults.

A method's agent settings on a domain = SHARED, then the method's `defining` settings, then its `tuned` value for
that domain. Tuned values are listed in the column order of PROTOCOL §8.2 so that each row reads like the table.
"""

import dataclasses

from envs import tasks as env_tasks

# The ten domains of the main study, in the column order of PROTOCOL §8.2 (al, ag, hm, hl, scene, p33, p44, c2, c3,
# c4). Names are the domain names of envs/tasks.py; the data-quality datasets (e.g. cube-double-noisy) use the
# column of their domain (PROTOCOL §11).
COLUMNS = (
    'antmaze-large', 'antmaze-giant', 'humanoidmaze-medium', 'humanoidmaze-large', 'scene',
    'puzzle-3x3', 'puzzle-4x4', 'cube-double', 'cube-triple', 'cube-quadruple',
)
ABBREVIATIONS = dict(zip(('al', 'ag', 'hm', 'hl', 'scene', 'p33', 'p44', 'c2', 'c3', 'c4'), COLUMNS))

# PROTOCOL §7: 10001·k, k = 1..12.
SEEDS = tuple(10001 * k for k in range(1, 13))

# Agent settings of every run (PROTOCOL §3). Passed explicitly because ALGORITHMS §1.13 lets an agent file
# default to False; the other shared values are the agents' defaults.
SHARED = {'action_chunking': True}


def per_domain(*values):
    """One tuned value per domain, in COLUMNS order."""
    assert len(values) == len(COLUMNS), values
    return dict(zip(COLUMNS, values))


@dataclasses.dataclass(frozen=True)
class Method:
    agent: str  # file in agents/
    defining: dict = dataclasses.field(default_factory=dict)  # agent settings that make the method (every domain)
    tuned: dict = dataclasses.field(default_factory=dict)  # agent key -> {domain: value} (PROTOCOL §8.2)
    run_flags: dict = dataclasses.field(default_factory=dict)  # main.py flags that make the method (RLPD)


# The 17 methods, named as in the published data. Keys not listed keep the agent's default (ALGORITHMS.md).
#                                al     ag     hm     hl    scene  p33    p44    c2     c3     c4
METHODS = {
    # QAM family (agent qam; in every row the variant key that is not tuned is 0).
    'QAM': Method('qam', dict(fql_alpha=0.0, edit_scale=0.0), dict(
        inv_temp=per_domain(     10,    3,     3,     3,     1,     3,     30,    1,     3,     1))),
    'QAM-F': Method('qam', dict(edit_scale=0.0), dict(
        inv_temp=per_domain(     3,     3,     1,     0.3,   1,     3,     3,     1,     10,    0.3),
        fql_alpha=per_domain(    30,    30,    30,    30,    300,   0,     3,     0,     300,   30))),
    'QAM-E': Method('qam', dict(fql_alpha=0.0), dict(
        inv_temp=per_domain(     1,     10,    3,     3,     1,     1,     0.1,   1,     3,     3),
        edit_scale=per_domain(   0.1,   0.1,   0.1,   0.1,   0.0,   0.1,   0.9,   0.0,   0.1,   0.1))),
    # Backprop, distillation, post-processing and Gaussian baselines.
    'BAM': Method('bam', tuned=dict(
        inv_temp=per_domain(     30,    30,    10,    30,    10,    10,    30,    10,    30,    10))),
    'FQL': Method('fql', tuned=dict(
        alpha=per_domain(        3,     3,     30,    30,    300,   300,   1,     300,   30,    100))),
    'FBRAC': Method('fbrac', tuned=dict(
        alpha=per_domain(        0.1,   0.1,   30,    10,    100,   0.03,  0.3,   0.1,   0.03,  1.0))),
    'FEdit': Method('fedit', tuned=dict(
        edit_scale=per_domain(   0.2,   0.3,   0.5,   0.1,   0.2,   0.2,   0.8,   0.2,   0.3,   0.4))),
    'DSRL': Method('dsrl', tuned=dict(
        noise_scale=per_domain(  0.8,   1.2,   0.6,   0.8,   0.4,   1.0,   1.0,   1.0,   1.4,   1.4))),
    'IFQL': Method('ifql', tuned=dict(
        kappa=per_domain(        0.9,   0.8,   0.7,   0.8,   0.9,   0.95,  0.9,   0.9,   0.95,  0.95))),
    'FAWAC': Method('fawac', tuned=dict(
        inv_temp=per_domain(     6.4,   0.8,   6.4,   0.8,   6.4,   0.8,   0.8,   0.8,   0.8,   0.8))),
    # Guidance baselines (CGQL variants: agent cgql with inv_temp 10; QSM and DAC: agents qsm and dac).
    'CGQL': Method('cgql', dict(mode='simple', inv_temp=10.0), dict(
        guidance_coef=per_domain(0.1,   0.1,   0.01,  0.01,  0.1,   0.1,   0.1,   0.01,  0.1,   0.1))),
    'CGQL-M': Method('cgql', dict(mode='mse', inv_temp=10.0), dict(
        guidance_coef=per_domain(0.1,   0.1,   0.1,   0.1,   0.1,   0.1,   1.0,   0.01,  0.1,   0.01),
        noisy_coef=per_domain(   0.1,   0.001, 0.1,   0.1,   0.1,   0.1,   0.001, 0.001, 0.001, 0.1))),
    'CGQL-L': Method('cgql', dict(mode='linex', inv_temp=10.0), dict(
        guidance_coef=per_domain(0.1,   0.1,   0.1,   0.1,   0.1,   0.1,   1.0,   0.01,  0.1,   0.01),
        noisy_coef=per_domain(   0.001, 0.001, 0.1,   0.1,   0.1,   0.001, 0.001, 0.001, 0.001, 0.1))),
    'QSM': Method('qsm', dict(clip_sampler_before=False, clip_sampler_after=True), dict(
        inv_temp=per_domain(     10,    10,    10,    10,    3,     10,    10,    1,     10,    1),
        alpha=per_domain(        10,    10,    30,    30,    30,    30,    1,     10,    10,    10))),
    'DAC': Method('dac', dict(clip_sampler_before=True, clip_sampler_after=False), dict(
        alpha=per_domain(        0.3,   0.3,   1.0,   0.3,   1.0,   1.0,   1.0,   3.0,   0.3,   1.0))),
    'ReBRAC': Method('rebrac', tuned=dict(
        alpha_actor=per_domain(  0.01,  0.01,  0.01,  0.01,  0.03,  0.1,   0.01,  0.01,  0.01,  0.01),
        actor_noise=per_domain(  0.0,   0.0,   0.0,   0.1,   0.0,   0.0,   0.2,   0.0,   0.2,   0.2))),
    # Online only: 500K environment steps from scratch, half of each batch from the offline data (PROTOCOL §4.3).
    'RLPD': Method('rlpd', tuned=dict(
        bc_alpha=per_domain(     0.0,   0.01,  0.03,  0.0,   0.3,   0.01,  0.0,   0.1,   0.0,   0.0)),
        run_flags=dict(offline_steps=0, balanced_sampling=True)),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A method changed in one way (PROTOCOL §11): settings replaced, or tuned settings multiplied."""

    base: str  # a name in METHODS
    settings: dict = dataclasses.field(default_factory=dict)  # agent settings replaced on every domain
    scale: dict = dataclasses.field(default_factory=dict)  # agent key -> factor applied to the tuned value


# QAM-E sensitivity study (PROTOCOL §11), named as in the published data ("tau" is inv_temp). The unchanged
# configuration is the main study's QAM-E run. BC, the behaviour-cloning floor of the `mini` sweep, is QAM acting
# with its behaviour flow (inv_temp = 0: no tilt, ALGORITHMS §2.6); the paper has no such row.
VARIANTS = {
    'BC': Variant('QAM', settings=dict(inv_temp=0.0)),
    'QAM-E-NOCLIP': Variant('QAM-E', settings=dict(clip_grad=False)),
    'QAM-E (K=2)': Variant('QAM-E', settings=dict(num_qs=2)),
    **{f'QAM-E (T={t})': Variant('QAM-E', settings=dict(flow_steps=t)) for t in (1, 3, 20, 30)},
    **{f'QAM-E ({f:g}x tau)': Variant('QAM-E', scale=dict(inv_temp=f)) for f in (0.1, 0.3, 3, 10)},
}


# D4RL through Minari (the README's "D4RL tasks"), tuned per dataset. The QAM paper has no D4RL runs; FQL's do.
# Source: the FQL code's README (github.com/seohongpark/fql, "FQL on D4RL", offline RL): alpha per task, 500K
# offline steps, 2 critics, their mean on AntMaze (q_agg=mean: rho 0) and their minimum on Adroit (q_agg=min; for 2
# critics min = mean - std: rho 1). The ids are Minari's for the D4RL datasets FQL names (antmaze-*-v2, *-v1), in
# the order of envs/tasks.py: AntMaze's six, then human, cloned and expert of pen, door, hammer and relocate.
D4RL_COLUMNS = tuple(env_tasks.minari_ids())


def per_d4rl_task(antmaze, pen, door, hammer, relocate):
    """One value per D4RL dataset, in D4RL_COLUMNS order: AntMaze's six, then (human, cloned, expert) per Adroit task."""
    values = (*antmaze, *pen, *door, *hammer, *relocate)
    assert len(values) == len(D4RL_COLUMNS), values
    return dict(zip(D4RL_COLUMNS, values))


D4RL_METHODS = {
    #                                        umaze  -diverse medium-play -diverse large-play -diverse
    'FQL': Method('fql', dict(num_qs=2), dict(
        alpha=per_d4rl_task((10, 10, 10, 10, 3, 3),
                            # human  cloned  expert
                            (10000, 10000, 3000),  # pen
                            (30000, 30000, 30000),  # door
                            (30000, 10000, 30000),  # hammer
                            (10000, 30000, 30000)),  # relocate
        rho=per_d4rl_task((0.0,) * 6, (1.0,) * 3, (1.0,) * 3, (1.0,) * 3, (1.0,) * 3))),
    # Not tuned (no published D4RL values): on AntMaze QAM's antmaze-large value on OGBench, elsewhere its default.
    'QAM': Method('qam', dict(fql_alpha=0.0, edit_scale=0.0), dict(
        inv_temp=per_d4rl_task((10.0,) * 6, (0.3,) * 3, (0.3,) * 3, (0.3,) * 3, (0.3,) * 3))),
}


def method_names():
    """Every method and variant name this file defines."""
    return list(METHODS) + list(VARIANTS)


def resolve(method, domain):
    """(agent, agent settings, main.py flags) of `method` (a METHODS or VARIANTS name) on `domain` (a COLUMNS name,
    or a D4RL dataset id of D4RL_COLUMNS with a D4RL_METHODS method).

    Agent settings are ordered: shared, defining, tuned. Raises KeyError for an unknown method or domain.
    """
    if domain in D4RL_COLUMNS:
        if method not in D4RL_METHODS:
            raise KeyError(f'{method} has no D4RL settings; D4RL methods: {", ".join(D4RL_METHODS)}.')
        base = D4RL_METHODS[method]
        settings = {**SHARED, **base.defining, **{key: values[domain] for key, values in base.tuned.items()}}
        return base.agent, settings, dict(base.run_flags)
    if domain not in COLUMNS:
        raise KeyError(f'Unknown domain {domain!r}; the tuned tables have {", ".join(COLUMNS)} and the D4RL '
                       f'datasets {", ".join(D4RL_COLUMNS)}.')
    variant = VARIANTS.get(method)
    base = METHODS[variant.base if variant else method] if (variant or method in METHODS) else None
    if base is None:
        raise KeyError(f'Unknown method {method!r}; known: {", ".join(method_names())}.')
    settings = dict(SHARED)
    settings.update(base.defining)
    settings.update({key: values[domain] for key, values in base.tuned.items()})
    if variant:
        for key, factor in variant.scale.items():
            settings[key] = float(f'{settings[key] * factor:.10g}')  # 0.1 x 3 = 0.3, not 0.30000000000000004
        settings.update(variant.settings)
    return base.agent, settings, dict(base.run_flags)
