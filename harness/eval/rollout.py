"""One chain and one subtask, by CALVIN's protocol (docs/CALVIN.md#evaluation-protocol).

Per chain: reset the env to the chain's start state, then per subtask: the task's validation
instruction, `agent.reset()`, and at most `ep_len` steps; after every step the oracle compares the
current info with the info at the subtask's start, and the subtask stops at success. The chain stops
at the first failure.

A subtask fails for one of these reasons:
  timeout         no success within ep_len steps
  invalid_action  the agent returned something the env cannot take (NaN/inf, wrong shape, gripper not +-1)
  agent_error     the agent raised (a remote agent's policy server that does not answer within its timeout
                  too); `AgentUnavailable` (the server went away) instead goes up to the runner, which
                  waits for the server and runs the chain again (up to MAX_OUTAGES times)
  env_error       the env (or the oracle reading its info) raised: `EnvFailure` goes up to the runner,
                  which rebuilds the env and retries the chain once before recording this reason

Relative actions with any arm value outside [-1, 1] are executed as they are (calvin_env does not
clip either) and counted.

A single-task episode with a setup (harness/eval/jobs.py) first has the scripted expert do the setup's tasks
from the start state, unscored, untraced and unrendered (the expert reads the state vectors); the agent then
gets the scene as the expert left it. A setup the expert fails is drawn again (another start and setup of the
same task), up to SETUP_DRAWS times.
"""

from __future__ import annotations

import random
import sys
import traceback
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from agents import Agent, AgentUnavailable
from agents.scripted import ScriptedExpert
from harness.envs import Env
from harness.envs.actions import parse_action
from harness.envs.perturbations import AXES, Perturbations, axis_rng
from harness.eval.jobs import Job, redrawn
from harness.tasks import TaskOracle, eval_instruction, initial_state, symbolic_state, valid_tasks
from harness.tasks.info import InfoView
from harness.tasks.paraphrases import perturbed_instruction

REASONS = ("success", "timeout", "invalid_action", "agent_error", "env_error")
FAILURE_REASONS = REASONS[1:]
SETUP_DRAWS = 5  # starts and setups a single-task episode tries before its setup counts as an env failure
SETUP_EP_LEN = 360  # the expert's steps per setup task: CALVIN's subtask budget, whatever ep_len the agent has


@dataclass
class SubtaskOutcome:
    task: str
    success: bool
    steps: int  # env steps taken
    reason: str  # one of REASONS
    message: str = ""  # the error, for invalid_action / agent_error / env_error
    out_of_range: int = 0  # relative actions with some |arm value| > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SubtaskTrace:
    """The cheap state of every frame of a subtask (frame 0 = its start), to re-render videos later."""

    task: str
    instruction: str
    robot_obs: list[np.ndarray] = field(default_factory=list)
    scene_obs: list[np.ndarray] = field(default_factory=list)
    plans: list[np.ndarray | None] = field(default_factory=list)  # the agent's planned TCP path per frame
    # the symbolic state at the subtask's last frame, as the oracle reads it (contacts: which block is grasped,
    # stacked): what the failure analysis says of where a block ended (harness/eval/failures.py)
    end_state: dict[str, Any] | None = None

    def add(self, obs: dict[str, Any], plan: np.ndarray | None) -> None:
        self.robot_obs.append(np.asarray(obs["robot_obs"], dtype=np.float64).copy())
        self.scene_obs.append(np.asarray(obs["scene_obs"], dtype=np.float64).copy())
        self.plans.append(None if plan is None else np.asarray(plan, dtype=np.float64).reshape(-1, 3).copy())


