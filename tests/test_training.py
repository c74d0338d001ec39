"""utils/training.py and swept hyperparameters (utils/agent_base.py): a member of the vmapped loop updates exactly
as a loop written here updates the agent alone, the loop compiles once, and a traced hyperparameter gives the
update of the same value in the static config. An agent's public `update` and `sample_actions` are compiled
on their own (a direct call from a notebook or a script runs as fast as inside the loop)."""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
from agents import dac, fql, qam, rebrac
from utils import agent_base, datasets, training

O, A, H, ROWS = 5, 2, 2, 60


def config_of(module, **overrides):
    config = module.get_config()
    config.update(dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, horizon_length=H,
                       batch_size=8, flow_steps=3))
    config.update(overrides)
    return config


def create(module, seed, **overrides):
    return module.Agent.create(seed, np.zeros(O, np.float32), np.zeros(A, np.float32), config_of(module, **overrides))


@pytest.fixture(scope='module')
def data():
    rng = np.random.default_rng(0)
    terminals = np.zeros(ROWS, np.float32)
    terminals[29::30] = 1.0
    return datasets.to_device(dict(
        observations=rng.normal(size=(ROWS, O)), actions=rng.uniform(-1, 1, (ROWS, A)),
        rewards=rng.normal(size=ROWS), masks=np.ones(ROWS), terminals=terminals,
        next_observations=rng.normal(size=(ROWS, O))))


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a.network.params), jax.tree.leaves(b.network.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_offline_member_updates_as_the_agent_alone_and_compiles_once(data):
    config = config_of(qam)
    offline_updates = training.make_train_functions(config, balanced=False, utd_ratio=1)[0]
    members = [create(qam, seed) for seed in (0, 1)]
    keys = jnp.stack([jax.random.PRNGKey(10), jax.random.PRNGKey(11)])
    agents, info = offline_updates(training.stack(members), data, keys, 20, num_updates=3)
    agents, info = offline_updates(agents, data, keys, 40, num_updates=3)
    assert offline_updates._cache_size() == 1  # a new step value does not retrace
    # Member 1 alone: update u (18, 19, 20, then 38, 39, 40) samples its batch on the device with fold_in(key, u).
    alone = members[1]
    update = jax.jit(lambda agent, batch: agent.update(batch))
    for step in (20, 40):
        for u in range(step - 2, step + 1):
            key = jax.random.fold_in(keys[1], u)
            alone, last_info = update(alone, datasets.sample_chunks(data, key, 8, H, config.discount))
    assert_same_params(training.unstack(agents, 1), alone)
    for name, value in last_info.items():  # the logged metrics are those of the last update
        np.testing.assert_allclose(info[name][1], value, rtol=1e-4, atol=1e-6)


def test_offline_results_do_not_depend_on_how_the_updates_are_split_into_calls(data):
    # main.py's calls hold gcd(--log_interval, --eval_interval, --save_interval, ...) updates; those flags do not
    # change results (they stay out of the run directory's hash), so six updates as 6, 3 + 3 or 2 + 4 must agree.
    config = config_of(qam)
    offline_updates = training.make_train_functions(config, balanced=False, utd_ratio=1)[0]
    keys = jax.random.PRNGKey(5)[None]
    results = []
    for calls in ((6,), (3, 3), (2, 4)):
        agents, step = training.stack([create(qam, 0)]), 0
        for num_updates in calls:
            step += num_updates
            agents, _ = offline_updates(agents, data, keys, step, num_updates=num_updates)
        results.append(training.unstack(agents, 0))
    for other in results[1:]:
        assert_same_params(other, results[0])
    fresh = jax.tree.leaves(create(qam, 0).network.params)
    assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(results[0].network.params), fresh))


def test_online_step_adds_each_members_transition_then_updates(data):
    # Batches come from the protocol's replay buffer: the dataset, then the member's online transitions. Member 0
    # alone samples the same chunks from a materialised copy of that buffer.
    config = config_of(fql)
    online_step = training.make_train_functions(config, balanced=False, utd_ratio=2)[1]
    members = [create(fql, seed) for seed in (0, 1)]
    buffer = datasets.ReplayBuffer.create({k: v[0] for k, v in data.items()}, capacity=4)
    buffers = training.stack([buffer, buffer])
    transitions = {k: jnp.stack([jnp.full(v.shape[1:], m + 1.0) for m in range(2)]) for k, v in data.items()}
    keys = jnp.stack([jax.random.PRNGKey(3), jax.random.PRNGKey(4)])
    agents, buffers, info = online_step(training.stack(members), buffers, data, transitions, keys, 7, update=True)
    np.testing.assert_array_equal(buffers.size, [1, 1])
    np.testing.assert_array_equal(buffers.data['rewards'][:, 0], [1.0, 2.0])
    alone = members[0]
    materialised = {k: jnp.concatenate([v, transitions[k][:1]]) for k, v in data.items()}
    for key in jax.random.split(jax.random.fold_in(keys[0], 7), 2):
        alone, _ = alone.update(datasets.sample_chunks(materialised, key, 8, H, config.discount))
    assert_same_params(training.unstack(agents, 0), alone)


@pytest.mark.parametrize('module, name, static_value, value', [
    (qam, 'inv_temp', 1.0, 3.0), (qam, 'edit_scale', 0.5, 0.1), (fql, 'alpha', 10.0, 3.0)])
