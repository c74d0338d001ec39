"""Orbax checkpoints of a whole training state: agent pytree, replay rows, and JSON metadata."""

import os

import flax
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from utils import experiment


class Checkpointer:
    """Keeps the latest `max_to_keep` checkpoints of a run under `<run_dir>/checkpoints/<step>`."""

    def __init__(self, directory, max_to_keep=2):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        )

    def save(self, step, state, meta):
        """`state` is any pytree of arrays; `meta` a JSON-able dict. Blocks until written."""
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()

    def latest_step(self):
        return self.manager.latest_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def discard_after(self, step):
        """Delete checkpoints later than `step` (the run restarts from `step` and will save them again)."""
        for later in [s for s in self.manager.all_steps() if s > step]:
            self.manager.delete(later)

    def move_aside(self, step, run_dir, why):
        """Move the checkpoint of `step` out of the way (to the run's discarded/ folder, never deleted)."""
        moved = experiment.move_aside(os.path.join(self.directory, str(step)), run_dir, why)
        self.manager.reload()
        return moved

    def restore_meta(self, step):
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

    def restore(self, step, like):
        """Restore the state shaped like `like` (a pytree of arrays or shape structs) and the metadata."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored['state'], restored['meta']

    def close(self):
        self.manager.close()


def agent_state(agent):
    """What a checkpoint holds of an agent: everything but the swept values (they come from the settings)."""
    state = flax.serialization.to_state_dict(agent)
    state.pop('hyper')
    return state


def restore_agent(checkpointer, step, agent, dataset, transition_keys):
    """(agent, online rows or None, metadata) of the checkpoint at `step`; `agent` gives the structure (and its
    swept values), `dataset` the shapes of the stored online rows (`transition_keys` of them)."""
    meta = checkpointer.restore_meta(step)
    like = {'agent': agent_state(agent)}
    if meta.get('online_rows'):
        like['online_rows'] = {k: jnp.zeros((meta['online_rows'],) + dataset[k].shape[1:], jnp.float32)
                               for k in transition_keys}
    state, meta = checkpointer.restore(step, like)
    agent = flax.serialization.from_state_dict(agent, dict(state['agent'], hyper=agent.hyper))
    return agent, state.get('online_rows'), meta
