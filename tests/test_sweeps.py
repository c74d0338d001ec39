"""Sweeps: expansion against the protocol (counts, seeds, per-domain values), bad input, the confirmation
threshold, run status from run directories, and the local backend running a tiny sweep to completion."""

import ast
import contextlib
import copy
import csv
import fcntl
import functools
import json
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest

import agents
from envs import tasks as env_tasks
from sweeps import hyperparameters as hp
from sweeps import launch, mini
from sweeps import runs as run_state
from sweeps import sweeps
from tests.main_runs import with_default_stop_signals
from utils import experiment, run_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL = os.path.join(ROOT, '..', 'shared', 'spec', 'PROTOCOL.md')
PAPER_SEEDS = [10001, 20002, 30003, 40004, 50005, 60006, 70007, 80008, 90009, 100010, 110011, 120012]
PUBLISHED_METHODS = ['QAM', 'QAM-F', 'QAM-E', 'BAM', 'FQL', 'FBRAC', 'FEdit', 'DSRL', 'IFQL', 'FAWAC', 'CGQL', 'CGQL-M',
                     'CGQL-L', 'QSM', 'DAC', 'ReBRAC', 'RLPD']
PUBLISHED_SENSITIVITY = ['QAM-E-NOCLIP', 'QAM-E (K=2)', 'QAM-E (T=1)', 'QAM-E (T=3)', 'QAM-E (T=20)', 'QAM-E (T=30)',
                         'QAM-E (0.1x tau)', 'QAM-E (0.3x tau)', 'QAM-E (3x tau)', 'QAM-E (10x tau)']
MAIN_DOMAINS = ['antmaze-large-navigate', 'antmaze-giant-navigate', 'humanoidmaze-medium-navigate',
                'humanoidmaze-large-navigate', 'scene-play', 'puzzle-3x3-play', 'puzzle-4x4-play', 'cube-double-play',
                'cube-triple-play', 'cube-quadruple-play']


def expand(name, **selection):
    return sweeps.expand(sweeps.load(name), **selection)


@functools.lru_cache(maxsize=None)
def by_key(name):
    """Every run of a whole sweep by (method, env name, seed)."""
    return {(r.method, r.env_name, r.seed): r for r in expand(name)}


def agent_flags(run):
    return {name[len('agent.'):]: value for name, value in run.flags if name.startswith('agent.')}


def one(name, method, env_name, seed=10001):
    return by_key(name)[(method, env_name, seed)]


# ------------------------------------------------------------------------------------------------ expansion
@pytest.mark.parametrize('name, methods, datasets, tasks_per_dataset', [
    ('paper', PUBLISHED_METHODS[:-1], MAIN_DOMAINS, 5),
    ('rlpd', ['RLPD'], MAIN_DOMAINS, 5),
    ('quality', ['ReBRAC', 'BAM', 'FQL', 'QSM', 'DSRL', 'FEdit', 'QAM-E'],
     ['antmaze-large-stitch', 'humanoidmaze-medium-stitch', 'scene-noisy', 'puzzle-3x3-noisy', 'cube-double-noisy',
      'cube-triple-noisy'], 5),
    ('sensitivity', PUBLISHED_SENSITIVITY, MAIN_DOMAINS, 1),
])
def test_each_sweep_expands_to_its_full_grid(name, methods, datasets, tasks_per_dataset):
    runs = expand(name)
    assert len(runs) == len(methods) * len(datasets) * tasks_per_dataset * 12  # 9600, 600, 2520, 1200
    assert sorted({r.method for r in runs}) == sorted(methods)
    assert sorted({r.dataset for r in runs}) == sorted(datasets)
    assert len({r.key for r in runs}) == len(runs) and len({tuple(r.argv('x')) for r in runs}) == len(runs)
    for run in runs:
        flags = run.flag_dict
        assert (flags['method'], flags['env_name'], flags['seed']) == (run.method, run.env_name, str(run.seed))
        assert flags['agent'] == run.agent
        # Domain settings come from the environment name in main.py, never from a sweep (one value, one place).
        assert not {'horizon_length', 'sparse', 'agent.discount', 'agent.rho', 'agent.horizon_length'} & set(flags)
        assert flags['agent.action_chunking'] == 'True'


@pytest.mark.parametrize('name', sweeps.SWEEP_FILES)
def test_every_run_group_has_the_twelve_paper_seeds(name):
    seeds = {}
    for run in expand(name):
        seeds.setdefault((run.method, run.env_name), []).append(run.seed)
    expected = {'mini': PAPER_SEEDS[:3], 'd4rl': PAPER_SEEDS[:8]}.get(name, PAPER_SEEDS)  # mini: the first three
    assert all(s == expected for s in seeds.values())
    assert list(hp.SEEDS) == PAPER_SEEDS


def test_mini_sweep_keeps_what_defines_each_method_and_names_its_reductions():
    runs = expand('mini')
    assert len(runs) == 5 * 3 * 3
    assert {r.env_name for r in runs} == {'scene-play-singletask-task1-v0', 'scene-play-singletask-task2-v0',
                                          'cube-double-play-singletask-task1-v0'}
    paper = by_key('paper')
    for run in runs:
        flags = run.flag_dict
        assert flags['offline_steps'] == '50000' and int(flags['online_steps']) > 0
        # Every agent setting of the paper's run of the method is kept, except the named reductions.
        reduced = {name[len('agent.'):] for name, _ in mini.FLAGS if name.startswith('agent.')}
        base = 'QAM' if run.method == 'BC' else run.method
        expected = {k: v for k, v in agent_flags(paper[(base, run.env_name, run.seed)]).items() if k not in reduced}
        if run.method == 'BC':
            expected['inv_temp'] = '0'
        assert {k: v for k, v in agent_flags(run).items() if k not in reduced} == expected, run.key
        assert not {'horizon_length', 'sparse', 'agent.discount', 'agent.rho', 'agent.horizon_length'} & set(flags)
    # QAM-E equals QAM on these domains (edit_scale 0 in PROTOCOL §8.2): the same agent settings.
    for env_name in {r.env_name for r in runs}:
        qam_e, qam = (agent_flags(one('paper', m, env_name)) for m in ('QAM-E', 'QAM'))
        assert qam_e == qam


