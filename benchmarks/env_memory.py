"""Host memory of one evaluation environment per domain: the figure behind main.py's --eval_envs default.

    python -m benchmarks.env_memory [--env_names=cube-double-play-singletask-task1-v0,...] [--count=4]

For each environment name it makes one environment the way main.py does (`envs.env_utils.make_env`), then --count
more, and prints the growth of the process's resident memory (Linux: VmRSS in /proc/self/status) per extra
environment. The first one is not counted: it also loads MuJoCo and the domain's module.
"""

from absl import app, flags

from envs import env_utils
from envs.tasks import parse_env_name

FLAGS = flags.FLAGS
flags.DEFINE_list('env_names', ['cube-double-play-singletask-task1-v0', 'scene-play-singletask-task1-v0',
                                'puzzle-3x3-play-singletask-task1-v0', 'antmaze-large-navigate-singletask-task1-v0'],
                  'Environments to measure.')
flags.DEFINE_integer('count', 4, 'Extra environments made per name.')


def resident_mb():
    with open('/proc/self/status') as f:
        (line,) = [line for line in f if line.startswith('VmRSS:')]
    return int(line.split()[1]) / 1024  # kB


def main(_):
    print(f'{"environment":<45} MB per extra environment')
    kept = []  # every environment stays alive: memory freed by closing one would be reused by the next ones
    for env_name in FLAGS.env_names:
        task = parse_env_name(env_name)
        kept.append(env_utils.make_env(task))
        before = resident_mb()
        kept += [env_utils.make_env(task) for _ in range(FLAGS.count)]
        print(f'{env_name:<45} {(resident_mb() - before) / FLAGS.count:.0f}', flush=True)


if __name__ == '__main__':
    app.run(main)
