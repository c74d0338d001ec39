"""ReBRAC — revisited BRAC: TD3+BC with LayerNorm critics (Tarasov et al., 2023), with action chunks.

A deterministic tanh actor maximises the critic's pessimistic value, normalised by the batch mean of its
absolute value, with an MSE behaviour-cloning penalty toward the dataset chunks (`alpha_actor`). The critic
is the suite's LayerNorm ensemble trained with TD3 target-policy smoothing: the TD target bootstraps with the
*target* actor's action plus clipped Gaussian noise. What distinguishes it from the other agents: no
generative policy at all, and target networks (critic and actor) that move only every `actor_freq` steps.
Specification: ALGORITHMS.md §12.

Networks: `critic` + `target_critic`, `actor` (DeterministicTanhActor: trunk MLP and a mean head with a
small variance-scaling init; action tanh(mean)) + `target_actor`.

Update schedule (KEEP, the reference's effective behaviour): critic AND actor are updated at every step; the
targets are EMA-updated only on steps with `step % actor_freq == 0`, "step" being this agent's update count
from 1 (the optimizer step after the update). With `delayed_actor = True` (the textbook TD3 variant, off by
default) the actor is updated only on those steps too: its parameters and its Adam moments are kept as they
were on the other steps. Also kept: no critic BC penalty, pessimistic Q in the actor loss, noisy evaluation.
Fixed: the EMA uses the post-update online parameters; `grad/norm` is the true global norm.
"""

import jax
import jax.numpy as jnp

from utils import rl
from utils.agent_base import ChunkedAgent, shared_config
from utils.networks import DeterministicTanhActor


def keep_subtree(new_tree, old_tree, name, keep):
    """`new_tree` with every leaf under a dict key `name` replaced by its `old_tree` value where `keep` (a traced
    bool). Works on parameter dicts and on optax states whose moments are dicts keyed by network name."""

    def select(path, new, old):
        under_name = any(isinstance(key, jax.tree_util.DictKey) and key.key == name for key in path)
        return jnp.where(keep, old, new) if under_name else new

    return jax.tree_util.tree_map_with_path(select, new_tree, old_tree)


class ReBRACAgent(ChunkedAgent):
    """ReBRAC agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('alpha_actor',)  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    def noisy_actions(self, name, observations, rng):
        """clip(actor(s) + clip(actor_noise·ε, ±actor_noise_clip)), ε ~ N(0, I); actor `name`, stored params."""
        actions = self.network.apply(name, observations)
        noise = jnp.clip(self.config.actor_noise * jax.random.normal(rng, actions.shape, actions.dtype),
                         -self.config.actor_noise_clip, self.config.actor_noise_clip)
        return jnp.clip(actions + noise, -1.0, 1.0)

    # ------------------------------------------------------------------------------ losses
    def bootstrap_actions(self, next_observations, rng):
        """Target-policy smoothing: a' = the noisy action of the *target* actor at s' (fixed call). The critic
        loss is ChunkedAgent's common TD loss (§1.4) with this a'."""
        return self.noisy_actions('target_actor', next_observations, rng)

    def actor_loss(self, batch, grad_params):
        """−mean(λ_q·q) + alpha_actor·mean_b(w_b·‖a_π − a‖²); q pessimistic, λ_q = sg(1/mean|q|) (§12)."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        policy_actions = self.network.apply('actor', observations, params=grad_params['actor'])
        # Online critic with its stored parameters (fixed call): the gradient reaches the actor through a_π.
        q = rl.pessimistic_value(self.network.apply('critic', observations, policy_actions), self.config.rho)
        q_scale = jax.lax.stop_gradient(1.0 / jnp.mean(jnp.abs(q)))
        q_loss = -jnp.mean(q_scale * q)
        bc_loss = jnp.mean(batch['valid'] * jnp.sum((policy_actions - actions) ** 2, axis=-1))
        loss = q_loss + self.hyperparameter('alpha_actor') * bc_loss
        return loss, {'actor/actor_loss': loss, 'actor/q_loss': q_loss, 'actor/bc_loss': bc_loss,
                      'actor/q': q.mean(), 'actor/q_scale': q_scale,
                      'actor/action_abs_mean': jnp.abs(policy_actions).mean()}

    def total_loss(self, batch, grad_params, rng):
        """L_critic + L_actor: one scalar, differentiated once w.r.t. both networks."""
        critic_loss, critic_info = self.critic_loss(batch, grad_params, rng)
        actor_loss, actor_info = self.actor_loss(batch, grad_params)
        return critic_loss + actor_loss, {**critic_info, **actor_info}

    # ------------------------------------------------------------------------------ update
    @jax.jit
    def update(self, batch):
        """One Adam step on the total loss; the targets' EMA runs only on steps with step % actor_freq == 0. Pure."""
        rng, network, info = self.gradient_step(batch)
        is_target_step = network.step % self.config.actor_freq == 0  # network.step: this update's index from 1
        if self.config.delayed_actor:  # keep the actor's parameters and Adam moments on the other steps
            skip = jnp.logical_not(is_target_step)
            network = network.replace(params=keep_subtree(network.params, self.network.params, 'actor', skip),
                                      opt_state=keep_subtree(network.opt_state, self.network.opt_state, 'actor', skip))
        # EMA rate tau on target steps and 0 (targets exactly unchanged) otherwise; post-update online parameters.
        network = network.update_targets(jnp.where(is_target_step, self.config.tau, 0.0))
        info['actor/target_step'] = is_target_step.astype(jnp.float32)
        return self.replace(rng=rng, network=network), info

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """Noisy online actor (also at evaluation, KEEP): (*batch, O) → (*batch, D) in [−1, 1], stored params."""
        return self.noisy_actions('actor', observations, rng)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, _ = cls.prepare(config, ex_observations, ex_actions)
        if config.actor_noise < 0 or config.actor_noise_clip < 0 or config.alpha_actor < 0:
            raise ValueError('actor_noise, actor_noise_clip and alpha_actor must be >= 0.')
        action_size = ex_chunks.shape[-1]

        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'actor': (DeterministicTanhActor(tuple(config.actor_hidden_dims), action_size, config.actor_layer_norm,
                                             config.actor_fc_scale), (ex_observations,)),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic', 'target_actor': 'actor'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the actor's trunk; plain Adam (no gradient
    # clipping); rho also applies to the actor's Q; tau moves the target critic and target actor on target steps only.
    return shared_config(
        'rebrac',
        alpha_actor=0.0,  # Weight of the actor's MSE behaviour-cloning penalty (tuned per domain).
        actor_noise=0.2,  # Std of the Gaussian noise on target-policy and acting actions (tuned per domain).
        actor_noise_clip=0.5,  # The noise is clipped to ±actor_noise_clip before being added.
        actor_freq=2,  # Targets (and, with delayed_actor, the actor) update on steps with step % actor_freq == 0.
        actor_fc_scale=0.01,  # Variance-scaling (fan-average, uniform) init scale of the actor's mean head.
        delayed_actor=False,  # True: the actor also updates only every actor_freq steps (textbook TD3).
    )


Agent = ReBRACAgent
