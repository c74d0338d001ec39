"""A run's policy at one of its checkpoints evaluated again, on as many episodes as asked: a diagnostic.

    python -m benchmarks.evaluate_checkpoint --run_dir=runs/mini/BAM/bam/cube-double-play-singletask-task1-v0/\
seed10001-<hash> --step=50000 --episodes=400 --eval_index=1000

A run's evaluations have 20 or 50 episodes, too few to tell a success rate of 18% from one of 8% with confidence;
this evaluates a kept checkpoint (main.py's --keep_checkpoints) on more. It uses main.py's evaluation
(`utils/evaluation.py`): episode i of evaluation index k has the reset seed and policy noise derived from (the run's
seed, k, i), whatever the number of environments. With the run's own episode count and index (the defaults: its
eval_episodes, and step // eval_interval as in main.py) it repeats the run's evaluation at that step, which eval.csv
recorded; another --eval_index draws other episodes. Prints the success rate with its 95% Clopper-Pearson interval.

--policy=bc acts with the BC flow that QAM, BAM and the other flow agents train beside their policy (the floor that
the policy should stay above), --policy=sde with the memoryless SDE that QAM's and BAM's actor losses train on
(they act with the deterministic ODE of the same field; the two agree only where the field is the tilted flow).
"""

import csv
import os

import scipy.stats
from absl import app, flags

from benchmarks import saved_run

FLAGS = flags.FLAGS
flags.DEFINE_string('run_dir', None, 'A run directory of main.py (holding flags.json and checkpoints/).', required=True)
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_integer('episodes', None, 'Evaluation episodes (default: the run\'s --eval_episodes).')
flags.DEFINE_integer('eval_index', None, 'Evaluation index: with the run\'s seed, it sets every episode\'s reset seed '
                     'and policy noise (default: the run\'s own at this step, step // eval_interval).')
flags.DEFINE_integer('eval_envs', 16, 'Environments that run the episodes, in waves (each holds 150-170 MB).')
flags.DEFINE_enum('policy', 'agent', list(saved_run.POLICIES), 'What acts: ' + '; '.join(
    f'{name}: {text}' for name, text in saved_run.POLICIES.items()) + '.')


def recorded_evaluation(run_dir, step):
    """The row of the run's eval.csv at `step`, or None."""
    path = os.path.join(run_dir, 'eval.csv')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return next((row for row in csv.DictReader(f) if int(row['step']) == step), None)


def main(_):
    run = saved_run.load(FLAGS.run_dir, FLAGS.step)
    run_flags = run.record['flags']
    episodes = run_flags['eval_episodes'] if FLAGS.episodes is None else FLAGS.episodes
    own_index = run.step // run_flags['eval_interval']
    eval_index = own_index if FLAGS.eval_index is None else FLAGS.eval_index
    metrics = saved_run.evaluate(run, episodes, eval_index, FLAGS.eval_envs, FLAGS.policy)
    successes = int(round(metrics['success'] * episodes))
    low, high = scipy.stats.binomtest(successes, episodes).proportion_ci(confidence_level=0.95)
    score = f', normalised score {metrics["normalized_score"]:.1f}' if 'normalized_score' in metrics else ''
    acting = '' if FLAGS.policy == 'agent' else f', acting with {FLAGS.policy}'
    print(f'{FLAGS.run_dir} at step {run.step}{acting}, evaluation index {eval_index}: success '
          f'{100 * metrics["success"]:.1f}% ({successes} of {episodes} episodes; 95% interval '
          f'{100 * low:.1f}-{100 * high:.1f}%), return '
          f'{metrics["episode_return"]:.2f}, length {metrics["episode_length"]:.1f}{score}')
    recorded = recorded_evaluation(FLAGS.run_dir, run.step)
    if recorded is not None and FLAGS.policy == 'agent':
        same = int(recorded['num_episodes']) == episodes and eval_index == own_index
        print(f'The run\'s own evaluation at this step (eval.csv, index {own_index}): success '
              f'{100 * float(recorded["success"]):.1f}% on {recorded["num_episodes"]} episodes, return '
              f'{float(recorded["episode_return"]):.2f}' + (' (the same episodes)' if same else ''))


if __name__ == '__main__':
    app.run(main)