def test_d4rl_sweep_runs_every_minari_dataset_with_fqls_published_settings():
    runs = expand('d4rl')
    assert len(runs) == 2 * 18 * 8
    assert {r.env_name for r in runs} == set(env_tasks.minari_ids()) == set(hp.D4RL_COLUMNS)
    for run in runs:
        flags = run.flag_dict
        assert env_tasks.parse_env_name(run.env_name).is_minari and run.task == 1
        assert (flags['offline_steps'], flags['online_steps']) == ('500000', '0')
        if run.method == 'FQL':  # FQL's critic aggregation: the mean of two on AntMaze, their minimum on Adroit
            assert flags['agent.num_qs'] == '2'
            assert flags['agent.rho'] == ('0' if run.env_name.startswith('D4RL/antmaze') else '1')
    alphas = {r.env_name: r.flag_dict['agent.alpha'] for r in runs if r.method == 'FQL'}
    # A few cells of the source table (the FQL code's README), one per row kind.
    assert (alphas['D4RL/antmaze/medium-diverse-v1'], alphas['D4RL/antmaze/large-play-v1']) == ('10', '3')
    assert (alphas['D4RL/pen/expert-v2'], alphas['D4RL/hammer/cloned-v2'], alphas['D4RL/relocate/human-v2'],
            alphas['D4RL/relocate/cloned-v2'], alphas['D4RL/door/human-v2']) == ('3000', '10000', '10000', '30000', '30000')
    assert len(expand('d4rl', domains=['D4RL/antmaze'], seeds=[10001])) == 2 * 6
    assert len(expand('d4rl', domains=['D4RL/door/human-v2'], seeds=[10001])) == 2
    with pytest.raises(sweeps.SweepError, match='D4RL settings'):
        sweeps.check_sweep(sweeps.Sweep('x', '', ('ReBRAC',), ('D4RL/door/human-v2',)))


def test_paper_grid_has_all_fifty_tasks():
    envs = {r.env_name for r in expand('paper', methods=['FQL'])}
    assert len(envs) == 50
    assert 'puzzle-4x4-play-singletask-task1-v0' in envs and 'antmaze-giant-navigate-singletask-task5-v0' in envs


@pytest.mark.parametrize('method, env_name, expected', [
    # PROTOCOL §8.2, copied by hand (the README example for cube-triple task 2 included).
    ('QAM', 'cube-triple-play-singletask-task2-v0', dict(inv_temp='3', fql_alpha='0', edit_scale='0')),
    ('QAM-F', 'cube-triple-play-singletask-task2-v0', dict(inv_temp='10', fql_alpha='300', edit_scale='0')),
    ('QAM-E', 'cube-triple-play-singletask-task2-v0', dict(inv_temp='3', edit_scale='0.1', fql_alpha='0')),
    ('QAM', 'puzzle-4x4-play-singletask-task3-v0', dict(inv_temp='30')),
    ('QAM-E', 'puzzle-4x4-play-singletask-task1-v0', dict(inv_temp='0.1', edit_scale='0.9')),
    ('QAM-E', 'scene-play-singletask-task4-v0', dict(inv_temp='1', edit_scale='0')),
    ('QAM-F', 'humanoidmaze-large-navigate-singletask-task1-v0', dict(inv_temp='0.3', fql_alpha='30')),
    ('BAM', 'humanoidmaze-medium-navigate-singletask-task2-v0', dict(inv_temp='10')),
    ('FQL', 'cube-quadruple-play-singletask-task5-v0', dict(alpha='100')),
    ('FBRAC', 'puzzle-3x3-play-singletask-task1-v0', dict(alpha='0.03')),
    ('FEdit', 'humanoidmaze-medium-navigate-singletask-task3-v0', dict(edit_scale='0.5')),
    ('DSRL', 'antmaze-giant-navigate-singletask-task1-v0', dict(noise_scale='1.2')),
    ('IFQL', 'humanoidmaze-medium-navigate-singletask-task1-v0', dict(kappa='0.7')),
    ('FAWAC', 'scene-play-singletask-task1-v0', dict(inv_temp='6.4')),
    ('CGQL', 'humanoidmaze-large-navigate-singletask-task1-v0',
     dict(mode='simple', inv_temp='10', guidance_coef='0.01')),
    ('CGQL-M', 'antmaze-giant-navigate-singletask-task1-v0', dict(mode='mse', guidance_coef='0.1', noisy_coef='0.001')),
    ('CGQL-L', 'puzzle-3x3-play-singletask-task1-v0', dict(mode='linex', inv_temp='10', noisy_coef='0.001')),
    ('QSM', 'cube-double-play-singletask-task2-v0',
     dict(inv_temp='1', alpha='10', clip_sampler_before='False', clip_sampler_after='True')),
    ('DAC', 'cube-double-play-singletask-task2-v0',
     dict(alpha='3', clip_sampler_before='True', clip_sampler_after='False')),
    ('ReBRAC', 'humanoidmaze-large-navigate-singletask-task1-v0', dict(alpha_actor='0.01', actor_noise='0.1')),
    ('ReBRAC', 'puzzle-3x3-play-singletask-task1-v0', dict(alpha_actor='0.1', actor_noise='0')),
])
def test_per_domain_values_spot_checks(method, env_name, expected):
    run = one('paper', method, env_name)
    flags = agent_flags(run)
    assert {k: flags[k] for k in expected} == expected
    assert run.flag_dict.get('offline_steps') is None  # the protocol's 1M offline + 500K online: main.py's defaults


def test_rlpd_is_online_only_with_balanced_batches():
    run = one('rlpd', 'RLPD', 'scene-play-singletask-task3-v0', seed=120012)
    assert run.agent == 'rlpd' and agent_flags(run)['bc_alpha'] == '0.3'
    assert run.flag_dict['offline_steps'] == '0' and run.flag_dict['balanced_sampling'] == 'True'
    assert agent_flags(one('rlpd', 'RLPD', 'humanoidmaze-medium-navigate-singletask-task1-v0'))['bc_alpha'] == '0.03'


