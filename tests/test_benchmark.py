"""benchmarks/agent_speed.py runs from the README and writes every figure the speed issue asks for."""

import json
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_speed_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / 'speed.json'
    env = dict(os.environ, JAX_PLATFORMS='cpu', MUJOCO_GL='egl',
               JAX_COMPILATION_CACHE_DIR=os.environ['QAM_TEST_JAX_CACHE'])
    result = subprocess.run(
        [sys.executable, '-m', 'benchmarks.agent_speed', '--agents=fql', '--sizes=quickstart', '--seed_counts=1,2',
         '--scan_length=2', '--min_seconds=0.05', '--eval_envs=1', f'--out={out}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results['machine']['backend'] == 'cpu' and results['settings']['scan_length'] == 2
    figures = results['figures']['fql/quickstart']
    for name in ('compile_s', 'memory_mb', 'fused_updates_per_s', 'per_call_updates_per_s', 'update_ms', 'act_ms_1',
                 'act_ms_50', 'eval_env_steps_per_s', 'seeds_1_updates_per_s', 'seeds_2_updates_per_s'):
        assert figures[name] > 0, name
    assert figures['fused_speedup'] == figures['fused_updates_per_s'] / figures['per_call_updates_per_s']
    assert figures['seeds_1_scaling'] == 1.0
    assert figures['seeds_2_scaling'] == figures['seeds_2_updates_per_s'] / (2 * figures['seeds_1_updates_per_s'])
    assert 'fql      quickstart' in result.stdout


def test_speed_benchmark_sizes_name_depth_width_critics_and_batch():
    from absl import app

    from benchmarks import agent_speed

    assert agent_speed.size_settings('2x256:q2:b128') == dict(
        actor_hidden_dims=(256, 256), value_hidden_dims=(256, 256), batch_size=128, num_qs=2)
    assert agent_speed.size_settings('3x128') == dict(
        actor_hidden_dims=(128,) * 3, value_hidden_dims=(128,) * 3, batch_size=256)
    assert agent_speed.size_settings('paper')['actor_hidden_dims'] == (512,) * 4
    with pytest.raises(app.UsageError, match='2x'):
        agent_speed.size_settings('2x')


def test_quickstart_frontier_times_a_point_from_scratch_and_reads_its_evaluations(monkeypatch):
    from benchmarks import quickstart_frontier as frontier

    tiny = frontier.Point(frontier.CUBE_SINGLE.format(1), episodes=2, depth=2, width=16, critics=2, batch=16, steps=20)
    monkeypatch.setitem(frontier.POINTS, 'tiny', tiny)
    monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', os.environ['QAM_TEST_JAX_CACHE'])
    monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
    row = frontier.run_point('tiny', timeout_s=900, seed=20002)
    cells = [cell.strip() for cell in row.strip('|').split('|')]
    assert len(cells) == frontier.HEADER.splitlines()[0].count('|') - 1
    assert cells[:9] == ['tiny (seed 20002)', 'cube-single-play-task1', '1', '2', '2x16', '2', '16', '20', '0']
    generation, total = float(cells[9]), float(cells[10])
    assert 0 < generation <= total
    # Four evaluations, at steps / 4 intervals, each a success rate of 20 episodes (a multiple of 5%).
    evaluations = [item.split(': ') for item in cells[11].split(', ')]
    assert [step for step, _ in evaluations] == ['0.005K', '0.01K', '0.015K', '0.02K']
    assert all(float(value) % 5 == 0 for _, value in evaluations)


def test_quickstart_frontier_points_with_an_online_phase_are_the_quick_start_command():
    from benchmarks import quickstart_frontier as frontier

    argv = frontier.POINTS[frontier.QUICK_START].argv()
    # The README's first command, flag for flag, except its output folder and checkpoint interval.
    readme_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')
    with open(readme_path) as f:
        (command,) = [line for line in f if line.startswith('pip install -r requirements.txt && python main.py')]
    readme = [a for a in shlex.split(command.split('main.py', 1)[1])
              if not a.startswith(('--save_dir=', '--save_interval='))]
    assert len(readme) == 15
    assert set(readme) <= set(argv)
    offline_only = frontier.POINTS['c1-100ep-2x128-q2-10k'].argv()
    assert '--online_steps=0' in offline_only and not any(a.startswith('--start_training') for a in offline_only)
    assert '--eval_interval=8000' in frontier.POINTS['c1-100ep-2x128-q2-16k-on8k-e8k'].argv()
    # Variations pass their one change; points at the defaults' values have no flag for them.
    default_lr = frontier.POINTS['c1-100ep-2x128-q2-16k-on4k'].argv()
    assert not any(a.startswith(('--agent.lr', '--agent.best_of_n')) for a in default_lr)
    assert set(argv) - set(default_lr) == {'--agent.lr=0.003'}
    assert set(frontier.POINTS['c1-100ep-2x128-q2-16k-on4k-bo8'].argv()) - set(default_lr) == {'--agent.best_of_n=8'}


@pytest.fixture(scope='module')
def kept_scene_run(tmp_path_factory, generated_datasets_dir):
    """A tiny QAM run on scene task 1 (40 offline steps) that kept its checkpoints (20 and 40): its directory.
    Scene: its evaluation returns differ between reset seeds even for an untrained policy (cube-double's are all
    -1000), so an evaluation again can only match eval.csv with the same episodes."""
    from tests.main_runs import run_main, tiny_args

    tmp_path = tmp_path_factory.mktemp('kept')
    run_main(tiny_args(tmp_path, generated_datasets_dir, extra=['--online_steps=0', '--keep_checkpoints',
                                                                '--env_name=scene-play-singletask-task1-v0']), tmp_path)
    (run_dir,) = (tmp_path / 'runs' / 'qam' / 'scene-play-singletask-task1-v0').iterdir()
    return str(run_dir)


def test_saved_run_action_probe_and_evaluate_checkpoint_on_a_kept_run(kept_scene_run):
    import jax
    import numpy as np
    import orbax.checkpoint as ocp
    from absl import app

    from benchmarks import saved_run
    from tests.main_runs import read_csv

    run_dir = kept_scene_run
    root = os.path.dirname(run_dir)
    run = saved_run.load(run_dir)
    agent, dataset, step = run.agent, run.dataset, run.step
    assert step == 40 and len(dataset['observations']) == 2000  # the latest checkpoint; the run's 2 episodes
    with pytest.raises(app.UsageError, match=r'no checkpoint at step 10; it has \[20, 40\].*--step'):
        saved_run.load(run_dir, 10)  # saved every 20 steps
    with pytest.raises(app.UsageError, match='has no flags.json: it is not a run directory'):
        saved_run.load(root)  # the folder above the run
    flags_path = os.path.join(run_dir, 'flags.json')
    with open(flags_path) as f:
        record = json.load(f)
    trained_on = record['data']['fingerprint']
    record['data']['fingerprint'] = '0123456789abcdef'  # as if the set had been generated again since
    with open(flags_path, 'w') as f:
        json.dump(record, f)
    with pytest.raises(app.UsageError, match=rf'other data .*fingerprint 0123456789abcdef then, {trained_on} now'):
        saved_run.load(run_dir)
    record['data']['fingerprint'] = trained_on
    with open(flags_path, 'w') as f:
        json.dump(record, f)
    stored = ocp.PyTreeCheckpointer().restore(os.path.join(run_dir, 'checkpoints', '40', 'state'))['agent']['network']
    for name in ('critic', 'finetuned_flow'):
        for ours, saved in zip(jax.tree.leaves(agent.network.params[name]), jax.tree.leaves(stored['params'][name])):
            np.testing.assert_array_equal(ours, saved)

    env = dict(os.environ, JAX_PLATFORMS='cpu', MUJOCO_GL='egl',
               JAX_COMPILATION_CACHE_DIR=os.environ['QAM_TEST_JAX_CACHE'])
    # Every row's return-to-go is above -1000 (the tiny run's rewards are at least -2 per step): both tables.
    result = subprocess.run([sys.executable, '-m', 'benchmarks.action_probe', f'--run_dir={run_dir}', '--states=64',
                             '--near_success_return=-1000'], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    all_states, near_success = result.stdout.split('64 of those states')
    first_table = all_states.split('‖∇_a Q‖')[0]
    rows = {line.split('|')[1].strip(): [float(cell) for cell in line.split('|')[2:4]]
            for line in first_table.splitlines() if line.startswith('| ') and not line.startswith('| actions')}
    assert list(rows) == ['dataset chunks', "the agent's actions", "the BC flow's actions", 'uniform random chunks']
    assert rows['dataset chunks'][1] == 0.0
    # Uniform chunks in [-1, 1]^D are farther from the data than the flows' samples (E|u - a|^2 >= 1/3 per coordinate).
    assert rows['uniform random chunks'][1] > 1 / 3 - 0.05
    gradient_norm = all_states.split("‖∇_a Q‖ of the online critic's mean at the agent's actions: ")[1].split()[0]
    assert float(gradient_norm) > 0
    assert '| dataset chunks | ' in near_success and '‖∇_a Q‖' in near_success

    # Evaluated again with its own episodes (2, index 40 // 20), the policy at 40 does what eval.csv recorded then.
    recorded = [row for row in read_csv(os.path.join(run_dir, 'eval.csv')) if row['step'] == '40']
    result = subprocess.run([sys.executable, '-m', 'benchmarks.evaluate_checkpoint', f'--run_dir={run_dir}',
                             '--eval_envs=1'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    again, own = result.stdout.strip().splitlines()[-2:]
    (row,) = recorded
    assert f'at step 40, evaluation index 2: success {100 * float(row["success"]):.1f}% (' in again
    assert f'return {float(row["episode_return"]):.2f}, length {float(row["episode_length"]):.1f}' in again
    # Clopper-Pearson for n = 2 in closed form: k = 0 gives [0, 1 - 0.025^(1/2)], k = 2 [0.025^(1/2), 1], k = 1
    # [1 - 0.975^(1/2), 0.975^(1/2)].
    successes = round(2 * float(row['success']))
    assert {0: '95% interval 0.0-84.2%', 1: '95% interval 1.3-98.7%', 2: '95% interval 15.8-100.0%'}[successes] in again
    assert own.endswith('(the same episodes)')


def test_saved_run_policies_against_loops_written_from_the_spec(kept_scene_run):
    """evaluate_checkpoint's --policy: the BC flow's Euler ODE and the memoryless SDE of the fine-tuned field
    (ALGORITHMS §1.5, §2.3), each against a loop written here from the spec's formulas, with the same draws."""
    import jax
    import numpy as np
    from absl import app

    import agents
    from benchmarks import saved_run

    run = saved_run.load(kept_scene_run)
    agent, steps = run.agent, run.agent.config.flow_steps
    observations = run.dataset['observations'][:8]
    key = jax.random.PRNGKey(7)
    noise_key, sde_key = jax.random.split(key)
    x0 = np.asarray(jax.random.normal(noise_key, (8, agent.action_size)))
    h = 1.0 / steps

    def field(name, x, t):
        return np.asarray(agent.network.apply(name, observations, x, np.full((8, 1), t, np.float32)))

    x = x0
    for i in range(steps):
        x = x + h * field('behavior_flow', x, i * h)
    bc = saved_run.policy_sampler(agent, 'bc')(agent, observations, key)
    np.testing.assert_allclose(bc, np.clip(x, -1, 1), atol=2e-5)

    x = x0
    for i, step_key in zip(range(steps - 1), jax.random.split(sde_key, steps - 1)):
        t, sigma = i * h, np.sqrt(2 * (1 - i * h + h) / (i * h + h))
        epsilon = np.asarray(jax.random.normal(step_key, x.shape))
        x = x + h * (2 * field('finetuned_flow', x, t) - x / (t + h)) + np.sqrt(h) * sigma * epsilon
    x = x + h * field('target_behavior_flow', x, (steps - 1) * h)  # the base flow: the EMA target (target_actor)
    sde = saved_run.policy_sampler(agent, 'sde')(agent, observations, key)
    np.testing.assert_allclose(sde, np.clip(x, -1, 1), atol=1e-4)
    assert np.abs(x).max() > 1  # the clip was exercised
    own = saved_run.policy_sampler(agent, 'agent')(agent, observations, key)
    np.testing.assert_array_equal(own, agent.sample_actions(observations, key))
    assert not np.allclose(own, sde, atol=1e-3)  # the SDE is another policy than the agent's ODE

    with pytest.raises(app.UsageError, match="Unknown policy 'ode': use one of agent, bc, sde"):
        saved_run.policy_sampler(agent, 'ode')
    rebrac = agents.load_agent('rebrac')
    config = rebrac.get_config()
    config.update(actor_hidden_dims=(8,), value_hidden_dims=(8,))
    other = rebrac.Agent.create(0, observations[0], run.dataset['actions'][0], config)
    with pytest.raises(app.UsageError,
                       match=r"'sde' policy needs an agent with finetuned_flow and behavior_flow \(QAM"):
        saved_run.policy_sampler(other, 'sde')
    with pytest.raises(app.UsageError, match=r"'bc' policy needs an agent with behavior_flow \(a flow agent"):
        saved_run.policy_sampler(other, 'bc')

    # What a user runs: the flag reaches the policy, and the run's own evaluation is not set beside another policy's.
    env = dict(os.environ, JAX_PLATFORMS='cpu', MUJOCO_GL='egl',
               JAX_COMPILATION_CACHE_DIR=os.environ['QAM_TEST_JAX_CACHE'])
    result = subprocess.run([sys.executable, '-m', 'benchmarks.evaluate_checkpoint', f'--run_dir={kept_scene_run}',
                             '--eval_envs=1', '--policy=sde'], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'at step 40, acting with sde, evaluation index 2: success ' in result.stdout
    assert "The run's own evaluation" not in result.stdout


def test_returns_to_go_against_the_closed_form():
    import numpy as np

    from benchmarks.saved_run import returns_to_go

    # Two recorded episodes of sparse rewards (-1 per step, 0 on success; mask 0 on success), discount g:
    # episode 1 (rows 0-5) succeeds at row 3 and goes on; episode 2 (rows 6-9) never succeeds. After a time limit
    # the data stops and the value is `after` = -1/(1-g) (never succeeding).
    g = 0.9
    success = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0], bool)
    rewards, masks = -1.0 + success, 1.0 - success
    terminals = np.zeros(10, bool)
    terminals[[5, 9]] = True
    after = -1 / (1 - g)
    returns = returns_to_go(rewards, masks, terminals, g, after)
    # Before the success, i steps away: -(1 - g^i)/(1 - g) (i rewards of -1, then 0 and nothing after the mask).
    np.testing.assert_allclose(returns[:4], [-(1 - g ** i) / (1 - g) for i in (3, 2, 1, 0)])
    # Rows 4 and 5 never succeed again before the time limit: the never-succeed value, as every row of episode 2.
    np.testing.assert_allclose(returns[4:], after)


def test_return_probe_returns_of_a_terminated_and_a_truncated_episode_against_the_closed_form():
    import numpy as np

    from benchmarks.return_probe import chunk_starts

    def returns(rewards, terminated, g):  # one-step chunks: a row at every step
        episode = {'observations': [np.zeros(2)] * len(rewards), 'actions': [np.zeros(1)] * len(rewards),
                   'rewards': rewards, 'terminated': terminated, 'success': terminated}
        return chunk_starts([episode], 1, g)['returns']

    g = 0.9
    # Terminated (a success) after rewards -1, -1, -1, 0: nothing follows the termination.
    np.testing.assert_allclose(returns([-1.0, -1.0, -1.0, 0.0], True, g), [-(1 + g + g ** 2), -(1 + g), -1.0, 0.0])
    # Cut by the time limit at -1 per step: the last reward goes on for ever, so every step is worth -1/(1-g).
    np.testing.assert_allclose(returns([-1.0] * 6, False, g), np.full(6, -1 / (1 - g)))
    # Cut at -2 after two -1s: the -2 goes on after the end.
    np.testing.assert_allclose(returns([-1.0, -1.0, -2.0], False, g),
                               [-1 - g - 2 * g ** 2 / (1 - g), -1 - 2 * g / (1 - g), -2 / (1 - g)], rtol=1e-12)


def test_return_probe_chunk_starts_of_episodes_against_a_loop():
    import numpy as np

    from benchmarks.return_probe import chunk_starts

    # Episodes of 7, 2 (shorter than a chunk: no row) and 6 steps, H = 3: full chunks start at 0, 3; none; 0, 3.
    rng = np.random.default_rng(0)
    episodes = [{'observations': list(rng.normal(size=(n, 4))), 'actions': list(rng.uniform(-1, 1, size=(n, 2))),
                 'rewards': list(-rng.integers(0, 3, size=n).astype(float)), 'terminated': n == 6, 'success': n == 6}
                for n in (7, 2, 6)]
    rows = chunk_starts(episodes, 3, 0.9)
    expected = [(0, 0), (0, 3), (2, 0), (2, 3)]  # (episode, step)
    assert len(rows['returns']) == len(expected)
    for k, (e, t) in enumerate(expected):
        episode = episodes[e]
        np.testing.assert_array_equal(rows['observations'][k], episode['observations'][t])
        np.testing.assert_array_equal(rows['actions'][k], [x for a in episode['actions'][t:t + 3] for x in a])
        assert rows['first'][k] == (t == 0) and rows['success'][k] == episode['success']


def test_return_probe_records_what_the_environment_did_and_the_return_that_followed(kept_scene_run, capsys):
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import return_probe, saved_run
    from tests.main_runs import read_csv
    from utils import evaluation

    run = saved_run.load(kept_scene_run, 40)
    horizon, discount = run.agent.config.horizon_length, run.agent.config.discount
    # The run's own evaluation at 40 (index 40 // 20, its 2 episodes), in two waves of one environment: recording
    # changes nothing in it.
    metrics, recorded, rows = return_probe.probe(run, 2, 2, 1)
    (row,) = [row for row in read_csv(os.path.join(kept_scene_run, 'eval.csv')) if row['step'] == '40']
    assert metrics['success'] == float(row['success'])
    assert metrics['episode_return'] == pytest.approx(float(row['episode_return']))
    assert len(recorded) == 2
    assert np.mean([sum(episode['rewards']) for episode in recorded]) == pytest.approx(metrics['episode_return'])
    assert np.mean([len(episode['rewards']) for episode in recorded]) == metrics['episode_length']

    # What the environment did: a fresh environment reset with each episode's seed and given the recorded actions
    # goes through the recorded observations and rewards (an observation recorded one step off would not match).
    seed = run.record['flags']['seed']
    for i, episode in enumerate(recorded):
        env = run.make_env()
        observation, _ = env.reset(seed=evaluation.episode_seed(seed, 2, i))
        for t, action in enumerate(episode['actions']):
            np.testing.assert_array_equal(episode['observations'][t], observation)
            observation, reward, terminated, truncated, info = env.step(action)
            assert reward == episode['rewards'][t]
        assert terminated or truncated
        assert terminated == episode['terminated'] and info['success'] == episode['success']
        env.close()

    # One row per chunk executed in full, at steps 0, H, 2H, ...; the return that followed summed directly.
    starts = [[t for t in range(0, len(e['rewards']) - horizon + 1, horizon)] for e in recorded]
    assert len(rows['returns']) == sum(len(s) for s in starts)
    k = 0
    for episode, episode_starts in zip(recorded, starts):
        rewards, length = np.asarray(episode['rewards']), len(episode['rewards'])
        for t in episode_starts:
            expected = sum(discount ** (j - t) * rewards[j] for j in range(t, length))
            if not episode['terminated']:
                expected += discount ** (length - t) * rewards[-1] / (1 - discount)
            assert rows['returns'][k] == pytest.approx(expected, rel=1e-9)
            np.testing.assert_array_equal(rows['observations'][k], episode['observations'][t])
            np.testing.assert_array_equal(rows['actions'][k], np.concatenate(episode['actions'][t:t + horizon]))
            assert rows['first'][k] == (t == 0) and rows['success'][k] == episode['success']
            k += 1
    q = run.agent.q_mean(jnp.asarray(rows['observations']), jnp.asarray(rows['actions']))
    np.testing.assert_allclose(rows['q'], np.asarray(q), rtol=1e-5)
    # The spread is between the critic's members, state by state (not across states).
    members = np.asarray(run.agent.network.apply('critic', jnp.asarray(rows['observations']),
                                                 jnp.asarray(rows['actions'])), np.float64)
    assert members.shape[0] == run.agent.config.num_qs
    np.testing.assert_allclose(rows['q_std'], members.std(axis=0), rtol=1e-4, atol=1e-6)
    assert set(rows) >= {'bc_distance', 'bc_preference'}  # QAM has a BC flow

    return_probe.print_table(rows)
    table = capsys.readouterr().out
    every = [line for line in table.splitlines() if line.startswith('| every chunk start |')][0].split('|')
    assert int(every[2]) == len(rows['returns'])
    assert float(every[5]) == pytest.approx(np.mean(rows['q'] - rows['returns']), abs=0.01)