class EnvFailure(Exception):
    """The env raised during a chain; carries what the chain did before (and, for a single-task episode
    whose setup was drawn again, the job as run)."""

    def __init__(self, done: list[SubtaskOutcome], task: str, steps: int, error: BaseException,
                 job: Job | None = None) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.done, self.task, self.steps, self.job = done, task, steps, job
        self.message = _error_text(error)

    def outcomes(self) -> list[SubtaskOutcome]:
        """The chain as recorded when the retry failed too: the subtask in progress fails with env_error."""
        return [*self.done, SubtaskOutcome(self.task, False, self.steps, "env_error", self.message)]


class SetupFailed(EnvFailure):
    """The scripted expert failed a single-task episode's setup in every draw: the draws come from the episode's
    seed, so running it again would fail the same way; recorded at once, not retried on a new env."""


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()[-500:]


def seed_everything(seed: int) -> None:
    """Python's, numpy's and (when already imported) torch's global RNGs; never imports torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


@contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Restore Python's, numpy's and torch's global RNG states afterwards: an evaluation run inside a
    training process (workers=0) must not change the trainer's random stream."""
    torch = sys.modules.get("torch")
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state() if torch is not None else None)
    # torch.manual_seed (seed_everything) reseeds every CUDA generator too: those of a process using CUDA are kept
    cuda = torch.cuda.get_rng_state_all() if torch is not None and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        if states[2] is not None:
            torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def agent_observation(obs: dict[str, Any], privileged: bool) -> dict[str, Any]:
    """What the agent may see: the env's observation, without scene_obs unless it declared privileged."""
    if privileged:
        return obs
    return {k: v for k, v in obs.items() if k != "scene_obs"}


def env_action(raw: Any, action_type: str) -> tuple[Any, bool]:
    """The agent's output as the env's action, and whether it is an out-of-range relative action.

    ValueError (-> invalid_action) for anything the env would refuse. A 7-vector from an absolute agent
    is (x, y, z, euler x, y, z, gripper) and goes to the env as {"type": "cartesian_abs", ...}.
    """
    if action_type == "absolute" and isinstance(raw, (tuple, list)) and len(raw) == 3:
        parse_action(raw)
        return raw, False
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the agent returned {type(raw).__name__}, not a 7-d action: {e}") from e
    if arr.shape != (7,):
        raise ValueError(f"the agent returned an action of shape {arr.shape}, expected (7,)")
    if action_type == "absolute":
        action: Any = {"type": "cartesian_abs", "action": arr}
        parse_action(action)
        return action, False
    parse_action(arr)
    return arr, bool(np.any(np.abs(arr[:6]) > 1.0))


class ObservationDelay:
    """The latency axis (harness/envs/perturbations.py): the policy sees the observation of `steps` env steps
    ago, as a policy that takes that long to answer would; the chain's first observation until there is one
    that old. Over a whole chain: a real-time system's lag does not restart with each instruction."""

    def __init__(self, steps: int) -> None:
        self.history: deque[dict[str, Any]] = deque(maxlen=steps + 1)

    def __call__(self, obs: dict[str, Any]) -> dict[str, Any]:
        self.history.append(obs)
        return self.history[0]