def parse_protocol_tables():
    """{(method, key): {domain: value}} from the Markdown tables of PROTOCOL §8.2."""
    text = open(PROTOCOL).read()
    section = text[text.index('### 8.2'):]
    section = section[: section.index('\n---')]
    tables = {}
    for line in section.splitlines():
        cells = [c.strip().strip('*') for c in line.strip().strip('|').split('|')]
        if len(cells) != 12 or cells[0] in ('method', '') or set(cells[0]) <= {'-'}:
            continue
        method = cells[0].split(' (')[0]
        tables[(method, cells[1])] = dict(zip(hp.COLUMNS, map(float, cells[2:])))
    return tables


@pytest.mark.skipif(not os.path.exists(PROTOCOL), reason='../shared/spec/PROTOCOL.md is not next to the repository')
def test_every_tuned_value_equals_the_protocol_table():
    tables = parse_protocol_tables()
    assert len(tables) == 23  # every row of the three tables of §8.2 (5 + 10 + 8)
    assert {m for m, _ in tables} == set(PUBLISHED_METHODS)
    for method, spec in hp.METHODS.items():
        assert set(spec.tuned) == {key for m, key in tables if m == method}, method
    for (method, key), values in tables.items():
        for domain, value in values.items():
            _, settings, _ = hp.resolve(method, domain)
            assert settings[key] == value, (method, key, domain)
    # ... and on the command lines of every sweep, for every task and seed (variants: the keys they do not change).
    for name in sweeps.SWEEP_FILES:
        for run in by_key(name).values():
            if sweeps.is_d4rl(run.dataset):  # not in the QAM paper: D4RL_METHODS, tested on its own
                continue
            variant = hp.VARIANTS.get(run.method, hp.Variant(run.method))
            for (method, key), values in tables.items():
                if method == variant.base and key not in variant.scale and key not in variant.settings:
                    assert float(agent_flags(run)[key]) == values[sweeps.dataset_column(run.dataset)], run.key


def test_method_definitions_follow_algorithms_table():
    assert list(hp.METHODS) == PUBLISHED_METHODS
    agents_of = {m: s.agent for m, s in hp.METHODS.items()}
    assert agents_of == {'QAM': 'qam', 'QAM-F': 'qam', 'QAM-E': 'qam', 'BAM': 'bam', 'FQL': 'fql', 'FBRAC': 'fbrac',
                         'FEdit': 'fedit', 'DSRL': 'dsrl', 'IFQL': 'ifql', 'FAWAC': 'fawac', 'CGQL': 'cgql',
                         'CGQL-M': 'cgql', 'CGQL-L': 'cgql', 'QSM': 'qsm', 'DAC': 'dac', 'ReBRAC': 'rebrac',
                         'RLPD': 'rlpd'}
    # QAM, QAM-E and QAM-F share one configuration on cube-double but are separate runs: separate folders.
    runs = [one('paper', m, 'cube-double-play-singletask-task2-v0') for m in ('QAM', 'QAM-E', 'QAM-F')]
    assert len({tuple(sorted(agent_flags(r).items())) for r in runs}) == 1
    assert len({r.save_dir('runs') for r in runs}) == 3


def test_quality_sweep_uses_the_original_domains_values():
    for method in ('QAM-E', 'FQL', 'DSRL'):
        for quality, original in (('cube-double-noisy', 'cube-double-play'), ('puzzle-3x3-noisy', 'puzzle-3x3-play'),
                                  ('antmaze-large-stitch', 'antmaze-large-navigate')):
            noisy = one('quality', method, f'{quality}-singletask-task3-v0')
            main_run = one('paper', method, f'{original}-singletask-task3-v0')
            assert agent_flags(noisy) == agent_flags(main_run)
    assert agent_flags(one('quality', 'FQL', 'antmaze-large-stitch-singletask-task1-v0'))['alpha'] == '3'


def test_sensitivity_sweep_changes_one_thing_on_representative_tasks():
    runs = expand('sensitivity')
    assert [r.method for r in runs[::120]] == PUBLISHED_SENSITIVITY
    tasks = {r.dataset: r.task for r in runs}
    assert tasks == {d: (1 if d.startswith(('antmaze', 'humanoidmaze')) else 2) for d in MAIN_DOMAINS}
    for run in runs:
        base = agent_flags(one('paper', 'QAM-E', run.env_name, run.seed))
        changed = {k: v for k, v in agent_flags(run).items() if base.get(k) != v}
        expected = {
            'QAM-E-NOCLIP': {'clip_grad': 'False'}, 'QAM-E (K=2)': {'num_qs': '2'},
            'QAM-E (T=1)': {'flow_steps': '1'}, 'QAM-E (T=3)': {'flow_steps': '3'},
            'QAM-E (T=20)': {'flow_steps': '20'}, 'QAM-E (T=30)': {'flow_steps': '30'},
        }.get(run.method)
        if expected is None:  # inv_temp x factor
            factor = float(re.search(r'\(([\d.]+)x tau\)', run.method).group(1))
            assert set(changed) == {'inv_temp'}
            assert float(changed['inv_temp']) == pytest.approx(float(base['inv_temp']) * factor, rel=1e-9)
        else:
            assert changed == expected, run.key
    c3, p44 = 'cube-triple-play-singletask-task2-v0', 'puzzle-4x4-play-singletask-task2-v0'
    assert agent_flags(one('sensitivity', 'QAM-E (0.3x tau)', c3))['inv_temp'] == '0.9'  # 3 x 0.3
    assert agent_flags(one('sensitivity', 'QAM-E (10x tau)', p44))['inv_temp'] == '1'  # 0.1 x 10


# ------------------------------------------------------------------------------------------------ selection
def test_selection_by_method_domain_task_and_seed():
    runs = expand('paper', methods=['FQL', 'QAM'], domains=['c2', 'scene-play-sparse', 'antmaze-giant'],
                  tasks=[1, 3], seeds=[20002, 10001])
    assert len(runs) == 2 * 3 * 2 * 2
    assert [r.method for r in runs[::12]] == ['QAM', 'FQL']  # sweep order, not selection order
    assert {r.dataset for r in runs} == {'cube-double-play', 'scene-play', 'antmaze-giant-navigate'}
    assert {r.task for r in runs} == {1, 3} and {r.seed for r in runs} == {10001, 20002}
    assert {r.dataset for r in expand('quality', domains=['cube-double'])} == {'cube-double-noisy'}
    assert len(expand('sensitivity', domains=['al', 'c3'], tasks=[1])) == 10 * 12  # only antmaze has task 1


