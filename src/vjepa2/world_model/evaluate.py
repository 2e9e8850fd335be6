"""How well a world model imagines: rollout errors ``k`` steps ahead against the true latents,
next to a copy-the-present baseline and the same model under shuffled actions (``vjepa2 eval-ac``)."""

from __future__ import annotations

from pathlib import Path

import torch

from vjepa2.data.trajectories.poses import apply_action, set_to_target
from vjepa2.models.ac_predictor import ACPredictor, normalize_latents
from vjepa2.world_model.feature_cache import feature_metadata, read_features


#: How ``eval-ac`` gets the states of imagined steps (see :func:`imagined_states`).
STATE_MODES = ("auto", "integrate", "target", "recorded", "hold")


def imagined_states(mode: str, state_dim: int, action_dim: int):
    """``(state_update or None, what it is in words)`` for :func:`rollout_errors`: ``integrate`` the
    states from the actions (only where actions are state deltas of the same width: toy-push, DROID),
    ``target`` (actions are absolute positions of the first state entries, e.g. PushT: they replace
    them), the ``recorded`` states, or ``hold`` the first; ``auto``: integrate where the widths match,
    else the recorded states (e.g. a Gymnasium env whose actions are positions and states observations)."""
    if mode == "auto":
        mode = "integrate" if state_dim == action_dim else "recorded"
    if mode == "integrate":
        if state_dim != action_dim:
            raise ValueError(f"--states integrate needs actions that are deltas of the state; this model has "
                             f"{action_dim}-D actions and {state_dim}-D states (use --states recorded or hold)")
        return apply_action, "states integrated from the actions"
    if mode == "target":
        if action_dim > state_dim:
            raise ValueError(f"--states target sets the first {action_dim} state entries to the action, but the "
                             f"states have only {state_dim}")
        return set_to_target, "the first state with its first entries set to each action (absolute targets)"
    if mode == "hold":
        return (lambda state, action: state), "the first state, held"
    if mode == "recorded":
        return None, "the recorded states"
    raise ValueError(f"unknown state mode {mode!r}; choose one of {', '.join(STATE_MODES)}")


@torch.no_grad()
def rollout_errors(predictor: ACPredictor, files: list[Path], horizons=(1, 2, 4, 8), stride: int = 1,
                   batch_size: int = 64, state_update=None, progress: bool = True) -> dict[str, dict[int, float]]:
    """Mean L1 between imagined and true (layer-normed) latents ``k`` steps ahead over every window
    of the cached trajectories ``files``, for:

    - ``model``: the rollout from one true frame under the recorded actions;
    - ``shuffled``: the same under the actions of the window half a batch away (as a rule another
      trajectory; a model that ignores its actions scores the same as ``model``; one that uses
      them, worse);
    - ``copy``: the current latent as the prediction for every future step.

    States after the first come from ``state_update(state, action)`` (as when planning; e.g.
    :func:`~vjepa2.data.trajectories.trajectory.apply_action`), or from the recordings when it is None (then
    the shuffled rows keep the true states). Returns ``{"model": {k: err}, "shuffled": ..., "copy": ...}``.
    """
    from vjepa2.progress import progress_bar

    horizons = sorted(horizons)
    longest = horizons[-1]
    sums = {name: {k: 0.0 for k in horizons} for name in ("model", "shuffled", "copy")}
    count = 0
    starts = [(f, s) for f in files for s in range(0, feature_metadata(f)["length"] - longest, stride)]
    if not starts:
        raise ValueError(f"no trajectory is longer than {longest} steps")
    predictor = predictor.eval()
    device = next(predictor.parameters()).device
    for i in progress_bar(range(0, len(starts), batch_size), desc="rollout errors", unit="batch",
                          disable=not progress):
        windows = [read_features(f, s, s + longest + 1) for f, s in starts[i:i + batch_size]]
        h = normalize_latents(torch.stack([w["features"] for w in windows]).float().to(device))
        actions = torch.stack([w["actions"] for w in windows]).to(device)[:, :longest]
        states = torch.stack([w["states"] for w in windows]).to(device)[:, :longest]
        if state_update is not None:
            states = states[:, :1]
        # Windows of a batch are consecutive starts, mostly of the same trajectory: rolling by one would
        # hand each window its own actions shifted by one step (equal most of the time under a sticky
        # policy). Half a batch away lies, as a rule, another trajectory.
        shuffled = actions.roll(len(windows) // 2, dims=0) if len(windows) > 1 else actions.flip(1)
        imagined = {"model": predictor.rollout(h[:, :1], actions, states, state_update=state_update),
                    "shuffled": predictor.rollout(h[:, :1], shuffled, states, state_update=state_update),
                    "copy": h[:, :1].expand(-1, longest, -1, -1)}
        for name, pred in imagined.items():
            for k in horizons:
                sums[name][k] += float((pred[:, k - 1] - h[:, k]).abs().mean(dim=(1, 2)).sum())
        count += len(windows)
    return {name: {k: v / count for k, v in d.items()} for name, d in sums.items()}


def format_errors(errors: dict[str, dict[int, float]]) -> str:
    """Markdown table of :func:`rollout_errors`."""
    lines = ["| steps ahead | AC predictor L1 | same, shuffled actions | copy-current L1 | predictor / copy |",
             "|---:|---:|---:|---:|---:|"]
    for k in errors["model"]:
        m, sh, c = errors["model"][k], errors["shuffled"][k], errors["copy"][k]
        lines.append(f"| {k} | {m:.4f} | {sh:.4f} | {c:.4f} | {m / c:.2f} |")
    return "\n".join(lines)
