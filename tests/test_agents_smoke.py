"""Every agent trains through main.py, offline then online (RLPD online only), on a tiny generated dataset, with
action chunking and without (one action per policy call, n-step TD target: ALGORITHMS §1).

QAM's end-to-end run, with its checks of every output file, is in test_main.py; here every agent must run both
phases to DONE and log finite losses and evaluations.

Without chunking, every agent's networks see D = A through the shared `action_size` (utils/agent_base.py), so CI
runs that variant only for the agents with code of their own around it (QAM, IFQL's gamma^H bootstrap, DSRL's
noise-space policy, RLPD online only; FQL's runs on D4RL in test_d4rl.py); the others' are marked `slow`.
"""

import csv
import json
import math
import os

import pytest

import agents
from tests.main_runs import run_main

TINY = {
    'actor_hidden_dims': '(32, 32)', 'value_hidden_dims': '(32, 32)', 'num_qs': '2', 'batch_size': '16',
    'flow_steps': '3', 'diffusion_steps': '3',
}
ONLINE_ONLY = {'rlpd'}
UNCHUNKED_IN_CI = {'qam', 'ifql', 'dsrl', 'rlpd'}


def agent_args(name):
    config = agents.load_agent(name).get_config()
    return [f'--agent.{key}={value}' for key, value in TINY.items() if key in config]


@pytest.mark.parametrize('name, action_chunking', [
    pytest.param(name, chunking, marks=[] if chunking or name in UNCHUNKED_IN_CI else [pytest.mark.slow])
    for name in agents.available_agents() for chunking in (True, False)
    if not (name == 'qam' and chunking)  # test_main.py runs QAM with action chunking
])
def test_agent_runs_offline_then_online(name, action_chunking, tmp_path, generated_datasets_dir):
    online_only = name in ONLINE_ONLY
    args = [
        f'--agent={name}', '--env_name=cube-double-play-singletask-task2-v0', '--seed=5', f'--save_dir={tmp_path}',
        '--dataset_source=dir', f'--dataset_dir={generated_datasets_dir}', '--eval_episodes=2', '--progress=false',
        '--online_steps=20', '--start_training=10', '--eval_interval=10', '--log_interval=10', '--save_interval=10',
        '--offline_steps=0' if online_only else '--offline_steps=20', *(['--balanced_sampling=true'] if online_only else []),
        f'--agent.action_chunking={action_chunking}', *agent_args(name),
    ]
    run_main(args, tmp_path)
    (run_dir,) = [os.path.join(root) for root, _, files in os.walk(tmp_path) if 'DONE' in files]
    done = json.load(open(os.path.join(run_dir, 'DONE')))
    assert 'online' in done['final'] and (online_only or 'offline' in done['final'])
    with open(os.path.join(run_dir, 'train.csv')) as f:
        rows = list(csv.DictReader(f))
    assert rows and all(math.isfinite(float(r['critic/critic_loss'])) for r in rows)
    with open(os.path.join(run_dir, 'eval.csv')) as f:
        evals = list(csv.DictReader(f))
    assert [r['phase'] for r in evals] == ['online'] * 2 if online_only else ['offline'] * 2 + ['online'] * 2
