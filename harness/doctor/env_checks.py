"""The agent and the data against the env: cameras, the action it produces, the robot_obs convention,
an open-loop replay of recorded actions, and the evaluation's step budget."""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import Agent
from harness.data.sync import RecordedStates, Stretch, spread
from harness.doctor.report import Check, judged
from harness.envs.actions import RelativeAction, parse_action
from harness.eval.rollout import env_action
from harness.spatial import euler_to_quat, quat_to_rotvec, wrap_angle

CALVIN_EP_LEN = 360
LONG_SEGMENTS_FAIL = 0.05  # share of annotated segments longer than ep_len
FK_POS_TOLERANCE = 0.002  # m between recorded robot_obs[0:3] and the env's TCP for the same joints
FK_ORN_TOLERANCE = 0.01  # rad
FK_FRAMES = 20
# open-loop replay: mean error over the replayed steps (pass below the first, fail from the second)
REPLAY_POS = (0.005, 0.015)  # m
REPLAY_ORN = (0.05, 0.15)  # rad
REPLAY_WIDTH = (0.005, 0.02)  # m
POSE_AS_RELATIVE = 0.05  # m: a relative action whose x, y, z lie this close to the TCP's position is its pose
ABSOLUTE_REACH = 0.1  # m: an absolute target farther than this from the TCP is no policy's next-step target


def camera_check(cameras: tuple[str, ...], expected: dict[str, tuple[int, ...]], expected_from: str,
                 obs: dict[str, Any], env_name: str) -> Check:
    """The images the model reads against what the env renders for it."""
    rendered = {k: tuple(np.shape(v)) for k, v in obs.get("rgb_obs", {}).items()}
    wanted = [f"rgb_{c}" for c in cameras]
    missing = [k for k in wanted if k not in rendered]
    resized = [f"{k}: trained on {expected[k]}, rendered {rendered[k]}" for k in wanted
               if k in rendered and k in expected and rendered[k] != expected[k]]
    reads = ', '.join(f'{k} {expected[k]}' if k in expected else f'{k} (not in its data)' for k in wanted)
    message = (f"the model reads {reads} ({expected_from}); "
               f"{env_name} renders {', '.join(f'{k} {s}' for k, s in rendered.items()) or 'no camera'}")
    fail = ""
    if missing:
        fail = (f"the env does not render {', '.join(missing)}: render the model's cameras (the env's camera "
                "settings), or use a checkpoint trained without them")
    elif resized:
        fail = (f"image sizes differ ({'; '.join(resized)}): render at the training data's size "
                "(env option camera_sizes), or the model sees other detail than it learnt from")
    return judged("cameras", message, fail)


def action_form_check(agent: Agent, obs: dict[str, Any], instruction: str, env_name: str) -> Check:
    """The agent's first action on an env observation, passed to the env as the evaluation passes it for the
    action type the agent declares (harness/eval/rollout.py: a 7-vector is relative, x0.02 m, x0.05 rad per
    unit, gripper +1 open / -1 close, unless the agent declares absolute targets), and against the TCP's pose:
    a pose declared relative, or relative steps declared absolute, land far from where the arm is."""
    declared = agent.spec.action_type
    try:
        agent.reset()
        action = agent.step(obs, instruction)
    except Exception as e:  # noqa: BLE001 - whatever the agent raises, the run would stop there
        return Check("action form", "fail", f"the agent cannot act on {env_name}'s observation: {type(e).__name__}: {e}",
                     "give the agent the observation it needs (cameras, robot_obs), see the lines above")
    try:
        parsed = parse_action(env_action(action, declared)[0])
    except ValueError as e:
        return Check("action form", "fail", f"the agent declares {declared} actions; the env refuses its action: {e}",
                     "return a 7-vector in [-1, 1] with the gripper exactly +1 or -1 (relative), or an absolute "
                     "target (pos, euler, gripper) from an agent that declares absolute actions")
    tcp = np.asarray(obs["robot_obs"], np.float64)[:3]
    message = f"the agent declares {declared} actions; its first action ({instruction!r})"
    fail = warn = ""
    if isinstance(parsed, RelativeAction):
        peak = float(np.abs(parsed.values[:6]).max())
        message += f": arm within +-{peak:.2f} (x0.02 m, x0.05 rad per unit), gripper {parsed.gripper:+d} (+1 opens)"
        if peak > 1 and np.abs(parsed.values[:3] - tcp).max() < POSE_AS_RELATIVE:
            fail = ("its x, y, z are the TCP's position: an absolute target declared relative (the env would move the "
                    "arm by it, 0.02 m per unit); declare action_type absolute")
        elif peak > 1:
            warn = "the env does not clip relative actions beyond [-1, 1]: the arm will move further than CALVIN's range"
    else:
        reach = float(np.linalg.norm(parsed.pos - tcp))
        message += f": target {np.round(parsed.pos, 3).tolist()}, {reach * 1000:.0f} mm from the TCP, gripper {parsed.gripper:+d}"
        if reach > ABSOLUTE_REACH:
            fail = (f"a target {reach:.2f} m from the TCP is no next-step target: relative actions declared absolute? "
                    "declare action_type relative, or return the pose to reach")
    return judged("action form", message, fail, warn)


