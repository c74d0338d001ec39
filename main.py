"""Train one agent on one OGBench single-task environment: offline, then online (PROTOCOL §4).

    python main.py --agent=qam --env_name=cube-triple-play-singletask-task2-v0 --agent.inv_temp=3
    python main.py --agent=qam --env_name=... --num_seeds=4 --hyper_sweep=inv_temp=1,3,10   # 12 runs, one program

Results go to <save_dir>/<agent>/<env_name>/seed<seed>-<hash of the settings>/: flags.json, train.csv,
eval.csv, checkpoints/, and DONE (the final summary) once the run has finished. One process writes a run (it holds
the run's lock). Running the same command again resumes from the last checkpoint that restores, exactly (online,
the training episode in progress is replayed), or skips the run if it is DONE; on other data than the run was
started on it stops instead. SIGTERM (Slurm's preemption and time limit), SIGUSR1 and SIGUSR2 (warnings of a time
limit), SIGHUP and Ctrl-C save a checkpoint at the end of the current step before the run exits, even when the
launcher or terminal that showed the output is gone.

Several runs of one configuration (seeds, and optionally the values of one scalar hyperparameter) can train
as the members of one vmapped program: the dataset is shared on the device, each member keeps its own agent,
PRNG keys, replay buffer, environment and run directory, and gets exactly the results of the same run on
its own (up to floating-point reassociation).
"""

from utils import runtime_setup  # noqa: F401  (first: its settings must be made before JAX is imported)

import dataclasses
import math
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import app, flags, logging

import agents
from envs import data_sources, env_utils, online
from utils import checkpoints, datasets, evaluation, experiment, run_flags, training
from utils.checkpoints import Checkpointer
from utils.logger import CsvLogger

FLAGS = flags.FLAGS

# ---------------------------------------------------------------------------------------------- flags
# Defined with what makes a run (its settings, hash and directory) in utils/run_flags.py: the sweep launcher and its
# status resolve a run's command line with the same code, and so find the directory this program writes.
run_flags.define_flags(FLAGS)
flags.adopt_module_key_flags(run_flags)  # --help lists them as this program's flags


def prepare_command_line(argv):
    """The command line with `--agent=qam` as the agent file's path (config_flags needs it), the agent and every
    `--agent.<key>` checked first (config_flags reports those mistakes as tracebacks)."""
    try:
        return run_flags.prepare_agent_args(argv)
    except app.UsageError as e:
        sys.exit(f'FATAL Flags parsing error: {e}')


@dataclasses.dataclass
class Member:
    """One run of a (possibly vmapped) program: its seed, config, run directory and host-side state."""

    seed: int
    config: ml_collections.ConfigDict
    settings: dict
    run_dir: str
    active: bool = True  # False once its losses turned non-finite (it is marked DIVERGED and left alone)
    results: dict = dataclasses.field(default_factory=dict)


def parse_hyper_sweep(config, agent_class):
    """--hyper_sweep=key=v1,v2,... as (key, [values]), or (None, [None]) without a sweep."""
    if not FLAGS.hyper_sweep:
        return None, [None]
    key, _, text = FLAGS.hyper_sweep.partition('=')
    if key not in agent_class.SWEEPABLE:
        raise app.UsageError(f'--hyper_sweep: {config.agent_name} cannot sweep {key!r} in one program; sweepable: '
                             f'{", ".join(agent_class.SWEEPABLE) or "none"} (or launch one run per value).')
    if key in run_flags.overridden_agent_keys(FLAGS):
        raise app.UsageError(f'--hyper_sweep sweeps {key}: do not also set --agent.{key}.')
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        raise app.UsageError(f'--hyper_sweep: expected {key}=<number>,<number>,..., got {FLAGS.hyper_sweep!r}.')
    # Agents branch on the static config (e.g. edit_scale > 0 enables QAM-E): all values must take the same branch.
    if any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise app.UsageError(f'--hyper_sweep: the values of {key} must be distinct and positive, got {values}.')
    return key, values