def run_subtask(
    env: Env, agent: Agent, oracle: TaskOracle, task: str, obs: dict[str, Any], ep_len: int,
    trace: SubtaskTrace | None = None, done: list[SubtaskOutcome] | None = None,
    instruction: str | None = None, delay: ObservationDelay | None = None,
) -> tuple[SubtaskOutcome, dict[str, Any]]:
    """Up to ep_len steps of one subtask from the env's current state; returns the outcome and the last obs.
    instruction: what the agent is told (default CALVIN's); delay: the latency axis."""
    spec = agent.spec
    instruction = instruction if instruction is not None else eval_instruction(task)
    delay = delay or ObservationDelay(0)
    steps = out_of_range = 0

    def ended(outcome: SubtaskOutcome) -> tuple[SubtaskOutcome, dict[str, Any]]:
        if trace is not None:
            try:
                trace.end_state = symbolic_state(info, env.description.layout()).as_dict()
            except Exception:  # noqa: BLE001 - for the failure analysis only, which then reads distances
                trace.end_state = None
        return outcome, obs

    def failed(reason: str, error: BaseException) -> tuple[SubtaskOutcome, dict[str, Any]]:
        return ended(SubtaskOutcome(task, False, steps, reason, _error_text(error), out_of_range))

    try:
        info = env.get_info()
        start = InfoView(info)
    except Exception as e:  # noqa: BLE001 - any env failure is retried by the runner
        raise EnvFailure(done or [], task, steps, e) from e
    try:
        agent.reset()
    except AgentUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - a failing agent fails its subtask, not the evaluation
        if trace is not None:  # the start frame: a failure's clip has one frame at least
            trace.add(obs, None)
        return failed("agent_error", e)
    if trace is not None:
        trace.add(obs, _plan(agent))
    while steps < ep_len:
        try:
            raw = agent.step(agent_observation(delay(obs), spec.privileged), instruction)
        except AgentUnavailable:
            raise
        except Exception as e:  # noqa: BLE001
            return failed("agent_error", e)
        try:
            action, outside = env_action(raw, spec.action_type)
        except ValueError as e:
            return failed("invalid_action", e)
        out_of_range += outside
        try:
            obs, _, _, info = env.step(action)
            success = oracle.is_completed(task, start, info)
        except Exception as e:  # noqa: BLE001
            raise EnvFailure(done or [], task, steps, e) from e
        steps += 1
        if trace is not None:
            trace.add(obs, _plan(agent))
        if success:
            return ended(SubtaskOutcome(task, True, steps, "success", "", out_of_range))
    return ended(SubtaskOutcome(task, False, steps, "timeout", "", out_of_range))


def _plan(agent: Agent) -> np.ndarray | None:
    method = getattr(agent, "planned_tcp_path", None)
    if method is None:
        return None
    try:
        plan = method()
    except Exception:  # noqa: BLE001 - a video overlay is not worth failing a subtask for
        return None
    return None if plan is None or len(plan) == 0 else plan


@dataclass
class ChainRun:
    outcomes: list[SubtaskOutcome]
    traces: list[SubtaskTrace] | None
    final_state: tuple[np.ndarray, np.ndarray] | None  # (robot_obs, scene_obs) at the end
    job: Job  # the job as run: after a failed setup, with the start and setup drawn instead


def run_chain(
    env: Env, agent: Agent, job: Job, ep_len: int, oracle: TaskOracle | None = None, record: bool = False,
    instructions: Mapping[str, str] | None = None,
    on_outcome: Callable[[Job, list[SubtaskOutcome]], None] | None = None,
) -> ChainRun:
    """A chain from its start condition; raises EnvFailure when the env fails (the runner retries), and
    AgentUnavailable when the agent's server went away (the runner waits for it and runs the chain again).
    instructions: task -> what the agent is told instead of CALVIN's instruction (the language axis rewords
    only the tasks not in it). on_outcome: told the job as run (a redrawn setup's) and the outcomes so far after
    each subtask (a worker tells its parent, which keeps them if the process dies: harness/eval/runner.py)."""
    oracle = oracle or TaskOracle()
    seed_everything(job.seed)
    traces: list[SubtaskTrace] | None = [] if record else None
    perturb: Perturbations = getattr(env, "perturbations", None) or Perturbations()
    language = axis_rng(job.seed, "language")
    delay = ObservationDelay(int(AXES["latency"].value(perturb.latency)))
    obs = _start(env, job)
    if job.setup:
        job, obs = _set_up(env, job, oracle, obs)
        if on_outcome is not None:  # the start and setup it runs from now (a redrawn one's)
            on_outcome(job, [])
    outcomes: list[SubtaskOutcome] = []
    try:
        if hasattr(agent, "new_chain"):
            agent.new_chain(job.seed)
    except AgentUnavailable:
        raise
    except Exception as e:  # noqa: BLE001
        outcomes.append(SubtaskOutcome(job.tasks[0], False, 0, "agent_error", _error_text(e)))
        return ChainRun(outcomes, traces, (obs["robot_obs"], obs["scene_obs"]), job)
    for task in job.tasks:
        instruction = (instructions or {}).get(task) or perturbed_instruction(task, perturb.language, language)
        trace = SubtaskTrace(task, instruction) if record else None
        try:
            outcome, obs = run_subtask(env, agent, oracle, task, obs, ep_len, trace, outcomes, instruction, delay)
        except EnvFailure as e:  # recorded, if the retry fails too, with the start it had (a redrawn setup's)
            e.job = e.job or job
            raise
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(job, list(outcomes))
        if traces is not None:
            traces.append(trace)
        if not outcome.success:
            break
    return ChainRun(outcomes, traces, (obs["robot_obs"], obs["scene_obs"]), job)


