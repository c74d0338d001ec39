"""D4RL tasks through Minari: where a dataset is, how it becomes training transitions, and its environment.

A D4RL task is named by its Minari dataset id (`--env_name=D4RL/antmaze/large-diverse-v1`, envs/tasks.py). The
conventions are those that published D4RL results (the FQL and QAM reference code) train and evaluate with, set per
environment in `CONVENTIONS` and described in the README's "D4RL tasks":

* Episodes: Minari stores every episode on its own, with T actions and T + 1 observations. Transition t is
  (o_t, a_t, r_t, o_{t+1}); `terminals` is 1 on each episode's last transition, so that action chunks never cross
  two episodes (no boundary has to be guessed from jumps in the observations, as the concatenated D4RL files
  needed); `masks` is 1 − terminations (a time-limit truncation still bootstraps), and on AntMaze also 0 where the
  ant is at the goal (`goal_masks`: D4RL's AntMaze files flag those steps as terminal; Minari's never terminate).
* Rewards: plus `reward_shift`, in the data and online alike (AntMaze: r − 1, −1 per step until the goal).
* Observations: a Dict observation becomes `observation_keys` concatenated in order (AntMaze: the ant's position,
  then the rest of its state, D4RL's 29 numbers; the goal is fixed by the evaluation environment). The
  environment is wrapped to give the same flat observation.
* Actions: clipped to ±(1 − 1e-5), as on the OGBench path.
* Environment: the dataset's evaluation environment (`recover_environment(eval_env=True)`; the collection
  environment where the dataset names none) with `eval_env_kwargs` (AntMaze: the episode ends at the goal, as in
  D4RL; pen: D4RL's 100 steps). Evaluation episodes last its time limit; success is its `success` at the end.
* Score: D4RL's normalised score, 100·(return − ref_min)/(ref_max − ref_min) (`minari.get_normalized_score`), with
  the dataset's reference scores, or `reference_scores` where those do not fit the evaluation (AntMaze: D4RL's 0
  and 1, so the score is the success rate).

Sources (`--dataset_source`): `dir` (and `auto`) reads `<dataset_dir>/<id>/data/`, Minari's own layout; the
default folder is Minari's (`$MINARI_DATASETS_PATH` or ~/.minari/datasets). `download` (and `auto` when the
dataset is not there) uses Minari's download into that folder and fails within seconds without a network. D4RL
datasets cannot be generated.
"""

import dataclasses
import hashlib
import json
import os
import urllib.error
import urllib.request

import gymnasium
import gymnasium_robotics
import minari
import numpy as np

from envs.data_sources import ACTION_CLIP, DatasetError
from utils import environment

gymnasium.register_envs(gymnasium_robotics)


@dataclasses.dataclass(frozen=True)
class Conventions:
    """How one D4RL environment's data and environment are used (the module docstring)."""

    reward_shift: float = 0.0  # added to every reward, in the data and online
    goal_masks: bool = False  # masks = 0 where the data's reward is positive (the ant at the goal)
    observation_keys: tuple = ()  # a Dict observation as these keys concatenated, in this order
    eval_env_kwargs: tuple = ()  # (name, value) pairs for making the evaluation (and online) environment
    reference_scores: tuple = ()  # (min, max) used instead of the dataset's for the normalised score
    reward_sign_fix: bool = False  # undo gymnasium-robotics's sign error in the dense reward (`D4RLDenseReward`)


# AntMaze: D4RL's AntMaze environments end an episode at the goal and score 0 or 1 (reference scores 0 and 1); the
# Minari datasets' evaluation environment goes on after it (continuing_task), and their reference scores are
# returns of that environment, so both are replaced to keep D4RL's meaning.
_ANTMAZE = Conventions(reward_shift=-1.0, goal_masks=True, observation_keys=('achieved_goal', 'observation'),
                       eval_env_kwargs=(('continuing_task', False),), reference_scores=(0.0, 1.0))
CONVENTIONS = {
    'D4RL/antmaze': _ANTMAZE,
    'D4RL/pen': Conventions(eval_env_kwargs=(('max_episode_steps', 100),)),  # D4RL's pen episodes: 100 steps
    'D4RL/door': Conventions(reward_sign_fix=True),
    'D4RL/hammer': Conventions(reward_sign_fix=True),
    'D4RL/relocate': Conventions(reward_sign_fix=True),
}
DEFAULT_ROOT = os.path.expanduser(os.environ.get('MINARI_DATASETS_PATH', os.path.join('~', '.minari', 'datasets')))
DOWNLOAD_HOST = 'https://huggingface.co'  # Minari's default remote is hf://farama-minari