def make_members(config, settings, swept_key, swept_values):
    """The runs of this program: every seed × every swept value, each with its own settings and run directory."""
    members = []
    for value in swept_values:
        member_config = config.copy_and_resolve_references()
        if swept_key is not None:
            setattr(member_config, swept_key, value)
        member_settings = dict(settings, agent=member_config.to_dict())
        for seed, run_dir in run_flags.run_dirs(FLAGS, member_settings):
            members.append(Member(seed, member_config, member_settings, run_dir))
    return members


def already_finished(member, data_identity):
    """Whether a member's run is finished (it is skipped). A run started on other data, or one that diverged, stops
    the program with what to do instead; a diverged one with --force_restart is moved aside and starts over."""
    record = experiment.read_flags(member.run_dir) or {}
    difference = record.get('data') and data_sources.identity_difference(record['data'], data_identity)
    if difference:
        raise app.UsageError(
            f'{member.run_dir} was started on other data: {difference}. Its results belong to that data: give the '
            f'data it was started on, or use another --save_dir for a run on this data.')
    done = experiment.read_marker(member.run_dir, experiment.DONE)
    if done is not None:
        print(f'Run already finished, skipping (delete {member.run_dir} to rerun): {done.get("summary", "")}')
        return True
    diverged = experiment.read_marker(member.run_dir, experiment.DIVERGED)
    if diverged is not None and not FLAGS.force_restart:
        raise app.UsageError(
            f'{member.run_dir} diverged at step {diverged.get("step")} (non-finite {diverged.get("keys")}). Run again '
            f'with --force_restart to start it over from step 0 (its files are moved to {member.run_dir}/discarded/).')
    if diverged is not None:
        with experiment.RunLock(member.run_dir).held():
            moved = experiment.move_run_aside(member.run_dir, f'diverged at step {diverged.get("step")}; --force_restart')
        print(f'Starting over a run that diverged; its files are in {moved}.')
    return False


def restore_member(checkpointer, step, agent, dataset):
    """(agent, online rows or None, metadata) of one member's checkpoint at `step`; `agent` gives the structure."""
    meta = checkpointer.restore_meta(step)
    if meta['phase'] == 'online' and meta.get('online_data_version') != experiment.ONLINE_DATA_VERSION:
        raise app.UsageError(
            f'{os.path.dirname(checkpointer.directory)}: its online checkpoint was written by code whose stored online '
            f'transitions were wrong (see the README, "Online results before online data version '
            f'{experiment.ONLINE_DATA_VERSION}"). Delete the run directory and run again.')
    return checkpoints.restore_agent(checkpointer, step, agent, dataset, datasets.TRANSITION_KEYS)


def host_metrics(info):
    """Stacked device metrics as one {key: float} dict per member."""
    arrays = {k: np.asarray(v) for k, v in jax.device_get(info).items()}
    num_members = len(next(iter(arrays.values())))
    return [{k: float(v[m]) for k, v in arrays.items()} for m in range(num_members)]


def check_finite(member, metrics, step):
    """Marks a member whose metrics turned non-finite DIVERGED and inactive; True while it is fine."""
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        experiment.write_marker(member.run_dir, experiment.DIVERGED, dict(step=step, keys=bad))
        print(f'Diverged at step {step}: non-finite {bad}. Marked {os.path.join(member.run_dir, experiment.DIVERGED)}.')
        member.active = False
    return not bad


def final_result(evaluation_row):
    """An evaluation's figures as a run's DONE marker records them: step, success in percent, and the D4RL score."""
    result = {'step': int(evaluation_row['step']), 'success_pct': 100 * evaluation_row['success']}
    if evaluation_row.get('normalized_score') is not None:
        result['normalized_score'] = evaluation_row['normalized_score']
    return result


def save_videos(run_dir, frames, step):
    import imageio

    os.makedirs(os.path.join(run_dir, 'videos'), exist_ok=True)
    for i, episode in enumerate(frames):
        imageio.mimsave(os.path.join(run_dir, 'videos', f'step{step}_episode{i}.gif'), episode[::2], duration=0.04)


