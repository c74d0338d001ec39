"""How much a run's critic depends on the action, and how far its policy has moved from the data: a diagnostic.

    python -m benchmarks.action_probe --run_dir=runs/mini/QAM/qam/scene-play-singletask-task1-v0/seed10001-<hash> \
        --step=50000

On --states dataset states of a run's checkpoint it prints, for the dataset's chunks, the agent's own actions
(`sample_actions`), the BC flow's actions (agents with a `behavior_flow`) and uniformly random chunks: the online
critic's ensemble mean, and the mean squared distance to the dataset's chunks. A critic whose values barely differ
between these gives a policy that follows ∇Q nothing to improve on; the README's "Does it reproduce?" quotes it.
Finished runs keep their checkpoints only with main.py's --keep_checkpoints.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import agents
from envs import data_sources, env_utils, tasks
from utils import checkpoints, datasets, flow

FLAGS = flags.FLAGS
flags.DEFINE_string('run_dir', None, 'A run directory of main.py (holding flags.json and checkpoints/).', required=True)
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_integer('states', 1024, 'Dataset states to probe.')


def load_run(run_dir, step):
    """(agent restored at `step` or the latest checkpoint, training dataset, step) of a main.py run directory."""
    with open(os.path.join(run_dir, 'flags.json')) as f:
        record = json.load(f)
    run_flags, settings = record['flags'], record['settings']
    task = tasks.parse_env_name(settings['env_name'])
    located = data_sources.locate_dataset(
        task, source=run_flags['dataset_source'], dataset_dir=run_flags['dataset_dir'],
        cache_dir=run_flags['dataset_cache_dir'], episodes=settings['dataset_episodes'],
        seed=settings['dataset_seed'], use_sharded=settings['sharded_dataset'], num_shards=settings['dataset_shards'])
    _, _, dataset, _, _ = env_utils.make_env_and_datasets(settings['env_name'], sparse=settings['sparse'],
                                                          located=located)
    dataset = dataset.current if isinstance(dataset, env_utils.ShardedDataset) else dataset
    module = agents.load_agent(settings['agent']['agent_name'])
    config = module.get_config()
    config.update(settings['agent'])
    agent = module.Agent.create(run_flags['seed'], dataset['observations'][0], dataset['actions'][0], config)
    checkpointer = checkpoints.Checkpointer(os.path.join(run_dir, 'checkpoints'))
    step = checkpointer.latest_step() if step is None else step
    if step is None:
        raise app.UsageError(f'{run_dir} has no checkpoint (finished runs keep theirs only with --keep_checkpoints).')
    agent, _, _ = checkpoints.restore_agent(checkpointer, step, agent, dataset, datasets.TRANSITION_KEYS)
    return agent, dataset, step


def main(_):
    agent, dataset, step = load_run(FLAGS.run_dir, FLAGS.step)
    batch = datasets.sample_chunks_np(dataset, np.random.default_rng(0), FLAGS.states, agent.config.horizon_length,
                                      agent.config.discount)
    observations = jnp.asarray(batch['observations'])
    data_actions = agent.flat_actions(jnp.asarray(batch['actions']))
    policy_key, flow_key, uniform_key = jax.random.split(jax.random.PRNGKey(0), 3)
    candidates = {'dataset chunks': data_actions, 'the agent\'s actions': agent.sample_actions(observations, policy_key)}
    if 'behavior_flow' in agent.network.params:
        noises = jax.random.normal(flow_key, data_actions.shape)
        candidates['the BC flow\'s actions'] = flow.euler_ode(agent.network.select('behavior_flow'), observations,
                                                              noises, agent.config.flow_steps)
    candidates['uniform random chunks'] = jax.random.uniform(uniform_key, data_actions.shape, minval=-1.0, maxval=1.0)
    print(f'{FLAGS.run_dir} at step {step}, {FLAGS.states} dataset states:')
    print('| actions | critic ensemble mean | mean squared distance to the dataset chunks |')
    print('|---|---|---|')
    for name, actions in candidates.items():
        q = float(jnp.mean(agent.q_mean(observations, actions)))
        distance = float(jnp.mean((actions - data_actions) ** 2))
        print(f'| {name} | {q:.2f} | {distance:.3f} |')


if __name__ == '__main__':
    app.run(main)