def data_dir(root, dataset_id):
    """Minari's layout: `<root>/<namespace>/<environment>/<dataset>-v<n>/data/` (metadata.json and the episodes)."""
    return os.path.join(root, *dataset_id.split('/'), 'data')


def _check_network(timeout_s=5.0):
    try:
        urllib.request.urlopen(DOWNLOAD_HOST, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # the server answered: the network is there
    except Exception as e:
        raise DatasetError(
            f'Cannot reach Minari\'s download server {DOWNLOAD_HOST} ({type(e).__name__}: {e}). Without a network, '
            f'copy the dataset folder from a machine that has it (`minari download <id>` there) into --dataset_dir.'
        ) from e


def locate(task, source, dataset_dir, log=print):
    """The folder of a D4RL task's Minari dataset: {source, dataset_name, minari_path}."""
    if source == 'generate':
        raise DatasetError(f'{task.dataset_name}: D4RL datasets cannot be generated locally. Use '
                           f'--dataset_source=dir (a local Minari folder) or download.')
    path = data_dir(dataset_dir, task.dataset_name)
    if source in ('auto', 'dir') and os.path.isfile(os.path.join(path, 'metadata.json')):
        return dict(source='dir', dataset_name=task.dataset_name, minari_path=path)
    if source == 'dir':
        present = os.path.isdir(path)
        raise DatasetError(
            f'{task.dataset_name}: {"no metadata.json in" if present else "no dataset folder"} {path}. Expected a '
            f'Minari dataset there (`minari download {task.dataset_name}` writes one to Minari\'s folder, '
            f'{DEFAULT_ROOT}); point --dataset_dir at the folder that holds D4RL/, or use --dataset_source=download.')
    _check_network()
    log(f'Downloading {task.dataset_name} with Minari into {dataset_dir}.')
    try:
        with environment.variables_set({'MINARI_DATASETS_PATH': dataset_dir}):  # where Minari's download writes
            minari.download_dataset(task.dataset_name)
    except Exception as e:
        raise DatasetError(f'{task.dataset_name}: Minari\'s download failed ({type(e).__name__}: {e}).') from e
    return dict(source='download', dataset_name=task.dataset_name, minari_path=path)


def open_dataset(located):
    try:
        dataset = minari.MinariDataset(located['minari_path'])
    except Exception as e:
        raise DatasetError(f'{located["minari_path"]}: cannot be read as a Minari dataset ({type(e).__name__}: {e}). '
                           f'Download it again.') from e
    if dataset.spec.dataset_id != located['dataset_name']:
        raise DatasetError(f'{located["minari_path"]} holds the dataset {dataset.spec.dataset_id}, not '
                           f'{located["dataset_name"]}: check --dataset_dir.')
    return dataset


def identity(located):
    """The dataset's name and a fingerprint of its metadata (steps, episodes, spaces, environment) and the sizes of
    its data files: cheap to compute for a million steps, and different for any other collection of the same id."""
    path = located['minari_path']
    files = sorted(os.listdir(path))
    with open(os.path.join(path, 'metadata.json'), 'rb') as file:
        contents = [file.read().decode()] + [(name, os.path.getsize(os.path.join(path, name))) for name in files]
    return dict(dataset_name=located['dataset_name'], source=located['source'], files=[os.path.abspath(path)],
                fingerprint=hashlib.sha256(json.dumps(contents).encode()).hexdigest()[:16])


def flatten_observation(observation, keys):
    """A Dict observation as its `keys` concatenated on the last axis (float32); an array as it is."""
    if not keys:
        return np.asarray(observation, np.float32)
    return np.concatenate([np.asarray(observation[k], np.float32) for k in keys], axis=-1)


class FlatObservation(gymnasium.ObservationWrapper):
    """The environment's Dict observation as `flatten_observation` gives it, as the training data has it."""

    def __init__(self, env, keys):
        super().__init__(env)
        self.keys = keys
        size = sum(int(np.prod(env.observation_space[k].shape)) for k in keys)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (size,), np.float32)

    def observation(self, observation):
        return flatten_observation(observation, self.keys)


class D4RLDenseReward(gymnasium.Wrapper):
    """The dense reward of D4RL's door, hammer and relocate tasks. gymnasium-robotics (up to 1.4.2, the latest) rewards
    AdroitHand{Door,Hammer,Relocate}-v1 with +0.1·‖palm − handle or object‖ where D4RL has −0.1·‖…‖ (a sign error,
    Gymnasium-Robotics PR #220; its v2 environments fix it). With this, evaluation returns and normalised scores are
    D4RL's. Success is not affected. (Minari recorded these datasets by replaying D4RL's actions in
    gymnasium-robotics; if that version had the error, the data's rewards differ from the online ones by
    0.2·‖…‖: see the README, "D4RL tasks".)"""

    def distance(self):
        env = self.env.unwrapped
        if hasattr(env, 'handle_site_id'):  # door: the palm's grasp site and the door handle's site
            return np.linalg.norm(env.data.site_xpos[env.grasp_site_id] - env.data.site_xpos[env.handle_site_id])
        # hammer and relocate: the palm's grasp site and the object's body (the hammer, the ball)
        return np.linalg.norm(env.data.site_xpos[env.S_grasp_site_id] - env.data.xpos[env.obj_body_id])

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, float(reward) - 0.2 * float(self.distance()), terminated, truncated, info