@dataclasses.dataclass
class TaskData:
    """The task's environments and training data (envs/env_utils.py)."""

    env: object  # the training environment of the first member (the others get their own from make_env)
    make_env: object  # make_env(render=False): a new, independent environment
    transitions: object  # a dict of arrays, or an env_utils.ShardedDataset trained on one shard at a time
    info: dict  # the dataset's name and source, reward_shift, normalized_score (D4RL with reference scores, else None)

    @classmethod
    def load(cls, located, sparse):
        """The data of `located` (data_sources.locate_dataset) and the task's environments."""
        try:
            env, make_env, transitions, _, info = env_utils.make_env_and_datasets(
                FLAGS.env_name, sparse=sparse, located=located)
        except data_sources.DatasetError as e:
            raise app.UsageError(str(e))
        return cls(env, make_env, transitions, info)

    @property
    def sharded(self):
        return isinstance(self.transitions, env_utils.ShardedDataset)

    @property
    def current(self):
        """The transitions trained on now: the dataset, or its current shard."""
        return self.transitions.current if self.sharded else self.transitions

    @property
    def shard_index(self):
        return self.transitions.index if self.sharded else 0

    @property
    def action_dim(self):
        return self.current['actions'].shape[-1]


def create_agents(agent_class, members, swept_key, dataset):
    """Each member's agent, built from its seed and config (`dataset` gives the shapes)."""
    member_agents = []
    for member in members:
        try:
            agent = agent_class.create(member.seed, dataset['observations'][0], dataset['actions'][0], member.config)
        except (ValueError, TypeError) as e:  # a config value the agent cannot be built with
            raise app.UsageError(f'{member.config.agent_name} cannot be created with this config: {e}')
        if swept_key is not None:  # members stack only with one static config: the first member's
            static_config = member_agents[0].config if member_agents else agent.config
            agent = agent.with_swept(swept_key, member.config[swept_key], static_config)
        member_agents.append(agent)
    return member_agents


@dataclasses.dataclass
class ResumePoint:
    """The step the members start from (0, or one that every member saved) and what its checkpoints hold besides the
    agents: their metadata (the last member's), and per member the online rows and the online environment's state
    (None where the checkpoint has none)."""

    step: int
    meta: dict
    online_rows: list
    environment_states: list


def open_run_directory(member, data_identity):
    """Makes a member's run directory, takes its lock (one writer per run) and, at the run's first start, records
    what the run is. Returns the lock, which holds as long as it is referenced (closing its file releases it)."""
    os.makedirs(member.run_dir, exist_ok=True)
    try:
        lock = experiment.RunLock(member.run_dir).acquire()
    except experiment.RunInUse as e:
        raise app.UsageError(str(e))
    if experiment.read_marker(member.run_dir, experiment.DONE) is not None:  # finished by the last holder
        raise app.UsageError(f'{member.run_dir} was finished by another process meanwhile: run again to skip it.')
    if 'data' not in (experiment.read_flags(member.run_dir) or {}):  # the first start records what the run is
        experiment.write_flags(member.run_dir, run_flags.recorded_flags(FLAGS, member.seed), member.settings,
                               data_identity)
    print(f'Run directory: {member.run_dir}')
    return lock


