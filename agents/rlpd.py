"""RLPD — SAC with prior data (Ball, Smith, Kostrikov & Levine, 2023), with action chunks.

Online soft actor-critic from scratch: a tanh-Gaussian actor over flat action chunks, the suite's pessimistic
LayerNorm critic ensemble, automatic entropy tuning, and an optional behaviour-cloning log-likelihood term on
the dataset chunks (`bc_alpha`). The one idea that distinguishes RLPD from plain SAC lives in the training
loop, not here: every batch is half offline data and half online replay (main.py `--balanced_sampling`), and
the run has no offline phase (`--offline_steps=0`; the loop acts uniformly at random until `start_training`).
Specification: ALGORITHMS.md §13.

Networks: `critic` + `target_critic` (EMA), `actor` = tanh-Gaussian policy on s → D (no target), `alpha` =
the entropy temperature (a LogParam, initialised to `init_temp`).

Kept from the reference code: the TD target bootstraps with a plain actor sample and has NO entropy bonus;
the actor maximises the pessimistic value mean_k Q − ρ·std_k Q. Fixed: the temperature is float32 (so
`update` compiles once) and the target critic follows the post-update online critic; `grad/norm` is the true
global norm.
"""

import jax
import jax.numpy as jnp
import ml_collections

from utils import rl
from utils.agent_base import ChunkedAgent, shared_config
from utils.networks import LogParam, TanhGaussianPolicy


class RLPDAgent(ChunkedAgent):
    """RLPD agent state: a PRNG key, every network in one `rl.TrainState`, and the (static) config."""

    SWEEPABLE = ('bc_alpha',)  # main.py --hyper_sweep can vmap these

    # ----------------------------------------------------------------------------- helpers
    @property
    def entropy_target(self):
        """H_target: `target_entropy` if set, else −target_entropy_multiplier·D."""
        return rl.target_entropy(self.config.target_entropy, self.config.target_entropy_multiplier, self.action_size)

    # ------------------------------------------------------------------------------ losses
    # critic_loss is ChunkedAgent's common TD loss (§1.4) with a' ~ π(·|s') from the online actor; no entropy term
    # in the backup (KEEP).

    def actor_loss(self, batch, grad_params, rng):
        """L_pi + L_alpha + L_bc (§13): SAC policy loss on the pessimistic Q, temperature loss, BC log-likelihood."""
        observations, actions = batch['observations'], self.flat_actions(batch['actions'])
        means, log_stds = self.network.apply('actor', observations, params=grad_params['actor'])
        policy_actions, log_probs = rl.tanh_gaussian_sample(rng, means, log_stds)  # reparameterised
        # Online critic with its stored parameters (fixed call): the gradient reaches the actor through the actions.
        q = rl.pessimistic_value(self.network.apply('critic', observations, policy_actions), self.config.rho)
        alpha = self.network.apply('alpha', params=grad_params['alpha'])
        # L_pi = mean(lp·sg(α) − q) (gradient to the actor) + L_alpha = α·(−mean sg(lp) − H) (to α only).
        sac_loss, alpha_loss = rl.entropy_regularised_actor_loss(q, log_probs, alpha, self.entropy_target)
        policy_loss = sac_loss - alpha_loss
        # Log-likelihood of the dataset chunks (clipped to ±(1 − 1e-5) inside), masked by `valid`.
        bc_log_probs = rl.tanh_gaussian_log_prob(means, log_stds, actions)
        bc_loss = -self.hyperparameter('bc_alpha') * jnp.mean(batch['valid'] * bc_log_probs)
        loss = sac_loss + bc_loss
        return loss, {'actor/actor_loss': loss, 'actor/policy_loss': policy_loss, 'actor/q': q.mean(),
                      'actor/bc_loss': bc_loss, 'actor/bc_log_prob': bc_log_probs.mean(), 'actor/alpha': alpha,
                      'actor/alpha_loss': alpha_loss, 'actor/entropy': -log_probs.mean(),
                      'actor/std': jnp.exp(log_stds).mean()}

    # update(batch) is ChunkedAgent's: one gradient step on total_loss, then the targets' EMA.

    # ---------------------------------------------------------------------------- acting
    @jax.jit
    def sample_actions(self, observations, rng):
        """a = clip(y), y ~ π(·|s) (stochastic at evaluation too); (*batch, O) → (*batch, D), stored params."""
        means, log_stds = self.network.apply('actor', observations)
        actions, _ = rl.tanh_gaussian_sample(rng, means, log_stds)
        return jnp.clip(actions, -1.0, 1.0)

    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        """A fresh agent; ex_observations (O,) or (1, O), ex_actions (A,) or (1, A)."""
        config, ex_observations, ex_chunks, _ = cls.prepare(config, ex_observations, ex_actions)
        if config.bc_alpha < 0 or config.init_temp <= 0:
            raise ValueError(f'bc_alpha must be >= 0 and init_temp > 0, got {config.bc_alpha}, {config.init_temp}.')
        action_size = ex_chunks.shape[-1]

        networks = {  # name: (module, example inputs)
            'critic': cls.critic_network(config, ex_observations, ex_chunks),
            'actor': (TanhGaussianPolicy(tuple(config.actor_hidden_dims), action_size, config.actor_layer_norm),
                      (ex_observations,)),
            'alpha': (LogParam(config.init_temp), ()),
        }
        return cls.from_modules(seed, config, networks, rl.make_optimizer(config.lr),
                                targets={'target_critic': 'critic'})


def get_config():
    # Shared keys (utils/agent_base.py shared_config): actor_* size the tanh-Gaussian actor's trunk; plain Adam (no
    # gradient clipping); batch_size is split half offline, half online with balanced sampling; rho also applies to the
    # actor's Q.
    return shared_config(
        'rlpd',
        bc_alpha=0.0,  # Weight of the BC log-likelihood of the dataset chunks in the actor loss (tuned per domain).
        target_entropy=ml_collections.config_dict.placeholder(float),  # Entropy target (None: −multiplier·D).
        target_entropy_multiplier=0.5,  # Entropy target = −multiplier·D when target_entropy is unset.
        init_temp=1.0,  # Initial entropy temperature α.
    )


Agent = RLPDAgent
