"""main.py with every online training environment wrapped in a recorder: what the environment actually did, for
tests/test_online_data.py to compare with the rows that the run stored. Test-only.

    QAM_RECORD_DIR=<folder> python tests/recorded_main.py <main.py flags>

Each training environment (one per member) is wrapped, innermost first, in
- `ShortEpisodes`: episodes end after a few steps, by termination with success or by truncation (chosen by the
  episode's reset seed, so a resumed run ends its episodes as an uninterrupted one), so that a short test crosses
  many episode ends of both kinds;
- `Recorder`: every reset (its seed) and every step (observation before it, the action the environment received,
  raw reward, terminated, truncated, success, next observation), as copies, written to
  `<QAM_RECORD_DIR>/seed<seed>.pkl` when the process exits.
"""

import atexit
import os
import pickle
import sys

import gymnasium
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main  # noqa: E402  (defines main.py's flags)
from absl import app  # noqa: E402
from envs import online  # noqa: E402

TERMINATE_AT, TRUNCATE_AT = 17, 23  # lengths of the episodes that terminate (with success) and that are truncated


class ShortEpisodes(gymnasium.Wrapper):
    def reset(self, seed=None, **kwargs):
        self.episode_step, self.terminates = 0, seed is not None and seed % 2 == 0
        return self.env.reset(seed=seed, **kwargs)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.episode_step += 1
        if self.terminates and self.episode_step == TERMINATE_AT:
            terminated, info = True, dict(info, success=1.0)
        if not self.terminates and self.episode_step == TRUNCATE_AT:
            truncated = True
        return observation, reward, terminated, truncated, info


class Recorder(gymnasium.Wrapper):
    def __init__(self, env, path):
        super().__init__(env)
        self.events = []
        atexit.register(lambda: pickle.dump(self.events, open(path, 'wb')))

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self.observation = np.array(observation)
        self.events.append(dict(kind='reset', seed=kwargs.get('seed'), observation=self.observation))
        return observation, info

    def step(self, action):
        executed = np.array(action)
        next_observation, reward, terminated, truncated, info = self.env.step(action)
        self.events.append(dict(kind='step', observation=self.observation, action=executed, reward=float(reward),
                                terminated=bool(terminated), truncated=bool(truncated),
                                success=float(info['success']), next_observation=np.array(next_observation)))
        self.observation = np.array(next_observation)
        return next_observation, reward, terminated, truncated, info


def recording_environments(original_init):
    def init(self, envs, seeds, *args, **kwargs):
        record_dir = os.environ['QAM_RECORD_DIR']
        envs = [Recorder(ShortEpisodes(env), os.path.join(record_dir, f'seed{seed}.pkl')) for env, seed in zip(envs, seeds)]
        original_init(self, envs, seeds, *args, **kwargs)

    return init


if __name__ == '__main__':
    online.OnlineEnvironments.__init__ = recording_environments(online.OnlineEnvironments.__init__)
    sys.argv = main.prepare_command_line(sys.argv)
    app.run(main.command_line_main)
