"""How much a run's critic depends on the action, and how far its policy has moved from the data: a diagnostic.

    python -m benchmarks.action_probe --run_dir=runs/mini/QAM/qam/scene-play-singletask-task1-v0/seed10001-<hash> \
        --step=50000

On --states dataset states of a run's checkpoint it prints, for the dataset's chunks, the agent's own actions
(`sample_actions`), the BC flow's actions (agents with a `behavior_flow`) and uniformly random chunks: the online
critic's ensemble mean, and the mean squared distance to the dataset's chunks. A critic whose values barely differ
between these gives a policy that follows ∇Q nothing to improve on; the README's "Does it reproduce?" quotes it.

A second table does the same on states close to a success in the data: rows whose discounted return-to-go in the
dataset (the TD target's rewards and masks, summed along the recorded episode) is above --near_success_return.
There the critic should be well above the never-succeed value and, if it can guide the policy, should differ
between actions. Each table also gives ‖∇_a Q‖ at the agent's actions (QAM's pull away from its BC flow).
Finished runs keep their checkpoints only with main.py's --keep_checkpoints. A run whose data is no longer found
as it was (another fingerprint than its flags.json records) is refused rather than probed on other data
(`benchmarks/saved_run.py`).
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import saved_run
from utils import datasets, flow

FLAGS = flags.FLAGS
flags.DEFINE_string('run_dir', None, 'A run directory of main.py (holding flags.json and checkpoints/).', required=True)
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_integer('states', 1024, 'Dataset states to probe (in each table).')
flags.DEFINE_float('near_success_return', -50.0,
                   'The second table\'s states: rows whose discounted return-to-go in the data is above this (with '
                   'sparse rewards, -50 is a success about 70 steps ahead at discount 0.99).')


def print_table(agent, dataset, starts, keys):
    """The critic at the data's chunks, the agent's, the BC flow's and random chunks at these start rows."""
    batch = datasets.sample_chunks_at_np(dataset, starts, agent.config.horizon_length, agent.config.discount)
    observations = jnp.asarray(batch['observations'])
    data_actions = agent.flat_actions(jnp.asarray(batch['actions']))
    policy_key, flow_key, uniform_key = keys
    candidates = {'dataset chunks': data_actions,
                  'the agent\'s actions': agent.sample_actions(observations, policy_key)}
    if 'behavior_flow' in agent.network.params:
        noises = jax.random.normal(flow_key, data_actions.shape)
        candidates['the BC flow\'s actions'] = flow.euler_ode(agent.network.select('behavior_flow'), observations,
                                                              noises, agent.config.flow_steps)
    candidates['uniform random chunks'] = jax.random.uniform(uniform_key, data_actions.shape, minval=-1.0, maxval=1.0)
    print('| actions | critic ensemble mean | mean squared distance to the dataset chunks |')
    print('|---|---|---|')
    for name, actions in candidates.items():
        q = float(jnp.mean(agent.q_mean(observations, actions)))
        distance = float(jnp.mean((actions - data_actions) ** 2))
        print(f'| {name} | {q:.2f} | {distance:.3f} |')
    gradients = jax.grad(lambda a: jnp.sum(agent.q_mean(observations, a)))(candidates['the agent\'s actions'])
    norm = float(jnp.mean(jnp.linalg.norm(gradients, axis=-1)))
    print(f"\n‖∇_a Q‖ of the online critic's mean at the agent's actions: {norm:.3f} (QAM's terminal adjoint is "
          "inv_temp times the target critic's)\n")


def main(_):
    run = saved_run.load(FLAGS.run_dir, FLAGS.step)
    agent, dataset, step = run.agent, run.dataset, run.step
    horizon, discount = agent.config.horizon_length, agent.config.discount
    rng, keys = np.random.default_rng(0), jax.random.split(jax.random.PRNGKey(0), 3)
    num_starts = len(dataset['observations']) - horizon + 1
    print(f'{FLAGS.run_dir} at step {step}, {FLAGS.states} dataset states:')
    print_table(agent, dataset, rng.integers(0, num_starts, size=FLAGS.states), keys)

    # Never succeeding is worth min(r)/(1 - discount): the value after a time limit, where the data stops.
    returns = saved_run.returns_to_go(dataset['rewards'], dataset['masks'], dataset['terminals'], discount,
                            float(np.min(dataset['rewards'])) / (1.0 - discount))
    near = np.flatnonzero(returns[:num_starts] > FLAGS.near_success_return)
    print(f'The data\'s discounted return-to-go: mean {returns.mean():.2f} over all rows; {len(near)} rows '
          f'({len(near) / len(returns):.2%}) are above {FLAGS.near_success_return:g}.')
    if len(near) == 0:
        return
    starts = rng.choice(near, size=min(FLAGS.states, len(near)), replace=False)
    print(f'\n{len(starts)} of those states (data return-to-go mean {returns[starts].mean():.2f}):')
    print_table(agent, dataset, starts, keys)


if __name__ == '__main__':
    app.run(main)