def _start(env: Env, job: Job) -> dict[str, Any]:
    """Reset the env to the job's start condition (a perturbed env draws the job's perturbations first, so
    a redrawn start is perturbed as the first was); its first observation."""
    try:
        if hasattr(env, "new_chain"):
            env.new_chain(job.seed)
        robot_obs, scene_obs = initial_state(job.condition, env.description.scene)
        return env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
    except Exception as e:  # noqa: BLE001
        raise EnvFailure([], job.tasks[0], 0, e, job) from e


def _set_up(env: Env, job: Job, oracle: TaskOracle, obs: dict[str, Any]) -> tuple[Job, dict[str, Any]]:
    """The scripted expert does the job's setup from its start (module doc); a failed setup, or one after which
    the task is not valid, draws another start and setup. Returns the job as run and the observation its agent
    starts from."""
    expert = ScriptedExpert()
    expert.bind_env(env.description)
    given, why = job, ""
    for draw in range(1, SETUP_DRAWS + 1):
        expert.new_chain(job.seed)
        try:
            # the expert plans from the state vectors: no frame is rendered for it (both backends have
            # without_cameras; an env without it renders as always)
            with env.without_cameras() if hasattr(env, "without_cameras") else nullcontext():
                why, obs = _expert_setup(env, expert, oracle, job, obs)
        except EnvFailure as e:  # the record names the measured task
            raise EnvFailure([], job.tasks[0], 0, RuntimeError(f"during the setup: {e}"), job) from e
        except Exception as e:  # noqa: BLE001 - reading the env's state (get_info) or its cameras failed: as in _start
            raise EnvFailure([], job.tasks[0], 0, RuntimeError(f"during the setup: {type(e).__name__}: {e}"), job) from e
        if not why:
            try:
                return job, env.get_obs()  # the agent's first observation, with its cameras
            except Exception as e:  # noqa: BLE001
                raise EnvFailure([], job.tasks[0], 0, e, job) from e
        if draw < SETUP_DRAWS:  # a redrawn start is set up with the cameras on (a perturbed view is moved then)
            job = redrawn(given, draw)
            obs = _start(env, job)
    error = RuntimeError(f"the scripted expert failed the setup of {SETUP_DRAWS} starts in a row, the last "
                         f"{' -> '.join(job.setup)} from {job.condition}: {why}")
    raise SetupFailed([], job.tasks[0], 0, error, job)


def _expert_setup(env: Env, expert: ScriptedExpert, oracle: TaskOracle, job: Job,
                  obs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The expert does the setup's tasks: what went wrong ("" when the task is valid after it), the last obs."""
    for task in job.setup:
        outcome, obs = run_subtask(env, expert, oracle, task, obs, SETUP_EP_LEN)
        if not outcome.success:
            return f"{task}: {outcome.reason} {outcome.message}".strip(), obs
    state = symbolic_state(env.get_info(), env.description.layout())
    if job.tasks[0] not in valid_tasks(state):
        return f"{job.tasks[0]} is not valid after the setup (the scene reads {state})", obs
    return "", obs
