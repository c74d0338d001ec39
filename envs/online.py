"""The training environments of the online phase (PROTOCOL §4.2-4.3): each member's episode in progress, the
actions still queued from its last policy call, and the transitions it hands to the replay buffer.

A policy call returns D values, executed open-loop as D / A actions: a chunk of H actions with action chunking,
one action without (the n-step ablation, ALGORITHMS §1). The queue is emptied when an episode ends.

Every transition owns its arrays. The observation row of a member is overwritten at every step (by the next
observation, or by the first observation of the next episode): a stored transition that kept a view of that row
would read s' (or the next episode's s_0) as its s.

Episodes are reproducible: the episode that starts at online step i is reset with a seed derived from (member
seed, i). A checkpoint records each member's episode start and the actions executed since, and `restore` replays
them, so a resumed run continues the very episode it was in (no episode is cut at a checkpoint, and the online
rows after a resume are those of an uninterrupted run).
"""

import numpy as np

from envs import data_sources


def reset_seed(seed, step):
    """The reset seed of a member's episode whose first step is online step `step`."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


class OnlineEnvironments:
    """One training environment per member (vmapped runs have several), stepped by the online loop.

        environments = OnlineEnvironments(envs, seeds, action_dim, sparse)
        environments.start(first_step)            # or environments.restore(states) on resume
        for i in ...:
            for m in environments.needs_actions(members): environments.enqueue(m, policy_output[m])
            transition = environments.step(m, i)  # one environment step, as stored in the replay buffer
    """

    def __init__(self, envs, seeds, action_dim, sparse, reward_shift=0.0):
        if len(envs) != len(seeds):
            raise ValueError(f'{len(envs)} environments for {len(seeds)} members.')
        self.envs, self.seeds, self.action_dim, self.sparse = list(envs), list(seeds), action_dim, sparse
        self.reward_shift = reward_shift  # the domain's, as in its training data (D4RL AntMaze: r - 1)
        num_members = len(self.envs)
        self.observations = np.zeros((num_members, *self.envs[0].observation_space.shape), np.float32)
        self.queues = [[] for _ in range(num_members)]  # actions still to execute from the last policy call
        self.episode_starts = [0] * num_members  # the online step at which each episode in progress began
        self.episode_actions = [[] for _ in range(num_members)]  # the actions executed in it so far
        self.episode_returns = [0.0] * num_members
        self.finished = [[] for _ in range(num_members)]  # (success, return) of episodes ended since `pop_finished`

    def start(self, step):
        """Every member starts a new episode whose first step is online step `step`."""
        for m in range(len(self.envs)):
            self._new_episode(m, step)

    def _new_episode(self, m, step):
        observation, _ = self.envs[m].reset(seed=reset_seed(self.seeds[m], step))
        self.observations[m] = observation
        self.queues[m], self.episode_actions[m], self.episode_returns[m] = [], [], 0.0
        self.episode_starts[m] = step

    def needs_actions(self, members):
        """The members among `members` whose queue is empty: they need a policy call before stepping."""
        return [m for m in members if not self.queues[m]]

    def enqueue(self, m, flat_actions):
        """Queue member m's policy output: D values executed as D / A actions, in order."""
        flat_actions = np.asarray(flat_actions, np.float32)
        if flat_actions.size % self.action_dim:
            raise ValueError(f'A policy output of {flat_actions.size} values is not a whole number of '
                             f'{self.action_dim}-dimensional actions.')
        self.queues[m] = [np.array(action) for action in flat_actions.reshape(-1, self.action_dim)]

    def step(self, m, step):
        """Execute member m's next queued action (clipped to [-1, 1]) at online step `step` and return the
        transition to store (PROTOCOL §4.2): s, the executed action, r (as `training_reward` gives it), terminals =
        terminated or truncated, masks = 1 - terminated, s'. An ended episode is followed by a new one."""
        action = np.clip(self.queues[m].pop(0), -1.0, 1.0).astype(np.float32)
        observation = self.observations[m].copy()  # the row is overwritten below; the transition keeps its own copy
        next_observation, reward, terminated, truncated, info = self.envs[m].step(action)
        next_observation = np.array(next_observation, np.float32)  # a copy: never a view of the environment's state
        reward = self.training_reward(reward)
        self.episode_actions[m].append(action)
        self.episode_returns[m] += reward
        transition = dict(observations=observation, actions=action, rewards=np.float32(reward),
                          terminals=np.float32(terminated or truncated), masks=np.float32(1.0 - float(terminated)),
                          next_observations=next_observation)
        if terminated or truncated:
            self.finished[m].append((float(info['success']), self.episode_returns[m]))
            self._new_episode(m, step + 1)
        else:
            self.observations[m] = next_observation
        return transition

    def training_reward(self, reward):
        """The environment's reward as the training data has it: sparse where the domain is, plus its shift."""
        return (float(data_sources.to_sparse(reward)) if self.sparse else float(reward)) + self.reward_shift

    def pop_finished(self, m):
        """(success, return) of member m's episodes that ended since the last call."""
        finished, self.finished[m] = self.finished[m], []
        return finished

    # ------------------------------------------------------------------------------- checkpoints
    def state(self, m):
        """JSON-able: what `restore` needs to continue member m's episode where it is now."""
        return dict(
            episode_start=self.episode_starts[m],
            episode_actions=[action.tolist() for action in self.episode_actions[m]],
            queue=[action.tolist() for action in self.queues[m]],
            finished=list(self.finished[m]),
            observation=self.observations[m].tolist(),
        )

    def restore(self, states):
        """Continue every member's episode from its `state`: reset with the episode's seed and replay its actions
        (MuJoCo is deterministic), then restore the queue and the unreported finished episodes. Returns {member:
        note} for the members whose replay did not reproduce the saved observation exactly."""
        notes = {}
        for m, state in enumerate(states):
            self._new_episode(m, state['episode_start'])
            for action in state['episode_actions']:
                action = np.asarray(action, np.float32)
                next_observation, reward, terminated, truncated, _ = self.envs[m].step(action)
                if terminated or truncated:
                    raise RuntimeError(f'Replaying the episode in progress of seed {self.seeds[m]} ended it early: the '
                                       'environment is not the one the checkpoint was written with.')
                self.observations[m] = next_observation
                self.episode_actions[m].append(action)
                self.episode_returns[m] += self.training_reward(reward)
            self.queues[m] = [np.asarray(action, np.float32) for action in state['queue']]
            self.finished[m] = [tuple(episode) for episode in state['finished']]
            saved = np.asarray(state['observation'], np.float32)
            if not np.array_equal(saved, self.observations[m]):
                # Another machine or MuJoCo build can round differently; the episode goes on from the replayed state.
                notes[m] = (f'online resume at episode step {len(state["episode_actions"])}: the replayed episode '
                            f'differs from the checkpoint by up to {np.abs(saved - self.observations[m]).max():.2e} '
                            f'in its observation (not an exact resume)')
        return notes
