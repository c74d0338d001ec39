"""utils/run_flags.py: a command line parsed on flags of its own resolves to a run's settings and directory as
main.py resolves it (main.py and the sweep launcher both call it; tests/test_sweeps.py checks end to end that the
launcher finds the directory main.py wrote)."""

import os

import pytest
from absl import app

import agents
from utils import experiment, run_flags

MAZE = 'humanoidmaze-medium-navigate-singletask-task1-v0'  # H 1, discount 0.995, rho 0 (PROTOCOL §3)


def resolve(*args):
    return run_flags.resolve_run(run_flags.parse(['main.py', *args]))


def test_the_domain_fills_what_the_command_leaves_unset_and_the_flags_are_left_as_they_were():
    flag_values = run_flags.parse(['main.py', '--agent=fql', f'--env_name={MAZE}', '--agent.rho=0.25',
                                   '--agent.alpha', '3'])  # an override in two words is one too
    agent_before = flag_values.agent.to_dict()
    task, config, settings = run_flags.resolve_run(flag_values)
    assert task.domain.name == 'humanoidmaze-medium'
    assert (config.horizon_length, config.discount, config.rho, config.alpha) == (1, 0.995, 0.25, 3.0)
    assert settings['agent'] == config.to_dict() and settings['sparse'] is False
    assert flag_values.agent.to_dict() == agent_before  # pure: a second resolution sees the same flags
    assert run_flags.resolve_run(flag_values)[2] == settings
    # Flags that do not change results are not in the settings; those that do are.
    assert 'seed' not in settings and 'save_dir' not in settings and settings['offline_steps'] == 1_000_000
    assert settings['online_data_version'] == experiment.ONLINE_DATA_VERSION
    assert 'online_data_version' not in resolve('--agent=fql', f'--env_name={MAZE}', '--online_steps=0')[2]


def test_run_directories_differ_by_seed_and_by_every_setting_that_changes_results(tmp_path):
    flag_values = run_flags.parse(['main.py', '--agent=qam', '--env_name=scene-play-singletask-task2-v0',
                                   '--seed=7', '--num_seeds=3', f'--save_dir={tmp_path}'])
    _, _, settings = run_flags.resolve_run(flag_values)
    dirs = run_flags.run_dirs(flag_values, settings)
    digest = experiment.config_hash(settings)
    assert dirs == [(seed, os.path.join(str(tmp_path), 'qam', 'scene-play-singletask-task2-v0', f'seed{seed}-{digest}'))
                    for seed in (7, 10008, 20009)]
    base = ['--agent=qam', '--env_name=scene-play-singletask-task2-v0']
    hashes = {experiment.config_hash(resolve(*base, *extra)[2]) for extra in (
        [], ['--agent.inv_temp=3'], ['--horizon_length=3'], ['--sparse=false'], ['--dataset_episodes=10'],
        ['--offline_steps=10'])}
    assert len(hashes) == 6
    same = {experiment.config_hash(resolve(*base, *extra)[2]) for extra in (
        [], ['--seed=3'], ['--save_dir=elsewhere'], ['--method=QAM-E'], ['--log_interval=7'], ['--noprogress'],
        ['--agent.discount=0.99'])}  # the domain's own discount, set explicitly
    assert len(same) == 1


@pytest.mark.parametrize('args, message', [
    (['--agent=nope'], "Unknown agent 'nope'"),
    (['--agent.inv_tmp=3'], "qam has no config key 'inv_tmp'"),
    (['--offline_stepz=3'], 'offline_stepz'),
    (['--agent.horizon_length=3'], 'Set the chunk length with --horizon_length'),
    (['--offline_steps=-1'], '--offline_steps must be >= 0'),
    (['--agent.num_qs=0'], '--agent.num_qs must be at least 1'),
    (['--agent.actor_hidden_dims=abc'], 'tuple of positive integers'),
    (['--env_name=cube-double-play-singletask-task9-v0'], 'task9'),
    (['--env_name=D4RL/antmaze/umaze-v1', '--sparse=true'], 'D4RL tasks use their own rewards'),
])
def test_what_main_py_refuses_is_refused_with_its_reason(args, message):
    with pytest.raises(app.UsageError, match=message):
        resolve(*args)


def test_flag_names_are_main_pys():
    names, booleans = run_flags.flag_names()
    assert {'env_name', 'seed', 'offline_steps', 'agent', 'sparse', 'progress'} <= names
    assert {'progress', 'wandb', 'balanced_sampling'} <= booleans and 'seed' not in booleans


@pytest.mark.parametrize('name', agents.available_agents())
def test_help_lists_every_key_of_every_agent_with_its_comment_and_default(name):
    config = agents.load_agent(name).get_config()
    lines = run_flags.agent_help(['main.py', f'--agent={name}']).splitlines()
    keys = [line.split(':')[0].strip()[len('--agent.'):] for line in lines[1::2]]
    assert keys == sorted(config)
    for key, comment, default in zip(keys, lines[1::2], lines[2::2]):
        assert len(comment.split(': ', 1)[1]) > 3, comment  # a comment, not an empty string
        assert default == f'    (default: {config[key]!r})'


def test_agent_given_as_two_arguments_is_that_agent():
    """absl also takes `--agent fql`: its keys are checked and listed as fql's, not as the default qam's."""
    assert run_flags.prepare_agent_args(['main.py', '--agent', 'fql', '--agent.alpha=3'])[1:] == [
        '--agent=' + agents.agent_path('fql'), '--agent.alpha=3']
    assert run_flags.agent_help(['main.py', '--agent', 'fql']).startswith('Agent fql:')