def test_a_swept_value_updates_as_that_value_in_the_config(data, module, name, static_value, value):
    reference = create(module, 0, **{name: value})
    static = create(module, 0, **{name: static_value})
    swept = create(module, 0, **{name: value}).with_swept(name, value, static.config)
    assert swept.config[name] == static_value and swept.hyperparameter(name).dtype == jnp.float32
    batch = datasets.sample_chunks(data, jax.random.PRNGKey(5), 8, H, 0.99)
    update = jax.jit(lambda agent: agent.update(batch))
    assert_same_params(update(swept)[0], update(reference)[0])
    different = update(static)[0]  # the static value alone gives another update: the traced one is used
    assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(different.network.params),
                                                    jax.tree.leaves(update(reference)[0].network.params)))
    with pytest.raises(ValueError, match='cannot be swept'):
        static.with_swept('num_qs', 4, static.config)


SWEEP_CONTEXT = {('cgql', 'noisy_coef'): {'mode': 'mse'}}  # settings under which a key is used at all


def sweep_values(default):
    """(static value, swept value) of a sweepable key: both of the default's sign (agents branch on the static
    config, e.g. edit_scale > 0 enables QAM-E), and different."""
    return (default, default / 2) if default > 0 else (0.5, 0.1)  # half: stays in range (IFQL's expectile)


@pytest.mark.parametrize('name, key', [(name, key) for name in agents.available_agents()
                                       for key in agents.load_agent(name).Agent.SWEEPABLE])
def test_every_sweepable_key_of_every_agent_is_read_as_its_traced_value(data, name, key):
    """A member swept to `value` over a static config holding another value updates and acts exactly as an agent
    created with `value`: a key read from the config instead of hyperparameter() would train every member of a
    --hyper_sweep with the first member's value (and fail here)."""
    module = agents.load_agent(name)
    static_value, value = sweep_values(module.get_config()[key])
    context = SWEEP_CONTEXT.get((name, key), {})
    reference = create(module, 0, **context, **{key: value})
    static = create(module, 0, **context, **{key: static_value})
    swept = create(module, 0, **context, **{key: value}).with_swept(key, value, static.config)
    batch = datasets.sample_chunks(data, jax.random.PRNGKey(5), 8, H, 0.99)
    observations = data['observations'][:4]

    def outcome(agent):  # two updates: at initialisation some keys have no effect yet (FAWAC's weights are all 1)
        update = jax.jit(lambda a: a.update(batch)[0])
        updated = update(update(agent))
        return jax.tree.leaves(updated.network.params) + [updated.sample_actions(observations, jax.random.PRNGKey(6))]

    expected = outcome(reference)
    for x, y in zip(outcome(swept), expected):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    # The key matters: the static value alone updates or acts differently, so the comparison above can fail.
    assert any(not np.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(outcome(static), expected)), key


@pytest.mark.parametrize('name', agents.available_agents())
def test_every_agents_public_update_and_sample_actions_are_compiled(name):
    agent_class = agents.load_agent(name).Agent
    for method in ('update', 'sample_actions'):
        assert hasattr(getattr(agent_class, method), 'lower'), f'{name}.{method} is not wrapped in jax.jit'


@pytest.mark.parametrize('module', [qam, rebrac, dac])  # the base class's update, ReBRAC's own, a diffusion agent
def test_a_direct_update_compiles_once_and_matches_the_fused_loop(data, module):
    config = config_of(module, batch_size=7)  # a batch size no other test uses: the first call compiles
    offline_updates = training.make_train_functions(config, balanced=False, utd_ratio=1)[0]
    key = jax.random.PRNGKey(12)
    fused, fused_info = offline_updates(training.stack([create(module, 0, batch_size=7)]), data, key[None], 5,
                                        num_updates=1)
    agent = create(module, 0, batch_size=7)
    update = type(agent).update
    compiled_before = update._cache_size()
    batch = datasets.sample_chunks(data, jax.random.fold_in(key, 5), 7, H, config.discount)  # the loop's 5th batch
    direct, info = agent.update(batch)
    assert update._cache_size() == compiled_before + 1
    direct.update(batch)  # a new agent state of the same structure: no second compilation
    assert update._cache_size() == compiled_before + 1
    assert_same_params(training.unstack(fused, 0), direct)
    for name, value in info.items():
        np.testing.assert_allclose(fused_info[name][0], value, rtol=1e-4, atol=1e-6)
    observations = data['observations'][:3]
    actions = agent.sample_actions(observations, key)
    assert actions.shape == (3, agent.action_size) and type(agent).sample_actions._cache_size() >= 1


@pytest.mark.parametrize('name', agents.available_agents())
def test_every_count_in_an_agents_config_must_be_at_least_1(name):
    module = agents.load_agent(name)
    counts = [key for key in agent_base.COUNT_KEYS if key in module.get_config()]
    assert 'horizon_length' in counts and 'num_qs' in counts
    for key in counts:
        config = module.get_config()
        config[key] = 0
        with pytest.raises(ValueError, match=f'{key} = 0: must be at least 1'):
            module.Agent.create(0, np.zeros(O, np.float32), np.zeros(A, np.float32), config)


def keyed_lines(function):
    """The `key=value,  # comment` lines of a function's source: {key: line}."""
    lines = inspect.getsource(function).splitlines()
    return {re.match(r'\s+(\w+)=', line).group(1): line for line in lines if re.match(r'\s+\w+=', line)}


@pytest.mark.parametrize('name', agents.available_agents())
def test_every_config_key_of_every_agent_has_a_one_line_comment(name):
    """`get_config()` is the shared keys (agent_base.shared_config) and the agent's own (which may replace a shared
    default): every key of the result is written in one of the two, each with a comment on its line."""
    module = agents.load_agent(name)
    shared, own = keyed_lines(agent_base.shared_config), keyed_lines(module.get_config)
    assert set(shared) | set(own) == set(module.get_config())
    assert all(re.search(r'\)?,\s+# \S', line) for line in [*shared.values(), *own.values()])