def make_env(dataset, conventions, render=False):
    """A fresh evaluation environment of the dataset, with the flat observations of the training data."""
    kwargs = dict(conventions.eval_env_kwargs)
    if render:
        kwargs.update(render_mode='rgb_array', width=200, height=200)
    try:
        env = dataset.recover_environment(eval_env=True, **kwargs)
    except Exception as e:
        raise DatasetError(f'{dataset.spec.dataset_id}: its environment cannot be made ({type(e).__name__}: {e}). '
                           f'It needs gymnasium-robotics (requirements.txt).') from e
    if conventions.reward_sign_fix and not getattr(env.unwrapped, 'sparse_reward', False):
        env = D4RLDenseReward(env)
    return FlatObservation(env, conventions.observation_keys) if conventions.observation_keys else env


def _check_spaces(dataset, env, conventions):
    """The dataset's spaces must be the environment's: data of another environment would train silently wrong."""
    raw_env = env.env if isinstance(env, FlatObservation) else env
    problems = []
    if dataset.action_space != raw_env.action_space:
        problems.append(f'actions {dataset.action_space} in the data, {raw_env.action_space} in the environment')
    if dataset.observation_space != raw_env.observation_space:
        problems.append(f'observations {dataset.observation_space} in the data, {raw_env.observation_space} in the '
                        f'environment')
    if conventions.observation_keys and not isinstance(dataset.observation_space, gymnasium.spaces.Dict):
        problems.append(f'the data should have Dict observations with keys {list(conventions.observation_keys)}')
    if problems:
        raise DatasetError(f'{dataset.spec.dataset_id}: the dataset does not match its environment '
                           f'{raw_env.spec.id}: {"; ".join(problems)}. Download the dataset again.')


def load_transitions(dataset, env, conventions):
    """The dataset's episodes as one dict of float32 transition arrays (the conventions in the module docstring)."""
    _check_spaces(dataset, env, conventions)
    parts = {k: [] for k in ('observations', 'actions', 'rewards', 'masks', 'terminals', 'next_observations')}
    for episode in dataset.iterate_episodes():
        observations = flatten_observation(episode.observations, conventions.observation_keys)
        length = len(episode.actions)
        if len(observations) != length + 1:
            raise DatasetError(f'{dataset.spec.dataset_id}: episode {episode.id} has {len(observations)} observations '
                               f'for {length} actions (expected one more). Download the dataset again.')
        terminals = np.zeros(length, np.float32)
        terminals[-1] = 1.0
        parts['observations'].append(observations[:-1])
        parts['next_observations'].append(observations[1:])
        parts['actions'].append(np.asarray(episode.actions, np.float32))
        rewards = np.asarray(episode.rewards, np.float32)
        ends = np.asarray(episode.terminations, bool) | ((rewards > 0) if conventions.goal_masks else False)
        parts['rewards'].append(rewards + np.float32(conventions.reward_shift))
        parts['masks'].append(1.0 - ends.astype(np.float32))
        parts['terminals'].append(terminals)
    if not parts['actions']:
        raise DatasetError(f'{dataset.spec.dataset_id}: the dataset has no episodes. Download it again.')
    data = {k: np.ascontiguousarray(np.concatenate(v), np.float32) for k, v in parts.items()}
    data['actions'] = np.clip(data['actions'], -ACTION_CLIP, ACTION_CLIP)
    for key, value in data.items():
        if not np.isfinite(value).all():
            raise DatasetError(f'{dataset.spec.dataset_id}: {key} holds NaN or inf. Download the dataset again.')
    return data


def normalizer(dataset, conventions):
    """mean return → D4RL's normalised score in percent, or None where there are no reference scores."""
    if conventions.reference_scores:
        low, high = conventions.reference_scores
        return lambda mean_return: 100.0 * (float(mean_return) - low) / (high - low)
    metadata = dataset.storage.metadata
    if metadata.get('ref_min_score') is None or metadata.get('ref_max_score') is None:
        return None
    return lambda mean_return: 100.0 * float(minari.get_normalized_score(dataset, np.float64(mean_return)))
