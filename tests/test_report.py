"""sweeps.report: tables equal a direct computation on synthetic run directories, bootstrap intervals behave,
the shipped published CSV reproduces the paper's headline numbers and re-derives from the released pickles,
figures are written, and incomplete grids, diverged runs and mixed configs are reported."""

import csv
import decimal
import hashlib
import json
import os
import pickle

import numpy as np
import pytest

from sweeps import report, report_figures, report_published, report_runs
from sweeps.report_published import Published, paper_step
from sweeps.report_stats import (Bootstrap, probability_of_improvement, published_stat, rliable_aggregates,
                                 rliable_improvement, rliable_profiles)
from utils import experiment

REFERENCE_DIR = report_published.DEFAULT_REFERENCE_DIR
FAST = ['--bootstrap_samples=2000', '--rliable_reps=50', '--curve_bootstrap_samples=100']
TASK = 'cube-double-play-singletask-task{}-v0'
SCENE = 'scene-play-singletask-task{}-v0'


def write_run(root, agent_config, env_name, seed, successes, method='', offline_steps=100, online_steps=60,
              eval_interval=20, status='finished', diverged_step=None, extra_settings=None,
              online_data_version=experiment.ONLINE_DATA_VERSION, normalized_scores=None):
    """A run directory as main.py writes it, with evaluation success fractions `successes` at every eval_interval
    steps (offline rows first, then online rows; a shorter list is an unfinished run). `online_data_version=None`
    writes a run of the code before the online data fix (its settings have no version). `normalized_scores`: a
    D4RL run's normalised score at the same evaluations."""
    agent = {'agent_name': 'qam', 'fql_alpha': 0.0, 'edit_scale': 0.0, 'batch_size': 256, **agent_config}
    settings = dict(env_name=env_name, offline_steps=offline_steps, online_steps=online_steps,
                    eval_interval=eval_interval, agent=agent, sparse=False, **(extra_settings or {}))
    if online_steps and online_data_version is not None:
        settings['online_data_version'] = online_data_version
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    path = os.path.join(root, agent['agent_name'], env_name, f'seed{seed}-{digest}')
    os.makedirs(path, exist_ok=True)
    flags = dict(env_name=env_name, seed=seed, method=method, offline_steps=offline_steps, online_steps=online_steps,
                 eval_interval=eval_interval)
    with open(os.path.join(path, 'flags.json'), 'w') as f:
        json.dump(dict(flags=flags, settings=settings, code_version='test', machine={},
                       started='2026-01-01 00:00:00'), f)
    steps = [s for s in range(eval_interval, offline_steps + 1, eval_interval)]
    steps += [offline_steps + s for s in range(eval_interval, online_steps + 1, eval_interval)]
    with open(os.path.join(path, 'eval.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        scores = [] if normalized_scores is None else ['normalized_score']
        writer.writerow(['step', 'phase', 'success', 'episode_return', 'episode_length', 'num_episodes', 'wall_time',
                         *scores])
        for i, (step, value) in enumerate(zip(steps, successes)):
            writer.writerow([step, 'offline' if step <= offline_steps else 'online', value, 0.0, 100, 50, 1.0,
                             *([normalized_scores[i]] if scores else [])])
    if status == 'finished':
        with open(os.path.join(path, 'DONE'), 'w') as f:
            json.dump(dict(summary='', final={}, dataset='x', dataset_source='generate',
                           deviations=['locally generated dataset (not the official files)']), f)
    elif status == 'diverged':
        with open(os.path.join(path, 'DIVERGED'), 'w') as f:
            json.dump(dict(step=diverged_step, keys=['critic/critic_loss']), f)
    return path


def curve(rng, end_offline, end_online, offline_points=5, online_points=3):
    offline = list(np.round(np.linspace(0, end_offline, offline_points + 1)[1:], 2))
    online = list(np.round(np.linspace(end_offline, end_online, online_points + 1)[1:], 2))
    return offline + online


METHODS = {'QAM': dict(inv_temp=3.0), 'QAM-E': dict(inv_temp=3.0, edit_scale=0.1),
           'QAM-F': dict(inv_temp=10.0, fql_alpha=300.0)}
SEEDS = (10001, 20002, 30003)


def make_grid(root, rng, seeds=SEEDS, tasks=(TASK.format(1), TASK.format(2), SCENE.format(1)), methods=METHODS):
    """Every method x task x seed finished; returns {(method, task, seed): (offline %, online %)}."""
    truth = {}
    for method, config in methods.items():
        for task in tasks:
            for seed in seeds:
                off, on = rng.integers(0, 51) / 50, rng.integers(0, 51) / 50
                write_run(root, config, task, seed, curve(rng, off, on))
                truth[(method, task, seed)] = (100 * off, 100 * on)
    return truth


def run_report(runs, out, *extra):
    return report.main([str(runs), '--out', str(out), *FAST, *extra])


def read_results(out):
    with open(os.path.join(out, 'results.csv')) as f:
        return list(csv.DictReader(f))


def test_method_labels_come_from_the_flag_or_the_agent_config():
    assert report_runs.method_label({'method': 'Mine'}, {'agent_name': 'qam', 'edit_scale': 0.1}) == 'Mine'
    assert report_runs.method_label({'method': ''}, {'agent_name': 'qam', 'fql_alpha': 300.0}) == 'QAM-F'
    assert report_runs.method_label({}, {'agent_name': 'qam', 'fql_alpha': 0.0, 'edit_scale': 0.1}) == 'QAM-E'
    assert report_runs.method_label({}, {'agent_name': 'qam', 'fql_alpha': 0.0, 'edit_scale': 0.0}) == 'QAM'
    assert report_runs.method_label({}, {'agent_name': 'cgql', 'mode': 'linex'}) == 'CGQL-L'
    assert report_runs.method_label({}, {'agent_name': 'cgql', 'mode': 'mse'}) == 'CGQL-M'
    assert report_runs.method_label({}, {'agent_name': 'cgql', 'mode': 'simple'}) == 'CGQL'
    assert report_runs.method_label({}, {'agent_name': 'rebrac'}) == 'ReBRAC'


def test_table_cells_equal_a_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    truth = make_grid(tmp_path / 'runs', rng)
    result = run_report(tmp_path / 'runs', tmp_path / 'out', '--no_rliable')
    stats = result['stats']
    tasks = sorted({t for _, t, _ in truth}, key=report_runs.task_sort_key)
    for method in METHODS:
        for p, phase in enumerate(report_runs.PHASES):
            per_task = {t: [truth[(method, t, s)][p] for s in SEEDS] for t in tasks}
            for task, values in per_task.items():
                stat = stats[('task', task, method, phase)]
                assert stat.mean == pytest.approx(np.mean(values)) and stat.n == stat.expected == 3
            cube = [t for t in tasks if t.startswith('cube')]
            domain = stats[('domain', 'cube-double-play', method, phase)]
            assert domain.mean == pytest.approx(np.mean([np.mean(per_task[t]) for t in cube]))
            assert domain.method == 'paired' and domain.complete
            overall = stats[('all', 'all', method, phase)]
            assert overall.mean == pytest.approx(np.mean([np.mean(v) for v in per_task.values()]))
            # The interval is the percentile bootstrap of each seed's average over the tasks (PROTOCOL §7).
            per_seed = [np.mean([truth[(method, t, s)][p] for t in tasks]) for s in SEEDS]
            counts = Bootstrap(2000, 0).counts(3)
            expected = np.percentile(counts @ np.array(per_seed) / 3, [2.5, 97.5])
            assert (overall.low, overall.high) == pytest.approx(tuple(expected))
    # The written tables hold the same numbers, with the best method of each column in bold.
    rows = [r for r in read_results(tmp_path / 'out') if r['table'] == 'aggregate' and r['kind'] == 'ours']
    for row in rows:
        phase = 'offline' if 'offline' in row['column'] else 'online'
        assert float(row['mean']) == pytest.approx(stats[('all', 'all', row['row'], phase)].mean, abs=0.006)
    for column in {r['column'] for r in rows}:
        cells = [r for r in rows if r['column'] == column]
        best = max(round(float(r['mean']), 1) for r in cells)
        marked = {r['row'] for r in cells if r['best'] == '1'}
        assert marked == {r['row'] for r in cells if round(float(r['mean']), 1) == best}
    markdown = open(tmp_path / 'out' / 'tables' / 'aggregate.md').read()
    assert '**' in markdown and 'QAM (paper)' in markdown and '‡' in markdown  # paper recomputed over the 3 tasks
    latex = open(tmp_path / 'out' / 'tables' / 'domains_offline.tex').read()
    assert r'\toprule' in latex and r'\midrule' in latex and r'\bottomrule' in latex and r'\textbf{' in latex


def test_d4rl_runs_report_their_normalised_score_and_no_paper_rows(tmp_path):
    """D4RL runs (the QAM paper has none): the tables hold the mean normalised score at the end of each phase, or the
    success with the default metric, and no "(paper)" row or caption."""
    rng = np.random.default_rng(5)
    tasks = ('D4RL/antmaze/umaze-v1', 'D4RL/door/human-v2')
    truth = {}
    for task in tasks:
        for seed in SEEDS:
            successes, scores = list(rng.integers(0, 11, 8) / 10), list(np.round(rng.normal(50, 40, 8), 3))
            write_run(tmp_path / 'runs', dict(inv_temp=10.0), task, seed, successes, method='QAM',
                      normalized_scores=scores)
            truth[(task, seed)] = {'success': (100 * successes[4], 100 * successes[7]),
                                   'normalized_score': (scores[4], scores[7])}  # steps 100 and 160: ends of phases
    for metric in ('normalized_score', 'success'):
        out = tmp_path / metric
        stats = run_report(tmp_path / 'runs', out, f'--metric={metric}', '--no_rliable')['stats']
        for p, phase in enumerate(report_runs.PHASES):
            for task in tasks:
                expected = np.mean([truth[(task, seed)][metric][p] for seed in SEEDS])
                assert stats[('task', task, 'QAM', phase)].mean == pytest.approx(expected)
            overall = np.mean([truth[key][metric][p] for key in truth])
            assert stats[('all', 'all', 'QAM', phase)].mean == pytest.approx(overall)
        assert not [r for r in read_results(out) if r['kind'] == 'paper']
        text = open(out / 'report.md').read()
        assert '(paper)' not in text and 'No paper numbers' in text
        assert ('normalised score' in text) == (metric == 'normalized_score')


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_seeds():
    boot = Bootstrap(20_000, seed=0)
    seeds = [12.0, 86.0, 40.0, 64.0, 98.0, 30.0]  # success (%) of six seeds
    widths = []
    for copies in (1, 2, 8):  # 6, 12 and 48 seeds with the same spread
        values = np.tile(seeds, copies)
        low, high = boot.interval(values)
        assert low <= np.mean(values) <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert boot.interval([40.0]) == (None, None)  # no interval from one seed
    assert boot.interval([30.0, 30.0, 30.0]) == (30.0, 30.0)
    # Same seed, same interval; the counts are a resampling with replacement (rows sum to n).
    assert Bootstrap(1000, 5).interval([1.0, 5.0, 9.0]) == Bootstrap(1000, 5).interval([1.0, 5.0, 9.0])
    assert np.all(boot.counts(7).sum(axis=1) == 7)


def test_fast_probability_of_improvement_equals_rliable():
    from rliable import metrics

    rng = np.random.default_rng(2)
    for _ in range(5):
        x, y = rng.integers(0, 6, size=(12, 4)) / 5, rng.integers(0, 6, size=(9, 4)) / 5
        assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    assert probability_of_improvement(x, x) == pytest.approx(0.5)


def test_rliable_intervals_depend_on_the_bootstrap_seed_only():
    # rliable 1.2 resamples with numpy's global generator whatever random_state it gets: the report seeds it.
    rng = np.random.default_rng(3)
    scores = {'A': rng.random((5, 3)), 'B': rng.random((4, 3))}
    pairs = {'A,B': (scores['A'], scores['B'])}
    runs = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)  # what other code left in the global generator
        runs.append((rliable_aggregates(scores, 200, seed=7), rliable_profiles(scores, [0.25, 0.5], 200, seed=7),
                     rliable_improvement(pairs, 200, seed=7)))
    assert np.random.get_state()[1][0] == np.random.RandomState(2).get_state()[1][0]  # restored afterwards
    for first, second in zip(runs[0], runs[1]):
        for a, b in zip(first, second):  # point estimates, then intervals
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
    other_seed = rliable_aggregates(scores, 200, seed=8)[1]
    assert any(not np.array_equal(other_seed[name], runs[0][0][1][name]) for name in scores)


# The QAM paper's aggregate over the 50 tasks (PROTOCOL §12.1): offline, offline-to-online (RLPD: online only).
PAPER_AGGREGATES = {
    'QAM': (44.4, 69.9), 'QAM-F': (45.4, 81.7), 'QAM-E': (45.7, 84.7), 'BAM': (35.4, 58.2), 'FQL': (35.7, 82.5),
    'FBRAC': (10.8, 64.4), 'FEdit': (32.6, 78.9), 'DSRL': (38.4, 59.9), 'IFQL': (34.4, 48.9), 'FAWAC': (8.4, 17.3),
    'CGQL': (29.8, 66.7), 'CGQL-M': (34.6, 63.6), 'CGQL-L': (36.8, 58.0), 'QSM': (41.6, 76.3), 'DAC': (36.5, 62.4),
    'ReBRAC': (40.0, 64.3), 'RLPD': (None, 60.0),
}


def half_up(x):
    """Round to one decimal as the paper prints (69.85 -> 69.9)."""
    return float(decimal.Decimal(f'{x:.6f}').quantize(decimal.Decimal('0.1'), rounding=decimal.ROUND_HALF_UP))


def test_aggregates_of_the_shipped_published_csv_reproduce_the_paper():
    published = Published()
    tasks = published.tasks(study='main')
    assert len(tasks) == 50 and len({report_runs.split_env_name(t)[0] for t in tasks}) == 10
    assert sorted(published.methods) == sorted(set(PAPER_AGGREGATES) | {f'QAM-E ({v})' for v in (
        'K=2', 'T=1', 'T=3', 'T=20', 'T=30', '0.1x tau', '0.3x tau', '3x tau', '10x tau')} | {'QAM-E-NOCLIP'})
    for method, expected in PAPER_AGGREGATES.items():
        for phase, value in zip(('offline', 'online'), expected):
            rows = [published.get(t, method, phase) for t in tasks]
            if value is None:
                assert all(r is None for r in rows)
                continue
            aggregate = np.mean([r['seed_values'] for r in rows])  # mean over the 50 tasks of the task means (exact)
            assert half_up(aggregate) == value, (method, phase, aggregate)
            assert np.mean([r['mean'] for r in rows]) == pytest.approx(aggregate, abs=0.01)  # the rounded task means
            assert published.get('all', method, phase)['mean'] == pytest.approx(aggregate, abs=0.01)
    # The headline numbers of the issue, explicitly.
    headline = {('QAM', 'offline'): 44.4, ('QAM-F', 'offline'): 45.4, ('QAM-E', 'offline'): 45.7,
                ('FQL', 'online'): 82.5, ('QAM-E', 'online'): 84.7}
    for (method, phase), value in headline.items():
        assert half_up(np.mean([published.get(t, method, phase)['mean'] for t in tasks])) == value
    # Every domain row is the mean of its five task rows.
    for domain in published.tasks(level='domain', study='main'):
        domain_tasks = [t for t in tasks if report_runs.split_env_name(t)[0] == domain]
        assert len(domain_tasks) == 5
        row = published.get(domain, 'QAM', 'offline')
        task_means = [published.get(t, 'QAM', 'offline')['mean'] for t in domain_tasks]
        assert row['mean'] == pytest.approx(np.mean(task_means), abs=0.01)


@pytest.mark.skipif(not os.path.isdir(REFERENCE_DIR), reason='needs ../shared/reference (the released pickles)')
def test_published_csv_rederives_from_the_released_data():
    keys = {'all', 'all-rep', 'cube-double-play-singletask-task2-v0', 'scene-noisy',
            'antmaze-giant-navigate-singletask-task5-v0'}
    rows = report_published.derive(REFERENCE_DIR, keep=lambda study, key, method: key in keys)
    with open(report_published.PUBLISHED_CSV, newline='') as f:
        shipped = {(r['study'], r['task'], r['method'], r['phase'], int(r['step'])): r for r in csv.DictReader(f)}
    assert len(rows) > 100
    for row in rows:
        assert {k: str(v) for k, v in row.items()} == shipped[(row['study'], row['task'], row['method'], row['phase'],
                                                               row['step'])]
    # The first evaluation (50K steps) of the pickles' arrays, as the mini sweep compares with it: one row per entry.
    with open(os.path.join(REFERENCE_DIR, 'qam-exp-data.pkl'), 'rb') as f:
        data = pickle.load(f)
    for (key, method), array in data.items():
        array = np.asarray(array)
        if array.shape[0] == 30:
            row = shipped[('main', key, method, 'offline', 50_000)]
            assert float(row['mean']) == pytest.approx(100 * array[0].mean(), abs=0.005), (key, method)
    assert float(shipped[('main', 'scene-play-singletask-task1-v0', 'QAM', 'offline', 50_000)]['mean']) == 90.33
    # Against the reference CSV of the protocol (its own bootstrap): means equal; intervals agree to bootstrap noise.
    with open(os.path.join(REFERENCE_DIR, 'qam_paper_results.csv'), newline='') as f:
        reference = {(r['task'], r['method'], r['phase']): r for r in csv.DictReader(f)}
    main = {(r['task'], r['method'], r['phase']): r for r in shipped.values()
            if r['study'] == 'main' and int(r['step']) != 50_000}
    assert set(main) == set(reference) and len(main) == 2013
    differences = []
    for key, ref in reference.items():
        assert float(main[key]['mean']) == pytest.approx(float(ref['mean']), abs=1e-9)
        for column in ('ci95_low', 'ci95_high'):
            difference = abs(float(main[key][column]) - float(ref[column]))
            differences.append(difference)
            if 'singletask' not in key[0]:
                assert difference <= 0.5, (key, column)
    assert np.median(differences) <= 0.05 and np.quantile(differences, 0.95) <= 0.5 and max(differences) <= 2.5
    # The mean curves re-derive exactly, and end where the end-of-phase numbers are.
    with open(report_published.PUBLISHED_CURVES_CSV, newline='') as f:
        shipped_curves = list(csv.DictReader(f))
    curves = report_published.derive_curves(REFERENCE_DIR)
    assert [{k: str(v) for k, v in c.items()} for c in curves] == shipped_curves
    for curve in shipped_curves:
        means = curve['mean'].split()
        if len(means) == 30:
            row = shipped[(curve['study'], curve['task'], curve['method'], 'offline', 1_000_000)]
            assert float(means[19]) == pytest.approx(float(row['mean']), abs=0.006)


@pytest.fixture(scope='module')
def messy_report(tmp_path_factory):
    """An incomplete grid: a missing seed, a missing task, an unfinished run, a diverged run, two configs of one
    method on one task, and an online-only method (RLPD)."""
    root = tmp_path_factory.mktemp('messy')
    runs, rng, truth = root / 'runs', np.random.default_rng(3), {}
    tasks, seeds = (TASK.format(1), TASK.format(2)), (1, 2, 3)

    def add(method, config, task, seed, values, **kwargs):
        write_run(runs, config, task, seed, values, **kwargs)
        truth[(method, task, seed)] = values

    for task in tasks:
        for seed in seeds:
            if (task, seed) == (TASK.format(2), 3):
                continue  # QAM: seed 3 missing on task 2
            if (task, seed) == (TASK.format(1), 3):  # QAM: unfinished, offline phase done
                add('QAM', METHODS['QAM'], task, seed, curve(rng, 0.3, 0.5)[:6], status='unfinished')
                continue
            add('QAM', METHODS['QAM'], task, seed, curve(rng, rng.integers(0, 51) / 50, rng.integers(0, 51) / 50))
        for seed in seeds:  # QAM-E: batch size 256 everywhere, and 64 on task 1 seed 1 (another config)
            add('QAM-E', METHODS['QAM-E'], task, seed, curve(rng, 0.4, 0.8))
    add('QAM-E64', {**METHODS['QAM-E'], 'batch_size': 64}, TASK.format(1), 1, curve(rng, 0.2, 0.3))
    for seed in seeds:  # FQL only on task 1 (task 2 missing); seed 2 diverged in the online phase
        kwargs = dict(status='diverged', diverged_step=130) if seed == 2 else {}
        values = curve(rng, 0.5, 0.9)[:7] if seed == 2 else curve(rng, 0.5, 0.9)
        add('FQL', {'agent_name': 'fql', 'alpha': 10.0}, TASK.format(1), seed, values, **kwargs)
        for task in tasks:  # RLPD: online only
            add('RLPD', {'agent_name': 'rlpd'}, task, seed, [0.1, 0.2, 0.3], offline_steps=0)
    result = run_report(runs, root / 'out')
    return result, root / 'out', truth


def test_partial_grids_are_flagged_and_never_averaged_over_fewer(messy_report):
    result, out, truth = messy_report
    stats, grid = result['stats'], result['grid']
    assert grid.seeds == [1, 2, 3] and grid.tasks == [TASK.format(1), TASK.format(2)]
    # A task with a missing seed: the mean of the seeds present, flagged 2/3.
    cell = stats[('task', TASK.format(2), 'QAM', 'offline')]
    assert (cell.n, cell.expected) == (2, 3) and not cell.complete
    assert cell.mean == pytest.approx(np.mean([100 * truth[('QAM', TASK.format(2), s)][4] for s in (1, 2)]))
    assert cell.missing == [(TASK.format(2), 3, 'no run')]
    # The unfinished run counts offline (its phase ended), not online.
    assert stats[('task', TASK.format(1), 'QAM', 'offline')].n == 3
    online = stats[('task', TASK.format(1), 'QAM', 'online')]
    assert online.n == 2 and 'unfinished' in online.missing[0][2]
    # The domain is the mean of the task means, flagged, with a stratified interval (seeds differ between tasks).
    domain = stats[('domain', 'cube-double-play', 'QAM', 'offline')]
    task_means = [stats[('task', t, 'QAM', 'offline')].mean for t in grid.tasks]
    assert domain.mean == pytest.approx(np.mean(task_means)) and domain.method == 'stratified'
    assert (domain.n, domain.expected) == (5, 6) and domain.low <= domain.mean <= domain.high
    # A method missing a whole task has no domain or aggregate number.
    assert stats[('domain', 'cube-double-play', 'FQL', 'offline')].mean is None
    assert stats[('all', 'all', 'FQL', 'offline')].tasks == 1
    markdown = open(out / 'tables' / 'domains_offline.md').read()
    fql = next(line for line in markdown.splitlines() if line.startswith('| FQL |'))
    assert '— (1/2 tasks)' in fql
    qam = next(line for line in markdown.splitlines() if line.startswith('| QAM |'))
    assert '†' in qam and '5/6 runs' in qam
    assert r'$^\dagger$' in open(out / 'tables' / 'tasks_offline.tex').read()
    # Every missing run and phase is listed with its reason.
    with open(out / 'missing.csv') as f:
        missing = {(r['method'], r['task'], r['seed'], r['phase']): r['reason'] for r in csv.DictReader(f)}
    assert missing[('QAM', TASK.format(2), '3', 'offline')] == 'no run'
    assert missing[('FQL', TASK.format(2), '1', 'online')] == 'no run'
    assert 'unfinished' in missing[('QAM', TASK.format(1), '3', 'online')]
    assert ('RLPD', TASK.format(1), '1', 'offline') not in missing  # not run, not missing
    report_md = open(out / 'report.md').read()
    assert '### Missing' in report_md and '### Unfinished runs' in report_md and '**' in report_md


def test_diverged_runs_are_reported(messy_report):
    result, out, truth = messy_report
    stats = result['stats']
    online = stats[('task', TASK.format(1), 'FQL', 'online')]
    assert online.n == 2 and online.missing == [(TASK.format(1), 2, 'diverged at step 130')]
    assert stats[('task', TASK.format(1), 'FQL', 'offline')].n == 3  # it diverged after the offline phase
    report_md = open(out / 'report.md').read()
    assert '### Diverged runs' in report_md and '| FQL | cube-double-play-singletask-task1-v0 | 2 | 130 |' in report_md
    with open(out / 'runs.csv') as f:
        rows = [r for r in csv.DictReader(f) if r['status'] == 'diverged']
    assert len(rows) == 1 and rows[0]['diverged_step'] == '130' and rows[0]['online_success'] == ''


def test_configs_of_one_method_are_not_mixed(messy_report):
    result, out, truth = messy_report
    grid, stats = result['grid'], result['stats']
    (conflict,) = result['conflicts']
    assert conflict.method == 'QAM-E' and conflict.env_name == TASK.format(1) and len(conflict.configs) == 2
    assert {tuple(c['values'].items()) for c in conflict.configs.values()} == {(('agent.batch_size', 64),),
                                                                               (('agent.batch_size', 256),)}
    assert 'QAM-E [batch_size=256]' in grid.methods and 'QAM-E [batch_size=64]' in grid.methods
    assert 'QAM-E' not in grid.methods
    big = stats[('task', TASK.format(1), 'QAM-E [batch_size=256]', 'offline')]
    assert big.n == 3 and big.mean == pytest.approx(40.0)  # the batch-64 run (20%) is not averaged in
    small = stats[('task', TASK.format(1), 'QAM-E [batch_size=64]', 'offline')]
    assert small.n == 1 and small.mean == pytest.approx(20.0)
    assert stats[('all', 'all', 'QAM-E [batch_size=64]', 'offline')].mean is None  # only on one task
    report_md = open(out / 'report.md').read()
    assert '### Different configs of one method' in report_md and 'batch_size=64' in report_md
    # The paper row of a variant is the paper's QAM-E.
    assert 'QAM-E (paper)' in open(out / 'tables' / 'aggregate.md').read()


def test_runs_of_the_broken_online_data_path_are_left_out(tmp_path):
    # Seed 1 ran with the current code, seed 2 before the online data fix (no version): its online results are
    # invalid, so it is left out rather than averaged with seed 1 or split off as another config.
    write_run(tmp_path / 'runs', {}, TASK.format(1), 1, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    old = write_run(tmp_path / 'runs', {}, TASK.format(1), 2, [0.1] * 8, online_data_version=None)
    grid = report_runs.build_grid(report_runs.find_runs(str(tmp_path / 'runs')))
    excluded = {r.seed: r.excluded for r in grid.runs}
    assert excluded[1] == '' and 'online data version 1' in excluded[2]
    assert experiment.online_results_invalid(dict(online_steps=0)) == ''  # offline-only runs are not affected
    assert report_runs.separate_configs(grid.runs) == []
    assert grid.cells[('QAM', TASK.format(1), 1)] and not grid.cells.get(('QAM', TASK.format(1), 2))
    run_report(tmp_path / 'runs', tmp_path / 'report')
    assert f'1 {excluded[2]}' in open(tmp_path / 'report' / 'report.md').read()
    assert os.path.basename(old) in open(tmp_path / 'report' / 'runs.csv').read()


def test_repeated_or_out_of_order_csv_rows_are_warned_about(tmp_path):
    path = write_run(tmp_path / 'runs', {}, TASK.format(1), 1, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    with open(os.path.join(path, 'eval.csv')) as f:
        lines = f.read().splitlines()
    with open(os.path.join(path, 'eval.csv'), 'w') as f:  # two writers: every row twice
        f.write('\n'.join(lines + lines[1:]) + '\n')
    run_report(tmp_path / 'runs', tmp_path / 'report')
    report_md = open(tmp_path / 'report' / 'report.md').read()
    assert 'repeated or out-of-order steps' in report_md and 'eval.csv: 8 repeated and 1 out-of-order steps' in report_md


def test_newest_config_policy_keeps_one_config(tmp_path):
    write_run(tmp_path, METHODS['QAM'], TASK.format(1), 1, [0.5] * 8)
    newer = write_run(tmp_path, {**METHODS['QAM'], 'batch_size': 64}, TASK.format(1), 1, [0.1] * 8)
    record = json.load(open(os.path.join(newer, 'flags.json')))
    record['started'] = '2026-02-01 00:00:00'
    json.dump(record, open(os.path.join(newer, 'flags.json'), 'w'))
    runs = report_runs.find_runs(tmp_path)
    (conflict,) = report_runs.separate_configs(runs, policy='newest')
    kept = [r for r in runs if not r.excluded]
    assert len(kept) == 1 and kept[0].path == newer and kept[0].method == 'QAM'
    assert sum(info['kept'] for info in conflict.configs.values()) == 1


def test_online_only_methods_and_rliable_outputs(messy_report):
    result, out, truth = messy_report
    aggregate = open(out / 'tables' / 'aggregate.md').read()
    rlpd = next(line for line in aggregate.splitlines() if line.startswith('| RLPD |'))
    assert '| n/a |' in rlpd  # no offline phase
    assert 'RLPD (paper)' in aggregate
    with open(out / 'tables' / 'improvement.csv') as f:
        rows = list(csv.DictReader(f))
    assert any(r['row'] == 'QAM > RLPD' and r['column'] == 'online (ours)' and 0 <= float(r['mean']) <= 1 for r in rows)
    assert any(r['row'] == 'QAM > RLPD' and r['column'] == 'online (paper)' and r['mean'] for r in rows)
    report_md = open(out / 'report.md').read()
    assert 'FQL: left out (no seed has a value on every task)' in report_md


def test_figures_are_written_and_not_empty(messy_report):
    result, out, truth = messy_report
    names = {os.path.basename(p) for p in result['figures']}
    for stem in ('curves', 'curves_tasks', 'aggregates_offline', 'aggregates_online', 'profiles_offline',
                 'profiles_online', 'improvement_online'):
        for ext, magic in (('png', b'\x89PNG'), ('pdf', b'%PDF')):
            path = out / 'figures' / f'{stem}.{ext}'
            assert f'{stem}.{ext}' in names and path.stat().st_size > 2000
            assert path.read_bytes()[:4] == magic


def test_a_folder_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match='not a directory of runs'):
        report.main([str(tmp_path / 'nothing'), '--out', str(tmp_path / 'out')])
    with pytest.raises(SystemExit, match='No run directories'):
        report.main([str(tmp_path), '--out', str(tmp_path / 'out')])


def test_a_sweep_gives_the_expected_grid(tmp_path):
    sweep_file = tmp_path / 'mini.py'
    sweep_file.write_text('from sweeps.sweeps import Sweep\n'
                          "SWEEP = Sweep(name='mini', description='two methods', methods=('QAM', 'FQL'),\n"
                          "              datasets=('cube-double-play',), tasks=(1, 2), seeds=(1, 2))\n")
    runs = tmp_path / 'runs'
    for task, seed in ((1, 1), (1, 2), (2, 1)):
        write_run(runs / 'QAM', METHODS['QAM'], TASK.format(task), seed, [0.5] * 8, method='QAM')
    for argv in ([str(runs), '--sweep', str(sweep_file)], [str(sweep_file), '--save_dir', str(runs)]):
        result = report.main([*argv, '--out', str(tmp_path / 'out'), *FAST, '--no_rliable'])
        grid = result['grid']
        assert grid.methods == ['QAM', 'FQL'] and grid.seeds == [1, 2] and "sweep '" in grid.origin
        assert grid.tasks == [TASK.format(1), TASK.format(2)]
        missing = {(r['method'], r['task'], r['seed']) for r in result['missing'] if r['phase'] == 'offline'}
        assert ('QAM', TASK.format(2), 2) in missing and len(missing) == 1 + 4
        assert result['stats'][('task', TASK.format(2), 'QAM', 'offline')].n == 1
    with pytest.raises(SystemExit, match='Unknown sweep'):
        report.main([str(runs), '--sweep', 'no-such-sweep', '--out', str(tmp_path / 'out')])


def test_paper_curves_are_drawn_only_on_the_paper_schedule(tmp_path, messy_report):
    rng = np.random.default_rng(4)
    for task in range(1, 6):
        for seed in (1, 2):
            values = list(np.round(rng.integers(0, 51, size=30) / 50, 2))
            write_run(tmp_path, METHODS['QAM'], TASK.format(task), seed, values, offline_steps=1_000_000,
                      online_steps=500_000, eval_interval=50_000)
    runs = report_runs.find_runs(tmp_path)
    grid = report_runs.build_grid(runs)
    published = Published()
    ((title, offline_end, curves),) = report_figures.curve_panels(grid, Bootstrap(100), published)
    assert offline_end == 1_000_000 and len(curves['QAM']['steps']) == 30
    steps, means = curves['QAM']['paper']
    assert list(steps) == [50_000 * (j + 1) for j in range(30)]
    assert means[19] == pytest.approx(published.get('cube-double-play', 'QAM', 'offline')['mean'], abs=0.01)
    assert means[29] == pytest.approx(published.get('cube-double-play', 'QAM', 'online')['mean'], abs=0.01)
    paths = report_figures.learning_curves([(title, offline_end, curves)], grid.methods, str(tmp_path / 'fig'))
    assert all(os.path.getsize(p) > 2000 for p in paths)
    # Another schedule (the tiny runs) or a partial domain: no paper curve.
    result, out, truth = messy_report
    for _, _, panel in report_figures.curve_panels(result['grid'], Bootstrap(100), published):
        assert all('paper' not in curve for curve in panel.values())


def test_runs_that_end_offline_at_a_step_the_paper_evaluated_get_its_number_there(tmp_path):
    """The mini sweep's curves (50K offline, evaluations every 10K) show the paper's number at 50K with its interval:
    per task the paper's row at that step, over the domain's 2 tasks (of the paper's 5) their recomputed mean."""
    for task in (1, 2):
        for seed in (1, 2):
            write_run(tmp_path / 'mini', METHODS['QAM'], SCENE.format(task), seed, [0.1] * 7, offline_steps=50_000,
                      online_steps=20_000, eval_interval=10_000)
            write_run(tmp_path / 'other', METHODS['QAM'], SCENE.format(task), seed, [0.1] * 7, offline_steps=40_000,
                      online_steps=30_000, eval_interval=10_000)
    published, boot = Published(), Bootstrap(2000)
    grid = report_runs.build_grid(report_runs.find_runs(tmp_path / 'mini'))
    panels = report_figures.curve_panels(grid, boot, published, per_task=True)
    assert [title for title, _, _ in panels] == ['scene-play task 1 (2 seeds)', 'scene-play task 2 (2 seeds)']
    rows = [published.get(SCENE.format(task), 'QAM', 'offline', 50_000) for task in (1, 2)]
    for (_, offline_end, curves), row in zip(panels, rows):
        step, stat = curves['QAM']['paper_point']
        assert step == offline_end == 50_000 and 'paper' not in curves['QAM']
        assert (stat.mean, stat.low, stat.high) == (row['mean'], row['ci95_low'], row['ci95_high'])
    assert rows[0]['mean'] == 90.33  # the paper's QAM on scene task 1 at 50K (row 0 of the released array)
    ((_, _, curves),) = report_figures.curve_panels(grid, boot, published)
    step, stat = curves['QAM']['paper_point']
    assert stat.mean == pytest.approx((rows[0]['mean'] + rows[1]['mean']) / 2, abs=0.01) and stat.low < stat.mean
    # The paper did not evaluate at 40K: no number is drawn there.
    grid = report_runs.build_grid(report_runs.find_runs(tmp_path / 'other'))
    for per_task in (False, True):
        for _, offline_end, curves in report_figures.curve_panels(grid, boot, published, per_task=per_task):
            assert offline_end == 40_000 and 'paper_point' not in curves['QAM'] and 'paper' not in curves['QAM']
    paths = report_figures.learning_curves(panels, grid.methods, str(tmp_path / 'fig'))
    assert all(os.path.getsize(p) > 2000 for p in paths)


def test_paper_cells_cover_the_same_tasks_as_ours():
    published, boot = Published(), Bootstrap(2000)
    main_tasks = published.tasks(study='main')
    stat, recomputed = published_stat(published, boot, 'all', 'all', main_tasks, 'QAM', 'offline')
    assert not recomputed and stat.mean == published.get('all', 'QAM', 'offline')['mean'] == 44.39
    cube = [t for t in main_tasks if t.startswith('cube-double-play')]
    stat, recomputed = published_stat(published, boot, 'all', 'all', cube, 'QAM-E', 'online')
    assert not recomputed and stat.mean == published.get('cube-double-play', 'QAM-E', 'online')['mean']
    two = cube[:2]
    stat, recomputed = published_stat(published, boot, 'domain', 'cube-double-play', two, 'FQL', 'offline')
    task_means = [published.get(t, 'FQL', 'offline')['mean'] for t in two]
    assert recomputed and stat.mean == pytest.approx(np.mean(task_means), abs=0.01) and stat.low <= stat.mean <= stat.high
    # A variant label maps to the paper's method; a method the paper does not have has no paper cell.
    assert published_stat(published, boot, 'task', two[0], [two[0]], 'QAM [batch_size=64]', 'offline')[0].mean \
        == published.get(two[0], 'QAM', 'offline')['mean']
    assert published_stat(published, boot, 'task', two[0], [two[0]], 'MyMethod', 'offline') == (None, False)
    assert published_stat(published, boot, 'task', two[0], [two[0]], 'RLPD', 'offline') == (None, False)


def test_runs_that_end_offline_at_the_papers_first_evaluation_are_compared_with_it():
    """The mini sweep stops offline at 50K steps: its paper cells are the paper's 50K numbers (row 0 of the released
    arrays, 90.33% for QAM on scene task 1), not its 1M ones; the online phase (ends at 75K) keeps the paper's end."""
    published, boot = Published(), Bootstrap(2000)
    scene = ['scene-play-singletask-task1-v0', 'scene-play-singletask-task2-v0']
    stat, recomputed = published_stat(published, boot, 'task', scene[0], scene[:1], 'QAM', 'offline', 50_000)
    assert stat.mean == 90.33 and not recomputed
    assert published_stat(published, boot, 'task', scene[0], scene[:1], 'QAM', 'offline')[0].mean == 100.0
    stat, recomputed = published_stat(published, boot, 'domain', 'scene-play', scene, 'FQL', 'offline', 50_000)
    assert recomputed and stat.mean == pytest.approx((15.67 + 9.50) / 2, abs=0.01)
    assert published_stat(published, boot, 'task', scene[0], scene[:1], 'QAM', 'online', 75_000)[0].mean \
        == published.get(scene[0], 'QAM', 'online')['mean']


def test_paper_step_is_the_common_end_of_a_methods_runs(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path, METHODS['QAM'], SCENE.format(1), seed, [0.5, 0.6, 0.7], offline_steps=50_000,
                  online_steps=25_000, eval_interval=25_000)
    grid = report_runs.build_grid(report_runs.find_runs(tmp_path))
    assert paper_step(grid, 'QAM', 'offline') == 50_000 and paper_step(grid, 'QAM', 'online') == 75_000
    # FQL has no run yet: the step at which the other runs end the phase, so that its paper row is from 50,000.
    assert paper_step(grid, 'FQL', 'offline') == 50_000 and paper_step(grid, 'FQL', 'online') == 75_000
    write_run(tmp_path, METHODS['QAM'], SCENE.format(2), 1, [0.5] * 8)  # another schedule: no common step
    grid = report_runs.build_grid(report_runs.find_runs(tmp_path))
    assert paper_step(grid, 'QAM', 'offline') is None


MINI_RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'results', 'mini')


def test_the_committed_mini_report_is_that_of_the_committed_runs(tmp_path):
    """results/mini holds the records of the mini sweep's runs (finished, or stopped after their offline phase) and
    the report built from them (results/mini/README.md): rebuilt here with the same command, every number and every
    run and missing cell is the same, so the committed report cannot go stale against the committed runs."""
    out = tmp_path / 'mini'
    report.main(['mini', '--save_dir', os.path.join(MINI_RESULTS, 'runs'), '--out', str(out)])
    for name in ('results.csv', 'runs.csv', 'missing.csv'):
        with open(os.path.join(MINI_RESULTS, name)) as committed, open(out / name) as rebuilt:
            assert rebuilt.read() == committed.read(), f'results/mini/{name} is stale: rebuild it (see its README)'


def test_runs_on_different_arrays_of_one_dataset_are_flagged(tmp_path):
    fingerprints = {10001: 'aaaa', 20002: 'aaaa', 30003: 'bbbb'}
    for seed, fingerprint in fingerprints.items():
        path = write_run(tmp_path / 'runs', {}, TASK.format(1), seed, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
        record = json.load(open(os.path.join(path, 'flags.json')))
        record['data'] = dict(dataset_name='cube-double-play-v0', fingerprint=fingerprint, source='cache')
        json.dump(record, open(os.path.join(path, 'flags.json'), 'w'))
    run_report(tmp_path / 'runs', tmp_path / 'report')
    report_md = open(tmp_path / 'report' / 'report.md').read()
    assert '- cube-double-play-v0: 2 different datasets by fingerprint, aaaa (2 runs: QAM), bbbb (1 run: QAM)' in report_md
    with open(tmp_path / 'report' / 'runs.csv') as f:
        recorded = {int(row['seed']): (row['dataset'], row['dataset_fingerprint']) for row in csv.DictReader(f)}
    assert recorded == {seed: ('cube-double-play-v0', fingerprint) for seed, fingerprint in fingerprints.items()}
    # One fingerprint: no warning.
    record['data']['fingerprint'] = 'aaaa'
    json.dump(record, open(os.path.join(path, 'flags.json'), 'w'))
    run_report(tmp_path / 'runs', tmp_path / 'report2')
    assert '### Datasets' not in open(tmp_path / 'report2' / 'report.md').read()
