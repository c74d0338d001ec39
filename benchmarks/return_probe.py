"""A run's critic against the returns that its own policy gets, on the states that the policy reaches: a diagnostic.

    python -m benchmarks.return_probe --run_dir=runs/mini/BAM/bam/cube-double-play-singletask-task1-v0/\
seed10001-<hash> --step=50000 --episodes=50 --eval_index=1000

`benchmarks/action_probe.py` looks at the critic on dataset states. A policy can get worse on the states it reaches
itself while nothing changes there. This runs `--episodes` evaluation episodes of a kept checkpoint with main.py's
evaluation (`utils/evaluation.py`, as `benchmarks/evaluate_checkpoint.py` does) and records every step that the
environments took. At the start of each chunk that was executed in full it compares:
- the critic's ensemble mean at the executed chunk, Q(s, a), with the discounted return that followed,
  G = Σ_k γ^k r_{t+k} (what the critic is trained to predict: rewards and discount per step, nothing after a
  termination). An episode cut by its time limit has no rewards past its end; G then adds the value of its last
  reward kept for ever, γ^(T−t) r_{T−1} / (1 − γ): the value of staying where a failed episode ended;
- the spread between the critic's members there (their standard deviation: large where they were not trained);
- for agents with a BC flow (`behavior_flow`), the chunk that the BC flow samples at the same state: the mean
  squared distance from the executed chunk, and the critic's preference for the executed one, Q(s, a) − Q(s, a_BC).
Rows: every chunk start, the first chunk of each episode (Q there is the critic's value of the whole episode), the
chunk starts of the successful episodes and those of the failed ones.
"""

import dataclasses

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import saved_run
from utils import flow

FLAGS = flags.FLAGS


def define_flags():
    """Defined when run as a script only: other benchmark scripts define flags of the same names (run_dir,
    eval_envs, ...), and a test process imports several of them."""
    flags.DEFINE_string('run_dir', None, 'A run directory of main.py (holding flags.json and checkpoints/).',
                        required=True)
    flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
    flags.DEFINE_integer('episodes', 50, 'Evaluation episodes to record.')
    flags.DEFINE_integer('eval_index', 1000, 'Evaluation index: with the run\'s seed, it sets every episode\'s reset '
                         'seed and policy noise (the default is one that no run of main.py reaches in its own '
                         'evaluations).')
    flags.DEFINE_integer('eval_envs', 16, 'Environments that run the episodes, in waves (each holds 150-170 MB).')


class StepRecorder(gymnasium.Wrapper):
    """Every episode that the environment runs, appended to `episodes` as a dict: per step the observation before
    it, the action that the environment received and the reward that followed (copies, in lists), and whether the
    episode terminated (rather than reaching its time limit) and succeeded."""

    def __init__(self, env, episodes):
        super().__init__(env)
        self.episodes, self.current, self.last_observation = episodes, None, None

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self.current = {'observations': [], 'actions': [], 'rewards': [], 'terminated': False, 'success': False}
        self.episodes.append(self.current)
        self.last_observation = np.array(observation)
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.current['observations'].append(self.last_observation)
        self.current['actions'].append(np.array(action))
        self.current['rewards'].append(float(reward))
        self.current['terminated'], self.current['success'] = bool(terminated), bool(info['success'])
        self.last_observation = np.array(observation)
        return observation, reward, terminated, truncated, info


def chunk_starts(episodes, horizon, discount):
    """The start of every chunk that an episode executed in full (steps 0, H, 2H, ... with t + H ≤ T): its
    observation (N, O), the executed chunk flattened (N, H·A), the return that followed (N,), whether the episode
    succeeded (N,) and whether it is the episode's first chunk (N,)."""
    parts = {'observations': [], 'actions': [], 'returns': [], 'success': [], 'first': []}
    for episode in episodes:
        length = len(episode['rewards'])
        starts = np.arange(0, length - horizon + 1, horizon)
        # One recorded episode: nothing follows a termination (mask 0 on its last step); after the time limit, its
        # last reward is taken to go on for ever (the value of staying where a failed episode ended).
        rewards = np.asarray(episode['rewards'])
        masks, ends = np.ones(length), np.zeros(length, bool)
        masks[-1], ends[-1] = 0.0 if episode['terminated'] else 1.0, True
        value_after_end = 0.0 if episode['terminated'] else rewards[-1] / (1.0 - discount)
        returns = saved_run.returns_to_go(rewards, masks, ends, discount, value_after_end)
        actions = np.asarray(episode['actions'])
        parts['observations'].append(np.asarray(episode['observations'])[starts])
        chunks = actions[starts[:, None] + np.arange(horizon)]  # (starts, H, A)
        parts['actions'].append(chunks.reshape(len(starts), horizon * actions.shape[-1]))
        parts['returns'].append(returns[starts])
        parts['success'].append(np.full(len(starts), episode['success']))
        parts['first'].append(starts == 0)
    return {key: np.concatenate(value) for key, value in parts.items()}