def test_extra_args_override_once_and_keep_the_method():
    (run,) = expand('paper', methods=['QAM'], domains=['c2'], tasks=[2], seeds=[10001],
                    extra_args="--offline_steps=40 --agent.inv_temp=7 --agent.actor_hidden_dims='(32, 32)' "
                               '--noprogress')
    argv = run.argv('/tmp/x')
    names = [a.split('=')[0] for a in argv[2:]]
    assert len(names) == len(set(names))
    assert '--agent.inv_temp=7' in argv and '--offline_steps=40' in argv and '--progress=False' in argv
    assert '--agent.actor_hidden_dims=(32, 32)' in argv and '--save_dir=/tmp/x/QAM' in argv


def test_tiny_budget_keeps_what_defines_a_method():
    (rlpd,) = expand('rlpd', domains=['c2'], tasks=[2], seeds=[10001], tiny=True)
    assert rlpd.flag_dict['offline_steps'] == '0' and rlpd.flag_dict['online_steps'] == '20'
    (k2,) = expand('sensitivity', methods=['QAM-E (K=2)'], domains=['c3'], seeds=[10001], tiny=True,
                   extra_args='--online_steps=30')
    assert k2.flag_dict['agent.num_qs'] == '2' and k2.flag_dict['online_steps'] == '30'
    assert k2.flag_dict['agent.batch_size'] == '16' and k2.flag_dict['offline_steps'] == '20'


@pytest.mark.parametrize('selection, message', [
    (dict(methods=['QAMX']), 'Unknown method'),
    (dict(methods=['RLPD']), 'not in this sweep'),
    (dict(domains=['cube-quintuple']), 'Unknown domain'),
    (dict(domains=['cube-double-noisy']), 'Unknown domain'),
    (dict(tasks=[6]), 'Unknown task'),
    (dict(seeds=[12345]), 'not in this sweep'),
    (dict(extra_args='--offline_step=3'), 'unknown main.py flag'),
    (dict(extra_args='--seed=3'), 'set by the sweep itself'),
    (dict(extra_args='offline_steps=3'), 'expected --name=value'),
    (dict(extra_args='--num_seeds=3'), 'seeds_per_process'),
])
def test_bad_selection_raises(selection, message):
    with pytest.raises(sweeps.SweepError, match=message):
        expand('paper', **selection)


def test_bad_sweep_files_raise(tmp_path):
    with pytest.raises(sweeps.SweepError, match='Unknown sweep'):
        sweeps.load('papers')
    bad = tmp_path / 'bad.py'
    for body, message in [
        ("methods=('QAM', 'SAC'), datasets=('cube-double-play',)", "unknown method 'SAC'"),
        ("methods=('QAM',), datasets=('cube-single-play',)", 'no tuned hyperparameters'),
        ("methods=('QAM',), datasets=('cube-double-plays',)", 'Unknown dataset'),
        ("methods=('QAM',), datasets=('cube-double-play',), flags=(('agent.inv_temp', 1), ('eval_every', 5))",
         'unknown main.py flag --eval_every'),
    ]:
        bad.write_text(f'from sweeps.sweeps import Sweep\nSWEEP = Sweep(name="bad", description="", {body})\n')
        with pytest.raises(sweeps.SweepError, match=message):
            sweeps.load(str(bad))
    good = tmp_path / 'mine.py'
    good.write_text("from sweeps.sweeps import Sweep\nSWEEP = Sweep(name='mine', description='', methods=('FQL',), "
                    "datasets=('cube-double-noisy',), tasks=(2,), seeds=(1, 2), flags=(('online_steps', 0),))\n")
    runs = sweeps.expand(sweeps.load(str(good)))
    assert [(r.env_name, r.seed, r.flag_dict['online_steps'], r.flag_dict['agent.alpha']) for r in runs] == [
        ('cube-double-noisy-singletask-task2-v0', 1, '0', '300'),
        ('cube-double-noisy-singletask-task2-v0', 2, '0', '300'),
    ]


def test_unknown_agent_key_is_an_error_before_anything_runs(tmp_path, capsys):
    runs = expand('paper', methods=['QAM'], domains=['c2'], tasks=[2], seeds=[10001], extra_args='--agent.inv_tmp=3')
    with pytest.raises(sweeps.SweepError, match="Unknown key.*inv_tmp.*'qam'"):
        sweeps.check_agents(runs)
    code = launch.main(['paper', '--backend=local', '--methods=QAM', '--domains=c2', '--tasks=2', '--seeds=10001',
                        '--extra_args=--agent.inv_tmp=3', f'--save_dir={tmp_path}'])
    assert code == 2 and 'inv_tmp' in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    for argv in (['paper', '--methods=QAMX'], ['paper', '--domains=c9'], ['rlpd', '--methods=QAM'], ['nope']):
        assert launch.main(argv + ['--backend=slurm', f'--save_dir={tmp_path}']) == 2
    assert os.listdir(tmp_path) == []


def test_missing_agent_is_an_error_to_launch_and_a_warning_to_print(monkeypatch):
    runs = expand('paper', methods=['FQL'], domains=['c2'], tasks=[2], seeds=[10001])
    monkeypatch.setattr(sweeps, 'agent_config_keys', lambda agent: None)
    with pytest.raises(sweeps.SweepError, match="agent 'fql'.*does not exist"):
        sweeps.check_agents(runs)
    assert 'does not exist' in sweeps.check_agents(runs, require_agents=False)[0]