def robot_obs_check(states: RecordedStates, stretches: list[Stretch]) -> Check:
    """Recorded robot_obs[0:6] against the env's TCP for the recorded joints robot_obs[7:14]: the
    position, and the orientation read as Euler xyz (the env's) or as axis-angle."""
    frames = spread([(st, st.first + r) for st in stretches for r in range(len(st.robot_obs))], FK_FRAMES)
    pos_err, euler_err, rotvec_err = [], [], []
    for st, t in frames:
        recorded = st.robot_obs[st.row(t)]
        env = states.env(st.scene)
        state = env.reset(recorded, st.scene_obs[st.row(t)])["robot_obs"]
        pos_err.append(np.linalg.norm(state[:3] - recorded[:3]))
        euler_err.append(np.abs(wrap_angle(state[3:6] - recorded[3:6])).max())
        rotvec_err.append(np.abs(quat_to_rotvec(euler_to_quat(state[3:6])) - recorded[3:6]).max())
    pos, euler, rotvec = (float(np.max(v)) for v in (pos_err, euler_err, rotvec_err))
    message = (f"{len(frames)} recorded states restored in env={states.backend}: the env's TCP is within {pos * 1000:.1f} mm "
               f"and {euler:.4f} rad (Euler xyz) of robot_obs[0:6] (read as axis-angle: {rotvec:.3f} rad)")
    fail = ""
    if euler > FK_ORN_TOLERANCE and rotvec <= FK_ORN_TOLERANCE:
        fail = ("robot_obs[3:6] holds axis-angle, the env reports Euler xyz angles: convert the dataset (the model's "
                "proprioception and the relative rotations differ from the env's)")
    elif pos > FK_POS_TOLERANCE or euler > FK_ORN_TOLERANCE:
        fail = ("robot_obs[0:6] is not the env's TCP pose for the recorded joints: another robot (CALVIN's "
                "panda_longer_finger), TCP offset, frame or angle convention")
    return judged("robot_obs", message, fail)


def replay_check(states: RecordedStates, stretches: list[Stretch], steps: int) -> Check:
    """Recorded rel_actions played open loop from the state of each stretch's first frame; the reached
    robot_obs against the recorded one."""
    results = []
    for st in stretches:
        n = min(steps, len(st.robot_obs) - 1)
        if n < 1:
            continue
        env = states.env(st.scene)
        env.reset(st.robot_obs[0], st.scene_obs[0])
        reached = np.stack([env.step(st.rel_actions[t])[0]["robot_obs"] for t in range(n)])
        recorded = st.robot_obs[1 : n + 1]
        results.append((st, n,
                        float(np.linalg.norm(reached[:, :3] - recorded[:, :3], axis=1).mean()),
                        float(np.abs(wrap_angle(reached[:, 3:6] - recorded[:, 3:6])).max(axis=1).mean()),
                        float(np.abs(reached[:, 6] - recorded[:, 6]).mean())))
    if not results:
        return Check("replay", "skip", "no episode with two frames or more")
    # each error judged at its worst episode (one episode's TCP error chose the episode whose orientation and
    # width were judged, so another episode's wrong orientation passed)
    worst = [max(results, key=lambda r: r[k]) for k in (2, 3, 4)]
    pos, orn, width = worst[0][2], worst[1][3], worst[2][4]
    where = ", ".join(f"{name} episode {r[0].episode}" for name, r in zip(("TCP", "orientation", "width"), worst))
    message = (f"{len(results)} episodes, up to {steps} recorded actions each, played from their first frame in "
               f"env={states.backend}: mean error TCP {pos * 1000:.1f} mm, orientation {orn:.3f} rad, gripper width "
               f"{width * 1000:.1f} mm, each in its worst episode ({where})")
    limits = ((pos, REPLAY_POS, "TCP"), (orn, REPLAY_ORN, "orientation"), (width, REPLAY_WIDTH, "gripper width"))
    failing = [name for v, (_, hi), name in limits if v >= hi]
    drifting = [name for v, (lo, hi), name in limits if lo <= v < hi]
    fail = warn = ""
    if failing:
        fail = (f"the env does not reproduce the recording ({', '.join(failing)}): the env, the action convention "
                "(relative, world frame, x0.02 m / x0.05 rad, +1 opens) or the data's alignment disagree; "
                "see the sync and robot_obs lines")
    elif drifting:
        warn = f"the replay drifts ({', '.join(drifting)}): another simulator build or scene geometry than the recording's"
    return judged("replay", message, fail, warn)


def ep_len_check(ep_len: int, segment_lengths: np.ndarray | None) -> Check:
    """The evaluation's steps per subtask against CALVIN's 360 and the demonstrations' lengths."""
    message = f"ep_len {ep_len} steps per subtask (CALVIN: {CALVIN_EP_LEN})"
    fail = warn = ""
    if ep_len != CALVIN_EP_LEN:
        warn = f"results with ep_len {ep_len} are not comparable with published CALVIN numbers (360)"
    if segment_lengths is not None and len(segment_lengths):
        longer = float((segment_lengths > ep_len).mean())
        message += (f"; annotated segments: median {int(np.median(segment_lengths))}, longest {int(segment_lengths.max())} "
                    f"frames, {longer:.0%} longer than ep_len")
        if longer > LONG_SEGMENTS_FAIL:
            fail = f"{longer:.0%} of the demonstrations need more than {ep_len} steps: the policy will time out where they succeed"
    return judged("ep_len", message, fail, warn)
