"""A main.py run directory's agent at one of its checkpoints, with the data it trained on and its environment, and
its policy evaluated again, and discounted returns-to-go: what the diagnostics `action_probe`,
`evaluate_checkpoint` and `return_probe` start from."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app

import agents
from envs import data_sources, env_utils, tasks
from utils import checkpoints, datasets, evaluation, experiment, flow


@dataclasses.dataclass
class SavedRun:
    agent: object  # restored at `step`
    dataset: dict  # the training transitions (the current shard of a sharded set)
    step: int
    record: dict  # the run's flags.json: {'flags', 'settings', 'data', ...}
    make_env: object  # make_env(render=False): a new evaluation environment of the run's task
    info: dict  # env_utils.make_env_and_datasets's info (normalized_score for D4RL)


def load(run_dir, step=None):
    """The run at checkpoint `step` (default: its latest). Usage errors name what is missing: no checkpoint, no
    checkpoint at that step, or data that is not what the run trained on."""
    record = experiment.read_flags(run_dir)
    if record is None:
        raise app.UsageError(f'{run_dir} has no flags.json: it is not a run directory of main.py. Pass one that is '
                             '(<save_dir>/<agent>/<env_name>/seed<seed>-<hash>).')
    run_flags, settings = record['flags'], record['settings']
    task = tasks.parse_env_name(settings['env_name'])
    located = data_sources.locate_dataset(
        task, source=run_flags['dataset_source'], dataset_dir=run_flags['dataset_dir'],
        cache_dir=run_flags['dataset_cache_dir'], episodes=settings['dataset_episodes'],
        seed=settings['dataset_seed'], use_sharded=settings['sharded_dataset'], num_shards=settings['dataset_shards'])
    # A set generated again (on another machine, or before the generator's pin) is other data with the same name:
    # a diagnostic on it would not describe what the run was trained on.
    difference = record.get('data') and data_sources.identity_difference(record['data'],
                                                                        data_sources.dataset_identity(located))
    if difference:
        raise app.UsageError(f'{run_dir} was trained on other data than is found now: {difference}. Put the files '
                             'it trained on back where its flags.json says, then run this again.')
    _, make_env, dataset, _, info = env_utils.make_env_and_datasets(settings['env_name'], sparse=settings['sparse'],
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
    if step not in checkpointer.all_steps():
        raise app.UsageError(f'{run_dir} has no checkpoint at step {step}; it has {sorted(checkpointer.all_steps())} '
                             '(a run keeps its last two). Pass one of those to --step.')
    agent, _, _ = checkpoints.restore_agent(checkpointer, step, agent, dataset, datasets.TRANSITION_KEYS)
    return SavedRun(agent, dataset, step, record, make_env, info)


# What `evaluate` can act with: the run's own policy, or two others that its flow networks define.
POLICIES = {
    'agent': 'the agent\'s own sample_actions, as main.py evaluates it',
    'bc': 'the Euler ODE of the BC flow (behavior_flow) that the agent trained beside its policy: its own BC floor',
    'sde': 'the memoryless SDE of the fine-tuned field (QAM, BAM: T − 1 stochastic steps of f_θ, then one '
           'deterministic step of the base flow, ALGORITHMS §2.3), the process that their actor losses train on, '
           'where the agent acts with the ODE of the same field',
}


def policy_sampler(agent, policy):
    """sample(agent, observations (N, O), key) -> actions (N, D) in [−1, 1] for one of `POLICIES`, checked against
    `agent`: usage errors name an agent that lacks the networks a policy needs."""
    if policy == 'agent':
        return lambda agent, observations, key: agent.sample_actions(observations, key)
    if policy not in POLICIES:
        raise app.UsageError(f'Unknown policy {policy!r}: use one of {", ".join(POLICIES)}.')
    config, names = agent.config, agent.network.params.keys()
    needs, which = {'bc': (('behavior_flow',), 'a flow agent: QAM, BAM, FQL, FEdit, DSRL, IFQL, CGQL'),
                    'sde': (('finetuned_flow', 'behavior_flow'), 'QAM or BAM, without residual')}[policy]
    if not set(needs) <= set(names) or (policy == 'sde' and config.get('residual', False)):
        raise app.UsageError(f'The {policy!r} policy needs an agent with {" and ".join(needs)} ({which}); this one '
                             f'({config.agent_name}, residual={config.get("residual", False)}) has '
                             f'{", ".join(sorted(names))}.')

    def sample(agent, observations, key):
        noise_key, sde_key = jax.random.split(key)
        noises = jax.random.normal(noise_key, (*observations.shape[:-1], agent.action_size))
        if policy == 'bc':
            return flow.euler_ode(agent.network.select('behavior_flow'), observations, noises, config.flow_steps)
        _, final = flow.memoryless_sde(agent.network.select('finetuned_flow'), agent.base_flow, observations, noises,
                                       sde_key, config.flow_steps)
        return jnp.clip(final, -1.0, 1.0)

    return sample


def evaluate(run, episodes, eval_index, eval_envs, policy='agent'):
    """Metrics of `episodes` episodes of the run's policy (main.py's, as one member; or another of `POLICIES`) with
    evaluation index `eval_index`: success, episode_return, episode_length, num_episodes (and normalized_score for
    D4RL)."""
    if episodes < 1 or eval_envs < 1:
        raise app.UsageError(f'--episodes ({episodes}) and --eval_envs ({eval_envs}) must be at least 1.')
    sampler = policy_sampler(run.agent, policy)
    # main.py's policy for a run of one member: the actions for its (1, N, O) observations and (1, 2) keys.
    act = jax.jit(lambda agent, observations, keys: sampler(agent, observations[0], keys[0])[None])
    members_policy = lambda observations, keys: np.asarray(act(run.agent, observations, keys))  # noqa: E731
    envs = [run.make_env() for _ in range(min(episodes, eval_envs))]
    (metrics,), _ = evaluation.evaluate_members(members_policy, [envs], [run.record['flags']['seed']], eval_index,
                                                run.dataset['actions'].shape[-1], num_episodes=episodes)
    for env in envs:
        env.close()
    if run.info['normalized_score']:
        metrics['normalized_score'] = run.info['normalized_score'](metrics['episode_return'])
    return metrics


def returns_to_go(rewards, masks, terminals, discount, value_after_end):
    """G[k] = r[k] + discount·m[k]·G[k+1] along each recorded episode (the TD target's rewards and masks), with
    G = value_after_end after an episode's last row (its time limit: what would follow is not recorded)."""
    returns = np.empty(len(rewards), np.float64)
    following = value_after_end
    for k in range(len(rewards) - 1, -1, -1):
        if terminals[k]:
            following = value_after_end
        returns[k] = rewards[k] + discount * masks[k] * following
        following = returns[k]
    return returns