def probe(run, episodes, eval_index, eval_envs, key=jax.random.PRNGKey(0)):
    """Records `episodes` evaluation episodes of the run's policy (evaluation index `eval_index`). Returns the
    evaluation's metrics, the recorded episodes, and per chunk start (`chunk_starts`) the critic's ensemble mean
    `q` and spread `q_std` at the executed chunk and, with a BC flow, `bc_distance` and `bc_preference`."""
    recorded = []
    recording = dataclasses.replace(run, make_env=lambda render=False: StepRecorder(run.make_env(render), recorded))
    metrics = saved_run.evaluate(recording, episodes, eval_index, eval_envs)
    agent = run.agent
    rows = chunk_starts(recorded, agent.config.horizon_length if agent.config.action_chunking else 1,
                        agent.config.discount)
    observations, actions = jnp.asarray(rows['observations']), jnp.asarray(rows['actions'], jnp.float32)
    values = agent.network.apply('critic', observations, actions)  # (members, N)
    rows['q'], rows['q_std'] = np.asarray(values.mean(axis=0)), np.asarray(values.std(axis=0))
    if 'behavior_flow' in agent.network.params:
        noises = jax.random.normal(key, actions.shape)
        bc_actions = jnp.clip(flow.euler_ode(agent.network.select('behavior_flow'), observations, noises,
                                             agent.config.flow_steps), -1.0, 1.0)
        rows['bc_distance'] = np.asarray(jnp.mean((actions - bc_actions) ** 2, axis=-1))
        rows['bc_preference'] = rows['q'] - np.asarray(agent.q_mean(observations, bc_actions))
    return metrics, recorded, rows


def print_table(rows):
    columns = [('chunk starts', None), ('return G', 'returns'), ('critic Q', 'q'), ('Q − G', None),
               ('critic spread', 'q_std'), ('Q − Q(BC flow)', 'bc_preference'),
               ('distance to BC flow', 'bc_distance')]
    columns = [(name, key) for name, key in columns if key is None or key in rows]
    print('| states | ' + ' | '.join(name for name, _ in columns) + ' |')
    print('|---' * (len(columns) + 1) + '|')
    groups = {'every chunk start': np.ones_like(rows['first']), 'first chunk of each episode': rows['first'],
              'successful episodes': rows['success'], 'failed episodes': ~rows['success']}
    for name, selected in groups.items():
        if not selected.any():
            continue
        cells = []
        for column, key in columns:
            if column == 'chunk starts':
                cells.append(str(int(selected.sum())))
            elif column == 'Q − G':
                cells.append(f'{np.mean(rows["q"][selected] - rows["returns"][selected]):.2f}')
            else:
                cells.append(f'{np.mean(rows[key][selected]):.{3 if key == "bc_distance" else 2}f}')
        print(f'| {name} | ' + ' | '.join(cells) + ' |')


def main(_):
    if FLAGS.episodes < 1:
        raise app.UsageError(f'--episodes ({FLAGS.episodes}) must be at least 1.')
    run = saved_run.load(FLAGS.run_dir, FLAGS.step)
    metrics, recorded, rows = probe(run, FLAGS.episodes, FLAGS.eval_index, FLAGS.eval_envs)
    successes = sum(episode['success'] for episode in recorded)
    print(f'{FLAGS.run_dir} at step {run.step}, evaluation index {FLAGS.eval_index}: success '
          f'{100 * metrics["success"]:.1f}% ({successes} of {len(recorded)} episodes), return '
          f'{metrics["episode_return"]:.2f}, length {metrics["episode_length"]:.1f}')
    print_table(rows)


if __name__ == '__main__':
    define_flags()
    app.run(main)