class Run:
    """The members trained by this program and what they write: their run directories (one writer each), train and
    eval logs, checkpoints and W&B run; from `resume` on also their agents (`agents`, stacked; `act` samples their
    actions), evaluation environments and progress bar."""

    def __init__(self, members, swept_key, settings, data, data_identity, act):
        self.members, self.swept_key, self.settings, self.data, self.act = members, swept_key, settings, data, act
        # Held while the program runs: a lock's file must stay referenced (closing it would release it).
        self.locks = [open_run_directory(member, data_identity) for member in members]
        self.train_logs = [CsvLogger(os.path.join(member.run_dir, 'train.csv')) for member in members]
        self.eval_logs = [CsvLogger(os.path.join(member.run_dir, 'eval.csv')) for member in members]
        self.checkpointers = [Checkpointer(os.path.join(member.run_dir, 'checkpoints')) for member in members]
        self.wandb = None
        if FLAGS.wandb:
            try:
                import wandb
            except ImportError:
                raise app.UsageError('--wandb needs the wandb package: pip install wandb.')
            self.wandb = wandb.init(project=FLAGS.wandb_project, name=os.path.basename(members[0].run_dir),
                                    config=settings, dir=members[0].run_dir,
                                    id=experiment.config_hash([settings, FLAGS.seed]), resume='allow')

    def resume(self, member_agents):
        """Restores the members from the latest step that every one of them has saved and that restores (a damaged
        checkpoint is moved aside and the one before is tried), else starts them from `member_agents`; removes what
        was written after that step. Stacks the agents in `agents`, makes the evaluation environments and the
        progress bar, and returns the ResumePoint."""
        num_members = len(self.members)
        start_step, meta, online_rows, environment_states = 0, {}, [None] * num_members, [None] * num_members
        while common_steps := set.intersection(*(set(checkpointer.all_steps()) for checkpointer in self.checkpointers)):
            start_step, restored = max(common_steps), []
            for m, member in enumerate(self.members):
                try:
                    restored.append(restore_member(self.checkpointers[m], start_step, member_agents[m],
                                                   self.data.current))
                except app.UsageError:
                    raise
                except Exception as e:  # a damaged checkpoint: kept aside for inspection, and the one before is tried
                    moved = self.checkpointers[m].move_aside(start_step, member.run_dir,
                                                             f'cannot be restored: {e!r}'[:2000])
                    print(f'The checkpoint at step {start_step} of {member.run_dir} cannot be restored '
                          f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); moved it to {moved}.')
                    break
            if len(restored) == num_members:
                break
            start_step = 0
        if start_step:
            member_agents = [agent for agent, _, _ in restored]
            online_rows = [rows for _, rows, _ in restored]
            environment_states = [member_meta.get('environment') for _, _, member_meta in restored]
            meta = restored[-1][2]
            if self.data.sharded:
                self.data.transitions.seek(meta['shard_index'])
            print(f'Resumed from the checkpoint at step {start_step}.')
        elif any(checkpointer.latest_step() is not None for checkpointer in self.checkpointers):
            print('These runs have no checkpoint step in common that restores: all of them start again from step 0.')
        for checkpointer in self.checkpointers:
            checkpointer.discard_after(start_step)
        for log in self.train_logs + self.eval_logs:
            log.truncate_after(start_step)  # rows written after that checkpoint are redone
        self.agents = training.stack(member_agents)
        envs_per_member = max(1, min(FLAGS.eval_episodes, FLAGS.eval_envs // len(self.members)))
        self.eval_envs = [[self.data.make_env() for _ in range(envs_per_member)] for _ in self.members]
        self.video_envs = [[self.data.make_env(render=True) for _ in range(FLAGS.video_episodes)] for _ in self.members]
        self.progress = tqdm.tqdm(total=FLAGS.offline_steps + FLAGS.online_steps, initial=start_step, unit='step',
                                  disable=not FLAGS.progress, dynamic_ncols=True, smoothing=0.05)
        self.last_log = (time.time(), start_step)
        return ResumePoint(start_step, meta, online_rows, environment_states)

    def catch_stop_signals(self):
        """From here on a signal (Slurm preemption or time limit, Ctrl-C, hangup) checkpoints at the end of the current
        step."""
        self.stop_signals = experiment.StopSignals().install()

    def active(self):
        """The indices of the members that have not diverged; the program ends once none is left."""
        indices = [m for m, member in enumerate(self.members) if member.active]
        if not indices:
            self.progress.close()
            raise SystemExit(f'Every run diverged; see the {experiment.DIVERGED} markers in their run directories.')
        return indices

    def log_train(self, step, phase, member_metrics):
        """Checks each active member's metrics (marking non-finite ones DIVERGED) and logs the rest."""
        now = time.time()
        steps_per_second = (step - self.last_log[1]) / (now - self.last_log[0])
        self.last_log = (now, step)
        for m in self.active():
            metrics = member_metrics[m]
            if not check_finite(self.members[m], metrics, step):
                continue
            row = dict(step=step, phase=phase, **metrics, steps_per_second=steps_per_second)
            self.train_logs[m].log(row)
            if self.wandb:
                self.wandb.log({f'train/{k}': v for k, v in row.items() if k != 'phase'}, step=step)
        self.active()

    def evaluate(self, step, phase, eval_index):
        """Runs the active members' evaluation episodes in lockstep, logs them and keeps them as the phase's result."""
        indices, num_members, action_dim = self.active(), len(self.members), self.data.action_dim
        normalized_score = self.data.info['normalized_score']

        def policy(observations, keys):  # the active members' observations (M', N, O) and keys (M', 2)
            all_observations = np.zeros((num_members, *observations.shape[1:]), np.float32)
            all_keys = np.zeros((num_members, *keys.shape[1:]), keys.dtype)
            all_observations[indices], all_keys[indices] = observations, keys
            return np.asarray(self.act(self.agents, jnp.asarray(all_observations), jnp.asarray(all_keys)))[indices]

        seeds = [self.members[m].seed for m in indices]
        member_metrics, _ = evaluation.evaluate_members(policy, [self.eval_envs[m] for m in indices], seeds, eval_index,
                                                        action_dim, num_episodes=FLAGS.eval_episodes)
        if normalized_score:  # D4RL: the normalised score is linear in the return, so that of the mean return
            for metrics in member_metrics:
                metrics['normalized_score'] = normalized_score(metrics['episode_return'])
        if FLAGS.video_episodes:
            _, member_frames = evaluation.evaluate_members(policy, [self.video_envs[m] for m in indices], seeds,
                                                           eval_index, action_dim, FLAGS.video_episodes)
            for m, frames in zip(indices, member_frames):
                save_videos(self.members[m].run_dir, frames, step)
        for m, metrics in zip(indices, member_metrics):
            member = self.members[m]
            self.eval_logs[m].log(dict(step=step, phase=phase, **metrics))
            if self.wandb:
                self.wandb.log({f'eval/{k}': v for k, v in metrics.items()}, step=step)
            member.results[phase] = {k: metrics[k] for k in ('success', 'normalized_score') if k in metrics}
            member.results[phase]['step'] = step
            name = f', seed {member.seed}{self.swept_value(member)}' if num_members > 1 else ''
            score = f', normalised score {metrics["normalized_score"]:.1f}' if normalized_score else ''
            self.progress.write(f'step {step} ({phase}{name}): success '
                                f'{100 * metrics["success"]:.1f}%{score}, return {metrics["episode_return"]:.1f}, '
                                f'length {metrics["episode_length"]:.0f}')

    def save_checkpoints(self, step, meta, online_rows=None, environments=None):
        """Saves each active member's agent, online rows and online environment's state, with `meta`."""
        for m in self.active():
            state = {'agent': checkpoints.agent_state(training.unstack(self.agents, m))}
            if online_rows:
                state['online_rows'] = {k: rows[m] for k, rows in online_rows.items()}
            member_meta = dict(meta, environment=environments.state(m)) if environments else meta
            self.checkpointers[m].save(step, state, member_meta)

    def stopping(self, step):
        """Whether to checkpoint and stop after this step: --stop_at_step, or a signal (utils/experiment.py)."""
        return (FLAGS.stop_at_step is not None and step >= FLAGS.stop_at_step) or self.stop_signals.received is not None

    def stop(self, step):
        """Ends the program after the checkpoint of `step` (by the signal that asked for it, if one did)."""
        self.close()
        reason = f'after {self.stop_signals.received}' if self.stop_signals.received else '(--stop_at_step)'
        print(f'Stopped at step {step} {reason}, with a checkpoint; run the same command again to resume. '
              f'Run{"s" if len(self.members) > 1 else ""}: {" ".join(member.run_dir for member in self.members)}',
              flush=True)
        if self.wandb:
            self.wandb.finish()
        if self.stop_signals.received:
            self.stop_signals.exit()

    def summarise(self):
        """Writes each finished member's DONE marker (its final results and the deviations from the protocol) and
        deletes its checkpoints; ends with an error if some member diverged."""
        self.stop_signals.restore()  # training is over: finishing the summary beats a checkpoint now
        self.close()
        deviations = []
        if self.data.info['source'] in ('generate', 'cache'):
            deviations.append('locally generated dataset (not the official files)')
        if self.data.sharded and len(self.data.transitions) < 100:
            deviations.append(f'{len(self.data.transitions)} of 100 shards')
        for m in self.active():
            member = self.members[m]
            final = {phase: final_result(r) for phase, r in member.results.items()}
            for phase in ('offline', 'online'):
                if phase not in final:  # evaluated before a resume: read it back from eval.csv
                    rows = [r for r in self.eval_logs[m].read() if r.get('phase') == phase]
                    if rows:
                        final[phase] = final_result(rows[-1])
            parts = [f'{phase} success {r["success_pct"]:.1f}%'
                     + (f', normalised score {r["normalized_score"]:.1f}' if 'normalized_score' in r else '')
                     + f' at step {r["step"]}' for phase, r in final.items()]
            summary = (f'{member.config.agent_name} on {FLAGS.env_name}, seed {member.seed}{self.swept_value(member)}: '
                       + '; '.join(parts or ['no evaluation']))
            experiment.write_marker(member.run_dir, experiment.DONE, dict(
                summary=summary, final=final, dataset=self.data.info['dataset_name'],
                dataset_source=self.data.info['source'], deviations=deviations + experiment.read_notes(member.run_dir)))
            if not FLAGS.keep_checkpoints:  # a finished run is never resumed; its checkpoints are large
                shutil.rmtree(os.path.join(member.run_dir, 'checkpoints'), ignore_errors=True)
            print(f'Finished. {summary}. Results in {member.run_dir}')
        if self.wandb:
            self.wandb.finish()
        diverged = [member.run_dir for member in self.members if not member.active]
        if diverged:
            raise SystemExit(f'{len(diverged)} of {len(self.members)} runs diverged (marked {experiment.DIVERGED}): '
                             f'{" ".join(diverged)}')

    def swept_value(self, member):
        """', <key>=<value>' of the member's swept hyperparameter, or '' without --hyper_sweep."""
        return f', {self.swept_key}={member.config[self.swept_key]:g}' if self.swept_key else ''

    def close(self):
        """Closes the progress bar and the checkpointers (at the end of training, or at a stop)."""
        self.progress.close()
        for checkpointer in self.checkpointers:
            checkpointer.close()


def offline_phase(run, start, offline_updates, offline_keys):
    """Gradient steps on the dataset up to --offline_steps, many per call; False if the run stopped (checkpointed)."""
    if start.step >= FLAGS.offline_steps:
        return True
    data = run.data
    device_data = datasets.to_device(data.current)
    boundaries = [FLAGS.log_interval, FLAGS.eval_interval, FLAGS.save_interval, FLAGS.offline_steps]
    scan_length = math.gcd(*boundaries, FLAGS.shard_interval if data.sharded else 0)
    for step in range(start.step + scan_length, FLAGS.offline_steps + 1, scan_length):
        run.agents, info = offline_updates(run.agents, device_data, offline_keys, step, scan_length)
        run.progress.update(scan_length)
        if data.sharded and step % FLAGS.shard_interval == 0:
            device_data = datasets.to_device(data.transitions.advance())
        if step % FLAGS.log_interval == 0:
            run.log_train(step, 'offline', host_metrics(info))
        if step % FLAGS.eval_interval == 0:
            run.evaluate(step, 'offline', step // FLAGS.eval_interval)
        stop_here = run.stopping(step)
        if step % FLAGS.save_interval == 0 or step == FLAGS.offline_steps or stop_here:
            run.save_checkpoints(step, dict(phase='offline', shard_index=data.shard_index))
        if stop_here:
            run.stop(step)
            return False
    return True


def online_phase(run, start, online_step, act_step, online_keys, act_keys):
    """Environment steps up to --online_steps, each one call that steps every member's environment and, from
    --start_training on, updates the agents --utd_ratio times; False if the run stopped (checkpointed)."""
    first_online = max(start.step - FLAGS.offline_steps, 0) + 1
    if first_online > FLAGS.online_steps:
        return True
    members, data, num_members = run.members, run.data, len(run.members)
    # The dataset is on the device once, shared by the members; each member's buffer holds its online rows.
    offline_data = datasets.to_device(data.current)
    buffers = replay_buffers(data.current, num_members, start)
    act_randomly = FLAGS.offline_steps == 0  # an untrained agent explores uniformly until training starts
    environments = online.OnlineEnvironments([data.env] + [data.make_env() for _ in members[1:]],  # one per member
                                             [member.seed for member in members], data.action_dim,
                                             run.settings['sparse'], data.info['reward_shift'])
    if start.environment_states[0] is not None:  # the episodes in progress at the checkpoint go on
        for m, note in environments.restore(start.environment_states).items():
            print(f'Note ({members[m].run_dir}): {note}.')
            experiment.add_note(members[m].run_dir, note)
    else:
        environments.start(first_online)
    # A member that diverged is no longer stepped: its slot of the vmapped step gets this placeholder.
    idle_transition = {k: np.asarray(data.current[k][0], np.float32) for k in datasets.TRANSITION_KEYS}
    for i in range(first_online, FLAGS.online_steps + 1):
        step = FLAGS.offline_steps + i
        if data.sharded and i % FLAGS.shard_interval == 0:  # the shard in front of the online rows (PROTOCOL §4.4)
            offline_data = datasets.to_device(data.transitions.advance())
        needs_actions = environments.needs_actions(run.active())
        if needs_actions and act_randomly and i < FLAGS.start_training:
            for m in needs_actions:  # one action per call (PROTOCOL §4.3)
                environments.enqueue(m, np.random.default_rng([members[m].seed, i]).uniform(-1, 1, data.action_dim))
        elif needs_actions:
            policy_outputs = np.asarray(act_step(run.agents, jnp.asarray(environments.observations), act_keys, i))
            for m in needs_actions:
                environments.enqueue(m, policy_outputs[m])
        transitions = [idle_transition] * num_members
        for m in run.active():
            transitions[m] = environments.step(m, i)
        transitions = {k: np.stack([np.asarray(t[k], np.float32) for t in transitions]) for k in datasets.TRANSITION_KEYS}
        run.agents, buffers, info = online_step(run.agents, buffers, offline_data, transitions, online_keys, i,
                                                update=i >= FLAGS.start_training)
        run.progress.update(1)
        if i % FLAGS.log_interval == 0 and info:
            member_metrics = host_metrics(info)
            for m, metrics in enumerate(member_metrics):
                finished = environments.pop_finished(m)
                if finished:
                    metrics['online/episode_success'], metrics['online/episode_return'] = np.mean(finished, 0)
            run.log_train(step, 'online', member_metrics)
        if i % FLAGS.eval_interval == 0:
            run.evaluate(step, 'online', (FLAGS.offline_steps // FLAGS.eval_interval) + i // FLAGS.eval_interval)
        stop_here = run.stopping(step)
        if i % FLAGS.save_interval == 0 or i == FLAGS.online_steps or stop_here:
            filled = int(buffers.size[0])
            rows = {k: buffers.data[k][:, :filled] for k in datasets.TRANSITION_KEYS}
            meta = dict(phase='online', online_rows=filled, online_data_version=experiment.ONLINE_DATA_VERSION,
                        shard_index=data.shard_index)
            run.save_checkpoints(step, meta, rows, environments)
        if stop_here:
            run.stop(step)
            return False
    return True


def replay_buffers(dataset, num_members, start):
    """The members' online replay buffers, stacked, holding the online rows of the checkpoint they resume from."""
    row = {k: dataset[k][0] for k in datasets.TRANSITION_KEYS}
    buffers = jax.tree.map(lambda x: jnp.repeat(x[None], num_members, axis=0),  # one per member
                           datasets.ReplayBuffer.create(row, FLAGS.online_steps))
    if start.online_rows[0] is not None:
        filled = start.meta['online_rows']
        buffers = buffers.replace(
            data={k: buffers.data[k].at[:, :filled].set(jnp.stack([rows[k] for rows in start.online_rows]))
                  for k in datasets.TRANSITION_KEYS},
            size=jnp.full((num_members,), filled, jnp.int32),
        )
    return buffers


def main(_):
    logging.set_verbosity(logging.WARNING)  # orbax reports every checkpoint write at INFO
    # ------------------------------------------------------------------------------------- settings
    task, config, settings = run_flags.resolve_run(FLAGS)
    agent_class = agents.load_agent(FLAGS['agent'].config_filename).Agent
    swept_key, swept_values = parse_hyper_sweep(config, agent_class)
    if FLAGS.wandb and (FLAGS.num_seeds > 1 or swept_key):
        raise app.UsageError('--wandb logs one run per process: use it without --num_seeds and --hyper_sweep.')

    # ----------------------------------------------------------------------------------------- data
    try:  # found (or generated) first: which data a run trains on is part of what it is
        located = data_sources.locate_dataset(
            task, source=FLAGS.dataset_source, dataset_dir=FLAGS.dataset_dir or None, cache_dir=FLAGS.dataset_cache_dir,
            episodes=FLAGS.dataset_episodes, seed=FLAGS.dataset_seed, num_workers=FLAGS.num_workers,
            use_sharded=FLAGS.sharded_dataset, num_shards=FLAGS.dataset_shards)
    except data_sources.DatasetError as e:
        raise app.UsageError(str(e))
    data_identity = data_sources.dataset_identity(located)
    members = [member for member in make_members(config, settings, swept_key, swept_values)
               if not already_finished(member, data_identity)]
    if not members:
        return
    data = TaskData.load(located, settings['sparse'])

    # -------------------------------------------------------------------------------- agents and keys
    member_agents = create_agents(agent_class, members, swept_key, data.current)
    offline_updates, online_step, act, act_step = training.make_train_functions(
        config, FLAGS.balanced_sampling, FLAGS.utd_ratio)
    root_keys = [jax.random.PRNGKey(member.seed) for member in members]
    offline_keys, online_keys, act_keys = (jnp.stack([jax.random.fold_in(key, i) for key in root_keys]) for i in (1, 2, 3))

    # ------------------------------------------------- run directories (one writer each), logging and resume
    run = Run(members, swept_key, settings, data, data_identity, act)
    start = run.resume(member_agents)
    del member_agents  # trained stacked in run.agents: these copies would only hold device memory
    run.catch_stop_signals()

    # ---------------------------------------------------------------------------------- offline phase
    if not offline_phase(run, start, offline_updates, offline_keys):
        return  # stopped with a checkpoint, to be resumed

    # ----------------------------------------------------------------------------------- online phase
    if not online_phase(run, start, online_step, act_step, online_keys, act_keys):
        return

    # ------------------------------------------------------------------------------------ summary
    run.summarise()


def command_line_main(argv):
    """main, with a mistake in the input reported as one line (absl would print the whole flag list after it)."""
    try:
        main(argv)
    except (app.UsageError, experiment.RunInUse) as e:
        sys.exit(f'FATAL {e}')


if __name__ == '__main__':
    # A launcher or terminal that dies before this run must not take the run's checkpoint with it.
    sys.stdout, sys.stderr = experiment.OutputWithoutReader(sys.stdout), experiment.OutputWithoutReader(sys.stderr)
    sys.argv = prepare_command_line(sys.argv)
    if any(arg in run_flags.HELP_FLAGS for arg in sys.argv):
        print(run_flags.agent_help(sys.argv), end='\n\n')  # then absl's help lists the flags
    app.run(command_line_main)