def python_value(text):
    """A flag's value as Python: '3' -> 3, 'True' -> True, '(256, 256)' -> (256, 256), 'mse' -> 'mse'."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def test_every_shipped_run_resolves_to_a_run_directory_of_its_own(tmp_path):
    """Each run of every shipped sweep parses and resolves as main.py would take it (a refusal would be a
    SweepError naming the run), into main.py's layout; two runs share a directory only when their commands are the
    same. That main.py writes exactly that directory is checked end to end by the local-backend test below."""
    root, commands = str(tmp_path), {}
    for name in sweeps.SWEEP_FILES:
        for run in expand(name, seeds=[10001]):
            path = run_state.run_dir(run, root)
            assert re.fullmatch(re.escape(os.path.join(run.save_dir(root), run.agent, run.env_name, 'seed10001-'))
                                + '[0-9a-f]{8}', path), path
            flags = tuple(run.flags)
            assert commands.setdefault(path, flags) == flags, f'{name}: {run.key} shares {path} with another command'
            _, settings = run_state.resolve(run, root)
            for flag, value in run.flags:  # every agent value of the sweep reaches the settings main.py hashes
                if flag.startswith('agent.'):
                    assert settings['agent'][flag[len('agent.'):]] == python_value(value), (run.key, flag)
    with pytest.raises(sweeps.SweepError, match=r'QAM/.*main.py would refuse this run: --start_training must be'):
        run, = expand('mini', methods=['QAM'], domains=['scene'], tasks=[1], seeds=[10001],
                      extra_args='--start_training=2')
        run_state.run_dir(run, root)


def test_existing_agents_accept_every_key_of_their_methods():
    runs = [r for name in sweeps.SWEEP_FILES for r in expand(name, seeds=[10001])]
    present = set(agents.available_agents())
    sweeps.check_agents([r for r in runs if r.agent in present])


# ------------------------------------------------------------------------------------- launcher: print, confirm
def test_print_backend_lists_runnable_commands(tmp_path, capsys):
    code = launch.main(['paper', '--methods=QAM-E', '--domains=c3', '--tasks=2', '--seeds=10001,20002',
                        f'--save_dir={tmp_path}'])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0].startswith('# paper: 2 runs selected') and len(lines) == 3
    argv = shlex.split(lines[1])
    assert argv[1].endswith('main.py') and '--method=QAM-E' in argv and f'--save_dir={tmp_path}/QAM-E' in argv
    assert '--agent.inv_temp=3' in argv and '--agent.edit_scale=0.1' in argv and '--seed=10001' in argv
    assert os.listdir(tmp_path) == []  # a dry run writes nothing


def test_seeds_of_one_configuration_pack_into_processes(tmp_path, capsys):
    runs = expand('paper', methods=['QAM', 'FQL'], domains=['c2'], tasks=[1, 2], seeds=[10001 * k for k in range(1, 7)])
    root = str(tmp_path)
    assert run_state.pack_runs(runs, 1, root) == [[run] for run in runs]

    def keys(packs):
        return [[(run.method, run.task, run.seed // 10001) for run in pack] for pack in packs]

    # main.py --num_seeds=n trains seeds s + 10001k, k < n: a pack takes consecutive seeds of one configuration.
    qam_task1 = [run for run in runs if run.method == 'QAM' and run.task == 1]
    assert keys(run_state.pack_runs(qam_task1, 4, root)) == [[('QAM', 1, k) for k in (1, 2, 3, 4)],
                                                             [('QAM', 1, 5), ('QAM', 1, 6)]]
    gaps = [run for run in qam_task1 if run.seed // 10001 not in (3, 5)]  # seeds 1, 2, 4, 6
    assert keys(run_state.pack_runs(gaps[::-1], 4, root)) == [[('QAM', 1, 6)], [('QAM', 1, 4)], [('QAM', 1, 1),
                                                                                                ('QAM', 1, 2)]]
    # Runs whose latest checkpoints differ are not packed: main.py resumes a pack from a step all of its runs saved.
    fake_run_dir(qam_task1[1], root, checkpoint=100000)
    fake_run_dir(qam_task1[2], root, checkpoint=100000)
    assert keys(run_state.pack_runs(qam_task1, 3, root)) == [[('QAM', 1, 1)], [('QAM', 1, 2), ('QAM', 1, 3)],
                                                             [('QAM', 1, 4), ('QAM', 1, 5), ('QAM', 1, 6)]]
    # Methods, tasks and other settings never share a process; every run is in exactly one.
    packs = run_state.pack_runs(runs, 12)
    assert keys(packs) == [[(method, task, k) for k in range(1, 7)] for method in ('QAM', 'FQL') for task in (1, 2)]
    other = expand('paper', methods=['QAM'], domains=['c2'], tasks=[1], seeds=[30003], extra_args='--agent.lr=1e-4')
    assert keys(run_state.pack_runs(qam_task1[:2] + other, 3)) == [[('QAM', 1, 1), ('QAM', 1, 2)], [('QAM', 1, 3)]]
    with pytest.raises(ValueError):
        run_state.pack_runs(runs, 0)

    # The command of a pack is its first run's with --num_seeds; the print backend shows one line per process.
    argv = run_state.pack_argv(packs[0], root)
    assert argv == packs[0][0].argv(root) + ['--num_seeds=6']
    assert launch.main(['paper', '--methods=QAM', '--domains=c2', '--tasks=1', f'--save_dir={root}',
                        '--seeds=10001,20002,30003,40004,50005,60006', '--seeds_per_process=4']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert '6 to launch in 3 processes' in lines[0] and len(lines) == 4, lines
    assert '--seed=10001' in lines[1] and '--num_seeds' not in lines[1]  # apart from seeds 2 and 3 (checkpoints)
    assert '--seed=20002' in lines[2] and lines[2].endswith('--num_seeds=2')
    assert '--seed=40004' in lines[3] and lines[3].endswith('--num_seeds=3')
    assert launch.main(['paper', '--methods=QAM', '--domains=c2', '--seeds_per_process=0', f'--save_dir={root}']) == 2
    assert '--seeds_per_process must be at least 1' in capsys.readouterr().err


def test_confirmation_threshold(tmp_path, monkeypatch, capsys):
    launched = []
    monkeypatch.setattr(launch, 'launch_local', lambda runs, root, args: launched.append(len(runs)) or 0)
    argv = ['paper', '--backend=local', '--methods=QAM', '--domains=c2', '--tasks=1,2', f'--save_dir={tmp_path}']
    monkeypatch.setattr('sys.stdin.isatty', lambda: False)
    assert launch.main(argv + ['--confirm_above=10']) == 3 and launched == []  # 24 > 10 runs, no terminal: refused
    assert 'pass --yes' in capsys.readouterr().err
    monkeypatch.setattr('sys.stdin.isatty', lambda: True)
    monkeypatch.setattr('builtins.input', lambda prompt: 'n')
    assert launch.main(argv + ['--confirm_above=10']) == 3 and launched == []
    monkeypatch.setattr('builtins.input', lambda prompt: 'y')
    assert launch.main(argv + ['--confirm_above=10']) == 0 and launched == [24]
    assert launch.main(argv + ['--confirm_above=10', '--yes']) == 0 and launched == [24, 24]
    assert launch.main(argv + ['--confirm_above=24']) == 0 and launched == [24, 24, 24]  # at the threshold: no question
    assert launch.main(argv) == 0 and launched == [24, 24, 24, 24]  # the default threshold is 100 runs


# ------------------------------------------------------------------------------------------- status from disk
def fake_run_dir(run, root, markers=(), checkpoint=None, online_data_version=experiment.ONLINE_DATA_VERSION, **changes):
    """The run directory that main.py writes for `run` (flags.json with its resolved settings), without training.
    `changes`: agent settings of another configuration; `online_data_version=None`: a run of the code before the
    online data fix (whose settings had no version)."""
    flag_values, settings = run_state.resolve(run, root)
    settings = copy.deepcopy(settings)
    settings['agent'].update(changes)
    if online_data_version is None:
        del settings['online_data_version']
    record = {'flags': run_flags.recorded_flags(flag_values, run.seed), 'settings': settings}
    run_dir = run_flags.run_dir(flag_values, settings, run.seed)
    os.makedirs(run_dir)
    json.dump(record, open(os.path.join(run_dir, 'flags.json'), 'w'))
    for marker in markers:
        json.dump({'summary': 'fine', 'step': 7, 'keys': ['critic/loss']}, open(os.path.join(run_dir, marker), 'w'))
    if checkpoint:
        os.makedirs(os.path.join(run_dir, 'checkpoints', str(checkpoint)))
    return run_dir


def test_status_reads_run_directories_and_launch_records(tmp_path):
    runs = expand('paper', methods=['QAM'], domains=['c2'], tasks=[1, 2, 3, 4, 5], seeds=[10001, 20002])
    root = str(tmp_path)
    done, diverged, crashed, running, killed, queued, requeued, other_config, fresh, stopped = runs
    fake_run_dir(done, root, markers=['DONE'])
    fake_run_dir(diverged, root, markers=['DIVERGED'])
    fake_run_dir(crashed, root, checkpoint=100000)
    paths = run_state.launch_paths(crashed, root)
    os.makedirs(os.path.dirname(paths['log']))
    open(paths['log'], 'w').write('line 1\nTraceback (most recent call last):\nMemoryError: out of memory\n')
    run_state.write_json(paths['json'], dict(state='failed', returncode=1, host='h', ended='t'))
    fake_run_dir(running, root)
    started = dict(state='running', host='h', pid=1, started='t')
    run_state.write_json(run_state.launch_paths(running, root)['json'], started)
    fake_run_dir(killed, root, checkpoint=300000)
    run_state.write_json(run_state.launch_paths(killed, root)['json'], started)  # no lock: its process is gone
    run_state.write_json(run_state.launch_paths(queued, root)['job'], dict(job_id='7_0'))
    fake_run_dir(requeued, root, checkpoint=200000)
    run_state.write_json(run_state.launch_paths(requeued, root)['job'], dict(job_id='7_1'))
    run_state.write_json(run_state.launch_paths(requeued, root)['json'], dict(state='interrupted', job='7_1'))
    fake_run_dir(other_config, root, markers=['DONE'], inv_temp=3.0)  # another configuration's finished run
    fake_run_dir(stopped, root, checkpoint=50)
    run_state.write_json(run_state.launch_paths(stopped, root)['json'], dict(state='stopped', ended='t'))

    with open(run_state.launch_paths(running, root)['lock'], 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as execute() holds it while main.py runs
        statuses = [run_state.status(r, root, queue={'7_0': 'PENDING', '7_1': 'PENDING'}) for r in runs]
    by_run = {s.run.key: s for s in statuses}
    states = [by_run[r.key].state for r in runs]
    assert states == ['done', 'failed', 'failed', 'running', 'interrupted', 'queued', 'queued', 'not started',
                      'not started', 'interrupted']
    assert 'diverged at step 7' in by_run[diverged.key].detail
    assert by_run[crashed.key].log_tail[-1] == 'MemoryError: out of memory'
    assert 'exit code 1' in by_run[crashed.key].detail
    assert 'checkpoint at step 300000' in by_run[killed.key].detail
    assert 'requeued' in by_run[requeued.key].detail and 'requeued' not in by_run[queued.key].detail
    # Without the queue, the submitted run that never started is reported as failed, the requeued one as killed.
    assert run_state.status(queued, root, queue={}).state == 'failed'
    assert run_state.status(requeued, root, queue={}).state == 'interrupted'
    assert run_state.status(queued, root, queue=None).state == 'queued'  # no squeue here: cannot tell
    # What a launch would start again: not the finished, running, queued or diverged runs.
    relaunched = [r.key for r in launch.to_launch(statuses)]
    assert relaunched == [r.key for r in (crashed, killed, other_config, fresh, stopped)]
    assert diverged in launch.to_launch(statuses, retry_diverged=True)


def test_a_finished_run_of_the_broken_online_data_path_is_not_done(tmp_path):
    run, = expand('paper', methods=['QAM'], domains=['c2'], tasks=[1], seeds=[10001])
    fake_run_dir(run, str(tmp_path), markers=['DONE'], online_data_version=None)
    assert run_state.status(run, str(tmp_path), queue={}).state == 'not started'


def test_a_run_that_main_py_writes_outside_the_launcher_is_running_and_not_launched(tmp_path):
    run, = expand('paper', methods=['QAM'], domains=['c2'], tasks=[1], seeds=[10001])
    run_dir = fake_run_dir(run, str(tmp_path), checkpoint=100000)
    with experiment.RunLock(run_dir).held():  # as main.py holds it while it trains the run
        found = run_state.status(run, str(tmp_path), queue={})
        assert found.state == 'running' and f'pid {os.getpid()}' in found.detail
        assert run_state.execute([run], str(tmp_path), python='false') == {run.key: 'skipped'}
    assert run_state.status(run, str(tmp_path), queue={}).state == 'interrupted'


def test_status_command_prints_every_run_with_failure_logs(tmp_path, capsys):
    runs = expand('paper', methods=['FQL'], domains=['c2'], tasks=[2], seeds=[10001, 20002])
    fake_run_dir(runs[0], str(tmp_path), markers=['DONE'])
    paths = run_state.launch_paths(runs[1], str(tmp_path))
    os.makedirs(os.path.dirname(paths['log']))
    open(paths['log'], 'w').write('\n'.join(f'line {i}' for i in range(30)) + '\nValueError: bad dataset\n')
    run_state.write_json(paths['json'], dict(state='failed', returncode=1))
    assert launch.main(['status', 'paper', '--methods=FQL', '--domains=c2', '--tasks=2', '--seeds=10001,20002',
                        f'--save_dir={tmp_path}', '--tail=3']) == 0
    out = capsys.readouterr().out
    assert 'done 1, running 0, queued 0, failed 1, interrupted 0, not started 0' in out
    assert re.search(r'^done +FQL +cube-double-play-singletask-task2-v0 +seed 10001', out, re.M)
    assert re.search(r'^failed +FQL .* seed 20002 +exit code 1', out, re.M)
    assert '| line 28\n' in out and '| ValueError: bad dataset' in out and '| line 27' not in out


def test_gpu_share_per_run():
    assert run_state.device_env(0, [], 1) == {}
    assert run_state.device_env(3, ['0', '1'], 1) == {'CUDA_VISIBLE_DEVICES': '1'}
    assert run_state.device_env(2, ['5'], 4) == {'CUDA_VISIBLE_DEVICES': '5', 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.225'}


# ---------------------------------------------------------------------------------------- local, end to end
def tiny_sweep(dataset_dir):
    """Two agents x two seeds of the paper sweep at a few-second budget (cube-double task 2, generated data):
    (the launcher's arguments, the runs they select). The second agent is FQL (QAM-E if agents/fql.py is absent)."""
    methods = ['QAM', 'FQL' if 'fql' in agents.available_agents() else 'QAM-E']
    extra = f'--dataset_source=dir --dataset_dir={dataset_dir} --agent.flow_steps=3'
    argv = ['paper', f'--methods={",".join(methods)}', '--domains=cube-double', '--tasks=2', '--seeds=10001,20002',
            '--tiny', f'--extra_args={extra}']
    runs = sweeps.expand(sweeps.load('paper'), methods, ['cube-double'], [2], [10001, 20002], extra, tiny=True)
    return argv, runs


def read_steps(path):
    with open(path) as f:
        return [int(row['step']) for row in csv.DictReader(f)]


def check_finished(runs, root):
    for run in runs:
        run_dir = run_state.find_run_dir(run, root)
        assert run_dir and os.path.exists(os.path.join(run_dir, 'DONE')), run.key
        assert read_steps(os.path.join(run_dir, 'eval.csv')) == [20, 40], run.key  # each evaluation exactly once
        assert read_steps(os.path.join(run_dir, 'train.csv')) == [10, 20, 30, 40], run.key
        record = json.load(open(os.path.join(run_dir, 'flags.json')))
        assert record['flags']['method'] == run.method
        # The launcher resolves the run (run_flags) to the settings that main.py recorded, and to no other directory.
        _, settings = run_state.resolve(run, root)
        assert record['settings'] == json.loads(json.dumps(settings, default=str)), run.key
        seed_dirs = [name for name in os.listdir(os.path.dirname(run_dir)) if name.startswith(f'seed{run.seed}-')]
        assert seed_dirs == [os.path.basename(run_dir)], run.key
        assert not os.path.exists(os.path.join(run_dir, 'checkpoints'))


def test_local_backend_runs_a_tiny_sweep_resumes_and_skips(tmp_path, generated_datasets_dir, monkeypatch, capsys):
    monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
    monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', os.environ['QAM_TEST_JAX_CACHE'])
    root = str(tmp_path / 'runs')
    selection, runs = tiny_sweep(generated_datasets_dir)
    # One run is interrupted first (stopped at its step-10 checkpoint): the launch resumes it.
    first = runs[0]
    assert launch.main(['paper', '--backend=local', '--methods=QAM', '--domains=c2', '--tasks=2', '--seeds=10001',
                        '--tiny', f'{selection[-1]} --stop_at_step=10', f'--save_dir={root}']) == 1  # not finished
    assert run_state.status(first, root).state == 'interrupted'
    assert 'checkpoint at step 10' in run_state.status(first, root).detail
    capsys.readouterr()

    # Two seeds per process: FQL's seeds train as one vmapped program; QAM's stay apart (one has a checkpoint).
    assert launch.main(selection + ['--backend=local', '--slots=2', '--seeds_per_process=2', f'--save_dir={root}']) == 0
    out = capsys.readouterr().out
    assert '4 runs selected (0 done' in out and '4 to launch in 3 processes' in out and out.count(' done ') >= 4, out
    check_finished(runs, root)
    log = open(run_state.launch_paths(first, root)['log']).read()
    assert 'Resumed from the checkpoint at step 10.' in log and '--num_seeds' not in log
    packed = [run for run in runs if run.method != first.method]
    logs = [open(run_state.launch_paths(run, root)['log']).read() for run in packed]
    assert logs[0] == logs[1] and logs[0].count('--num_seeds=2 (one process for the seeds 10001, 20002)') == 1
    assert all(run_state.read_json(run_state.launch_paths(run, root)['json'])['state'] == 'done' for run in packed)

    assert [s.state for s in launch.collect_status(runs, root)] == ['done'] * 4
    assert launch.main(['status'] + selection + [f'--save_dir={root}']) == 0
    assert 'done 4, running 0, queued 0, failed 0, interrupted 0, not started 0' in capsys.readouterr().out
    # A second launch skips every finished run without touching it.
    stamps = {r.key: os.path.getmtime(os.path.join(run_state.find_run_dir(r, root), 'DONE')) for r in runs}
    assert launch.main(selection + ['--backend=local', f'--save_dir={root}']) == 0
    assert '(4 done, 0 running or queued, 0 diverged): 0 to launch.' in capsys.readouterr().out
    assert stamps == {r.key: os.path.getmtime(os.path.join(run_state.find_run_dir(r, root), 'DONE')) for r in runs}


def long_tiny_run(dataset_dir):
    """One run of the tiny sweep with an online phase too long to finish in a test, to be stopped in it: (the
    launcher's arguments, the run)."""
    extra = (f'--dataset_source=dir --dataset_dir={dataset_dir} --agent.flow_steps=3 '
             '--online_steps=100000 --eval_interval=50000 --save_interval=50000')
    selection = ['paper', '--methods=QAM', '--domains=cube-double', '--tasks=2', '--seeds=10001', '--tiny',
                 f'--extra_args={extra}']
    (run,) = sweeps.expand(sweeps.load('paper'), ['QAM'], ['cube-double'], [2], [10001], extra, tiny=True)
    return selection, run


def in_online_phase(run, root):
    """Whether the run has logged a row of its online phase (after its 20 offline steps)."""
    run_dir = run_state.find_run_dir(run, root)
    path = os.path.join(run_dir, 'train.csv') if run_dir else ''
    return os.path.exists(path) and max(read_steps(path), default=0) > 20


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGHUP], ids=['SIGTERM', 'SIGHUP'])
def test_a_local_launch_stopped_by_a_signal_waits_for_its_runs_checkpoints(tmp_path, generated_datasets_dir, signum):
    # `kill <launcher>`, or its terminal closing (SIGHUP, its output then going nowhere): the launcher passes SIGTERM
    # on and waits while its run finishes the current step, saves a checkpoint and exits, writing the run's output
    # to its log all along. (It used to die at once, closing the pipe of the run's output: the run then died at its
    # next line, before its checkpoint.)
    selection, run = long_tiny_run(generated_datasets_dir)
    root = str(tmp_path / 'runs')
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=os.environ['QAM_TEST_JAX_CACHE'])
    output = tmp_path / 'launcher.log'
    terminal_closed = signum == signal.SIGHUP
    with open(output, 'w') as out:
        command = [sys.executable, '-m', 'sweeps.launch', *selection, '--backend=local', f'--save_dir={root}']
        launcher = subprocess.Popen(with_default_stop_signals(command), cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE if terminal_closed else out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while not in_online_phase(run, root):
            assert launcher.poll() is None and time.time() < deadline, open(output).read()[-3000:]
            time.sleep(0.05)
        if terminal_closed:
            launcher.stdout.close()
        launcher.send_signal(signum)
        assert launcher.wait(timeout=300) == 128 + signum, open(output).read()[-3000:]
    except BaseException:  # leave no training process behind
        launcher.kill()
        pid = (run_state.read_json(run_state.launch_paths(run, root)['json']) or {}).get('pid')
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(pid, signal.SIGKILL)
        raise
    assert terminal_closed or 'SIGTERM: stopping the running runs' in open(output).read()

    # By then the run has ended by the signal, with a checkpoint at the step it was in and every row up to it.
    record = run_state.read_json(run_state.launch_paths(run, root)['json'])
    assert record['state'] == 'interrupted' and record['returncode'] == -signal.SIGTERM, record
    run_dir = run_state.find_run_dir(run, root)
    step = run_state.latest_checkpoint(run_dir)
    assert step is not None and step > 20  # the step the signal came in (the periodic one is at 50000)
    assert read_steps(os.path.join(run_dir, 'train.csv')) == list(range(10, step + 1, 10))
    log = open(run_state.launch_paths(run, root)['log']).read()
    assert f'Stopped at step {step} after SIGTERM, with a checkpoint' in log


RUN_UNDER_SLURM = '''#!{python}
# Stands for main.py in a Slurm job: on SIGUSR2 (submitit's warning of the time limit, which Slurm sends to every
# process of the job) it finishes its current step, here 1 s, then exits by the signal; unless it is {stubborn}.
import os, signal, time
stop = []
signal.signal(signal.SIGUSR2, lambda signum, frame: stop.append(signum) if not {stubborn} else None)
print('handler installed', flush=True)
while not stop:
    time.sleep(0.01)
time.sleep(1)
print('Stopped after SIGUSR2, with a checkpoint', flush=True)
signal.signal(signal.SIGUSR2, signal.SIG_DFL)
os.kill(os.getpid(), signal.SIGUSR2)
'''


@pytest.mark.parametrize('stubborn', [False, True])
def test_a_slurm_task_lets_its_signalled_runs_checkpoint_before_it_is_requeued(tmp_path, stubborn):
    # submitit calls RunGroup.checkpoint on its signal, then requeues the job and exits, and Slurm kills what is
    # left: the group first waits for its runs to finish their step and exit, up to stop_wait_s.
    from sweeps.slurm_job import RunGroup

    (run,) = sweeps.expand(sweeps.load('paper'), ['QAM'], ['cube-double'], [2], [10001], '', tiny=True)
    root, python = str(tmp_path / 'runs'), tmp_path / 'python'
    python.write_text(RUN_UNDER_SLURM.format(python=sys.executable, stubborn=stubborn))
    python.chmod(0o755)
    group = RunGroup([[run]], root, str(python), stop_wait_s=2 if stubborn else 120)
    job = threading.Thread(target=group, daemon=True)
    job.start()
    paths = run_state.launch_paths(run, root)
    deadline = time.time() + 60
    while not (os.path.exists(paths['log']) and 'handler installed' in open(paths['log']).read()):
        assert time.time() < deadline and job.is_alive()
        time.sleep(0.01)
    pid = run_state.read_json(paths['json'])['pid']
    try:
        os.kill(pid, signal.SIGUSR2)  # as Slurm does
        start = time.time()
        requeued = group.checkpoint()
        waited = time.time() - start
        record = run_state.read_json(paths['json'])
        if stubborn:  # it gave up after stop_wait_s: the run is still going (Slurm kills it)
            assert 2 <= waited < 30 and record['state'] == 'running'
            os.kill(pid, signal.SIGKILL)
        else:  # it returned once the run had exited, having logged its output all along
            assert 0.9 <= waited < 30 and record['state'] == 'interrupted' and record['returncode'] == -signal.SIGUSR2
            assert 'Stopped after SIGUSR2, with a checkpoint' in open(paths['log']).read()
    except BaseException:  # leave no process behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    job.join(timeout=60)
    # The requeued job runs a new group of the same runs; submitit pickles it.
    again = pickle.loads(pickle.dumps(requeued)).function
    assert (again.packs, again.root, again.python, again.stop_wait_s) == (group.packs, root, str(python),
                                                                           group.stop_wait_s)
