"""The Cross-Entropy Method planner: convex minima, constraints on every sample, determinism,
and the batched KV-cached world-model energy against a full-recomputation reference."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vjepa2.config import ConfigError
from vjepa2.data.trajectories.poses import apply_action
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config, normalize_latents
from vjepa2.world_model.planner import (BoxConstraint, L1BallConstraint, LatentPlanner, cem, cem_config,
                                        fit_to_action_bounds, make_constraint)


def l1_projection_float64(x: np.ndarray, radius: float) -> np.ndarray:
    """Reference: nearest point of the L1 ball by bisection on the shrinkage theta, in float64."""
    x = np.asarray(x, dtype=np.float64)
    if np.abs(x).sum() <= radius:
        return x
    lo, hi = 0.0, np.abs(x).max()
    for _ in range(200):
        theta = 0.5 * (lo + hi)
        if np.clip(np.abs(x) - theta, 0, None).sum() > radius:
            lo = theta
        else:
            hi = theta
    return np.sign(x) * np.clip(np.abs(x) - hi, 0, None)


# ------------------------------------------------------------------------------------------------
# CEM on known energies
# ------------------------------------------------------------------------------------------------


def test_cem_finds_the_minimum_of_a_convex_quadratic():
    target = torch.tensor([[0.03, -0.02, 0.01], [-0.04, 0.0, 0.05]])  # (H=2, P=3), inside the box
    weights = torch.tensor([1.0, 4.0, 0.5])

    def energy(actions):  # (S, H, P) -> (S,)
        return ((actions - target) ** 2 * weights).sum(dim=(1, 2))

    cfg = cem_config(samples=300, iterations=12, elites=20, horizon=2, constraint="box", radius=0.075)
    result = cem(energy, 3, cfg)
    torch.testing.assert_close(result.actions, target, atol=2e-3, rtol=0)
    assert result.energy == pytest.approx(float(energy(result.actions[None])), rel=1e-6)
    assert result.history[-1]["best"] <= result.history[0]["best"]  # it improved


def test_cem_on_the_l1_ball_finds_the_projection_of_an_outside_minimum():
    # For an isotropic quadratic the constrained minimiser is the Euclidean projection of the target.
    target = torch.tensor([[0.2, -0.05]])
    result = cem(lambda a: ((a - target) ** 2).sum(dim=(1, 2)), 2, cem_config(samples=400, iterations=15))
    expected = l1_projection_float64(target[0].numpy(), 0.075)
    np.testing.assert_allclose(result.actions[0].numpy(), expected, atol=2e-3)
    assert result.actions.abs().sum() <= 0.075 * (1 + 1e-6)


def test_select_best_returns_the_lowest_energy_sample_seen():
    target = torch.tensor([[0.01, 0.02]])
    cfg = cem_config(samples=50, iterations=3, elites=5, select="best", constraint="box")
    result = cem(lambda a: ((a - target) ** 2).sum(dim=(1, 2)), 2, cfg)
    assert result.energy == result.best_energy == min(h["best"] for h in result.history)
    torch.testing.assert_close(result.actions, result.best_actions)


def test_same_seed_same_plan_and_another_seed_another_search():
    target = torch.tensor([[0.01, -0.03]])
    seen = []

    def energy(actions):
        seen.append(actions.clone())
        return ((actions - target) ** 2).sum(dim=(1, 2)) + 0.01 * actions[:, 0, 0].sin()

    cfg = cem_config(samples=64, iterations=4, elites=8)
    first, second = cem(energy, 2, cfg, seed=3), cem(energy, 2, cfg, seed=3)
    assert torch.equal(first.actions, second.actions)
    runs = len(seen) // 2
    assert all(torch.equal(a, b) for a, b in zip(seen[:runs], seen[runs:]))
    cem(energy, 2, cfg, seed=4)
    assert not torch.equal(seen[-1], seen[runs - 1])


def test_deduplication_scores_each_distinct_candidate_once_and_changes_nothing():
    target = torch.tensor([[0.2, -0.3]])  # outside the box: the optimum is a corner
    calls = {True: [], False: []}

    def energy(dedup):
        def fn(actions):
            calls[dedup].append(len(actions))
            return ((actions - target) ** 2).sum(dim=(1, 2))
        return fn

    results = {d: cem(energy(d), 2, cem_config(samples=200, iterations=4, constraint="box", init_std=1.0,
                                                  deduplicate=d))
               for d in (True, False)}
    torch.testing.assert_close(results[True].actions, results[False].actions)
    torch.testing.assert_close(results[True].actions, torch.tensor([[0.075, -0.075]]), atol=1e-4, rtol=0)
    assert calls[False][:4] == [200] * 4
    # std 1 against a 0.075 box: ~88% of the 2-D draws are clamped to one of 4 corners
    assert calls[True][0] < 60 and [h["scored"] for h in results[True].history] == calls[True][:4]


def test_non_finite_energies_are_never_elites():
    def energy(actions):  # NaN wherever dx > 0; the minimum of the finite part is at dx = -0.075
        out = actions[:, 0, 0].clone()
        out[actions[:, 0, 0] > 0] = float("nan")
        return out

    result = cem(energy, 2, cem_config(samples=100, iterations=5, elites=5, constraint="box"))
    assert result.actions[0, 0] < -0.07 and math.isfinite(result.energy)
    with pytest.raises(ValueError, match="non-finite"):
        cem(lambda a: torch.full((a.shape[0],), float("nan")), 2, cem_config(samples=10, elites=2))
    with pytest.raises(ValueError, match=r"\(S,\)"):
        cem(lambda a: torch.zeros(3), 2, cem_config(samples=10, elites=2, deduplicate=False))


# ------------------------------------------------------------------------------------------------
# Constraints
# ------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(dims=st.integers(1, 5), horizon=st.integers(1, 3), box=st.booleans(), seed=st.integers(0, 10_000),
       radius=st.floats(1e-3, 2.0), init_mean=st.floats(-3, 3), init_std=st.floats(0, 5),
       offsets=st.lists(st.floats(-1, 1), min_size=5, max_size=5), widths=st.lists(st.floats(0, 1), min_size=5,
                                                                                     max_size=5))
def test_every_sample_satisfies_the_constraint(dims, horizon, box, seed, radius, init_mean, init_std, offsets,
                                               widths):
    if box:
        low = tuple(offsets[:dims])
        cfg = cem_config(samples=40, iterations=3, elites=4, horizon=horizon, constraint="box", low=low,
                         high=tuple(lo + w for lo, w in zip(low, widths)), init_mean=init_mean, init_std=init_std)
    else:
        cfg = cem_config(samples=40, iterations=3, elites=4, horizon=horizon, radius=radius, init_mean=init_mean,
                         init_std=init_std)
    constraint = make_constraint(cfg, dims)
    seen = []

    def energy(actions):
        seen.append(actions)
        return (actions - 0.3).abs().sum(dim=(1, 2))

    result = cem(energy, dims, cfg, seed=seed)
    tolerance = 1e-6 * (radius if not box else 1.0)
    for batch in seen + [result.actions[None], result.best_actions[None]]:
        assert batch.shape[1:] == (horizon, dims)
        assert float(constraint.violation(batch).max()) <= tolerance


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(-10, 10), min_size=1, max_size=7), radius=st.floats(1e-3, 5.0))
def test_l1_projection_matches_a_float64_reference(values, radius):
    x = torch.tensor(values, dtype=torch.float32)
    ours = L1BallConstraint(radius, len(values)).project(x[None])[0]
    reference = l1_projection_float64(x.double().numpy(), radius)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5 * max(1.0, radius), rtol=1e-5)
    again = L1BallConstraint(radius, len(values)).project(ours[None])[0]
    torch.testing.assert_close(again, ours)  # a projection is idempotent


def test_box_projection_clamps_each_entry():
    box = BoxConstraint(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5]))
    out = box.project(torch.tensor([[2.0, -3.0], [0.3, 0.2]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [0.3, 0.2]]))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="elites"):
        cem_config(samples=5, elites=10)
    with pytest.raises(ConfigError, match="low and high"):
        cem_config(constraint="box", low=(0.0,))
    with pytest.raises(ConfigError, match="constraint: box"):
        cem_config(low=(-1.0,), high=(1.0,), constraint="l1_ball")
    assert isinstance(make_constraint(cem_config(low=(-1.0,), high=(1.0,)), 1), BoxConstraint)  # auto: a box
    with pytest.raises(ConfigError, match="did you mean samples"):
        cem_config(sample=10)
    with pytest.raises(ConfigError, match="momentum_mean"):
        cem_config(momentum_mean=1.0)
    with pytest.raises(ConfigError, match="controls 2 action entries"):
        make_constraint(cem_config(constraint="box", low=(-1.0, -1.0, -1.0), high=(1.0, 1.0, 1.0)), 2)


# ------------------------------------------------------------------------------------------------
# Planning with the world model
# ------------------------------------------------------------------------------------------------


def tiny_predictor(seed=0, action_dim=7, state_dim=7):
    torch.manual_seed(seed)
    cfg = ac_predictor_config("tiny", enc_dim=32, dim=48, depth=2, heads=2, mlp_hidden=96, img_size=32,
                              action_dim=action_dim, state_dim=state_dim)
    return ACPredictor(cfg).eval()


def full_recompute_energies(predictor, frames, states, past_actions, goal, actions, mode):
    """Reference: every candidate's rollout by re-running the whole block-causal sequence for each
    new step (no cache, one sample at a time), states integrated with apply_action."""
    out = []
    for sample in actions:
        seq_frames = list(frames)
        seq_states = list(states)
        seq_actions = list(past_actions) if past_actions is not None else []
        distances = []
        for action in sample:
            seq_actions.append(action)
            pred = predictor(torch.stack(seq_frames)[None], torch.stack(seq_actions)[None],
                             torch.stack(seq_states)[None])[0, -1]
            pred = normalize_latents(pred)
            distances.append(float((pred - goal).abs().mean()))
            seq_frames.append(pred)
            seq_states.append(apply_action(seq_states[-1], action))
        out.append(distances[-1] if mode == "final" else sum(distances))
    return torch.tensor(out)


@pytest.mark.parametrize("context_steps,mode", [(1, "final"), (2, "sum")])
def test_cached_batched_energies_equal_full_recomputation(context_steps, mode):
    predictor = tiny_predictor()
    g = torch.Generator().manual_seed(1)
    frames = normalize_latents(torch.randn(context_steps, 4, 32, generator=g))
    states = torch.randn(context_steps, 7, generator=g) * 0.1
    past = torch.randn(context_steps - 1, 7, generator=g) * 0.05 if context_steps > 1 else None
    goal = normalize_latents(torch.randn(4, 32, generator=g))
    actions = torch.randn(5, 3, 7, generator=g) * 0.05  # (S=5, H=3, A=7)
    planner = LatentPlanner(predictor, cem_config(horizon=3, energy=mode))
    with torch.no_grad():
        ours = planner.energies(planner.context(frames, states, past), goal, actions)
        reference = full_recompute_energies(predictor, frames, states, past, goal, actions, mode)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_latent_plan_is_seeded_constrained_and_bf16_close_to_fp32():
    predictor = tiny_predictor()
    g = torch.Generator().manual_seed(2)
    frames, goal = normalize_latents(torch.randn(1, 4, 32, generator=g)), normalize_latents(torch.randn(4, 32, generator=g))
    states = torch.zeros(1, 7)
    cfg = dict(samples=64, iterations=3, elites=6, horizon=2, action_dims=(0, 1))
    planner = LatentPlanner(predictor, cem_config(**cfg))
    first, second = planner.plan(frames, states, goal, seed=5), planner.plan(frames, states, goal, seed=5)
    assert torch.equal(first.actions, second.actions)
    assert first.actions.shape == (2, 7) and torch.all(first.actions[:, 2:] == 0)  # uncontrolled entries held at 0
    assert float(first.actions.abs().sum(dim=1).max()) <= 0.075 * (1 + 1e-6)
    bf16 = LatentPlanner(predictor, cem_config(**cfg, dtype="bf16"))
    actions = torch.randn(16, 2, 2, generator=g) * 0.05
    context = planner.context(frames, states)
    e32 = planner.energies(context, goal, planner.to_model_actions(actions))
    e16 = bf16.energies(bf16.context(frames, states), goal, bf16.to_model_actions(actions))
    assert e16.dtype == torch.float32
    torch.testing.assert_close(e16, e32, rtol=3e-2, atol=3e-2)


def test_landscape_scores_first_actions_like_the_energy_function():
    predictor = tiny_predictor()
    g = torch.Generator().manual_seed(3)
    frames, goal = normalize_latents(torch.randn(1, 4, 32, generator=g)), normalize_latents(torch.randn(4, 32, generator=g))
    planner = LatentPlanner(predictor, cem_config(horizon=2, action_dims=(0, 1)))
    firsts, later = torch.randn(6, 2, generator=g) * 0.05, torch.randn(1, 2, generator=g) * 0.05
    grid = planner.landscape(frames, torch.zeros(1, 7), goal, firsts, later_actions=later)
    sequences = torch.cat((firsts[:, None], later[None].expand(6, -1, -1)), dim=1)
    direct = planner.energies(planner.context(frames, torch.zeros(1, 7)), goal, planner.to_model_actions(sequences))
    torch.testing.assert_close(grid, direct)


def test_planner_rejects_mismatched_inputs():
    predictor = tiny_predictor(action_dim=2, state_dim=3)
    with pytest.raises(ConfigError, match="same width"):
        LatentPlanner(predictor, cem_config(imagined_states="integrate"))
    with pytest.raises(ConfigError, match="index past"):
        LatentPlanner(predictor, cem_config(action_dims=(0, 5)))
    planner = LatentPlanner(predictor, cem_config(samples=8, elites=2, iterations=1))  # auto -> hold the state
    frames = normalize_latents(torch.randn(2, 4, 32))
    with pytest.raises(ValueError, match="past_actions"):
        planner.plan(frames, torch.zeros(2, 3), frames[0])
    with pytest.raises(ValueError, match="goal must be"):
        planner.plan(frames[:1], torch.zeros(1, 3), frames[:1])
    plan = planner.plan(frames, torch.zeros(2, 3), frames[0], past_actions=torch.zeros(1, 2))
    assert plan.actions.shape == (1, 2)


def test_cem_searches_the_whole_of_a_wide_offset_action_box():
    """Actions that are absolute positions in [100, 600] (a Gymnasium Box): the planner starts at the
    box's centre with its width as std. Started at the paper's mean 0 / std 1 every candidate
    would sit in the corner (100, 100)."""
    target = torch.tensor([520.0, 140.0])
    cfg = fit_to_action_bounds(cem_config(samples=64, iterations=8, elites=8), (100.0, 100.0), (600.0, 600.0))
    assert cfg.low == (100.0, 100.0) and make_constraint(cfg, 2).grid_bounds()[1].tolist() == [600.0, 600.0]
    seen = []

    def energy(actions):
        seen.append(actions)
        return (actions[:, 0] - target).abs().sum(-1)

    result = cem(energy, 2, cfg)
    assert (result.actions[0] - target).abs().max() < 20
    first = seen[0][:, 0]  # the first iteration's candidates spread over the whole box
    assert (first.amin(0) < 200).all() and (first.amax(0) > 500).all() and ((first > 100) & (first < 600)).any()


def test_an_unbounded_action_space_keeps_the_paper_ball_and_says_so():
    said = []
    cfg = fit_to_action_bounds(cem_config(), (-math.inf, -1.0), (math.inf, 1.0), warn=said.append)
    assert cfg.low is None and isinstance(make_constraint(cfg, 2), L1BallConstraint)
    assert "unbounded" in said[0] and "planner.low" in said[0]
    with pytest.raises(ConfigError, match="finite"):
        cem_config(low=(0.0, -math.inf), high=(1.0, 1.0))
    explicit = fit_to_action_bounds(cem_config(constraint="l1_ball"), (100.0,), (600.0,))
    assert explicit.low is None  # a constraint the user chose is kept


def test_the_state_term_steers_the_plan_to_the_goal_state():
    """With a random world model (its latents carry no information) and a heavy state term, the plan
    is the one whose integrated final state lands on the goal's observed state."""
    predictor = tiny_predictor()
    g = torch.Generator().manual_seed(4)
    frames, goal = normalize_latents(torch.randn(1, 4, 32, generator=g)), normalize_latents(torch.randn(4, 32, generator=g))
    start, goal_state = torch.zeros(1, 7), torch.tensor([0.1, -0.05, 0, 0, 0, 0, 0])
    cfg = dict(samples=128, iterations=6, elites=8, horizon=2, action_dims=(0, 1), low=(-0.075, -0.075),
               high=(0.075, 0.075), state_dims=(0, 1), seed=0)
    plan = LatentPlanner(predictor, cem_config(**cfg, state_weight=100.0)).plan(frames, start, goal,
                                                                                goal_state=goal_state)
    reached = plan.actions.sum(dim=0)[:2]  # toy-push style deltas: the final state is their sum
    assert (reached - goal_state[:2]).abs().max() < 0.01
    latent_only = LatentPlanner(predictor, cem_config(**cfg)).plan(frames, start, goal, goal_state=goal_state)
    assert (latent_only.actions.sum(dim=0)[:2] - goal_state[:2]).abs().max() > 0.02  # the term is what did it
    with pytest.raises(ValueError, match="goal's state"):
        LatentPlanner(predictor, cem_config(**cfg, state_weight=1.0)).plan(frames, start, goal)


def test_absolute_position_actions_set_the_imagined_state():
    from vjepa2.data.trajectories.poses import set_to_target

    state, action = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]), torch.tensor([[7.0, 8.0]])
    assert set_to_target(state, action).tolist() == [[7.0, 8.0, 3.0, 4.0, 5.0]]
    predictor = tiny_predictor(action_dim=2, state_dim=5)
    with pytest.raises(ConfigError, match="held"):  # a state term on held states could never change
        LatentPlanner(predictor, cem_config(state_weight=1.0))
    planner = LatentPlanner(predictor, cem_config(state_weight=1.0, imagined_states="target", horizon=2,
                                                  state_dims=(0, 1)))
    context = planner.context(normalize_latents(torch.randn(1, 4, 32)), state)
    path = planner.state_path(context, torch.tensor([[[1.0, 1.0], [7.0, 8.0]]]))
    assert path.tolist() == [[[1.0, 1.0, 3.0, 4.0, 5.0], [7.0, 8.0, 3.0, 4.0, 5.0]]]


def test_step_radius_searches_offsets_from_the_agent_and_stays_in_the_box():
    """With ``step_radius`` every candidate target lies within the radius of where the previous step
    left the agent (the state's first entries, then the previous target), inside the env's box; the
    state term then walks the agent toward a far goal one radius at a time."""
    predictor = tiny_predictor(action_dim=2, state_dim=2)
    frames, goal = normalize_latents(torch.randn(1, 4, 32)), normalize_latents(torch.randn(4, 32))
    start, goal_state = torch.tensor([[100.0, 480.0]]), torch.tensor([400.0, 500.0])
    cfg = cem_config(samples=64, iterations=4, elites=8, horizon=3, low=(0.0, 0.0), high=(512.0, 512.0),
                     imagined_states="target", state_weight=1.0, step_radius=50.0, energy="sum")
    planner = LatentPlanner(predictor, cfg)
    seen = []
    energies = planner.energies
    planner.energies = lambda context, goal_, actions, goal_state_=None: (seen.append(actions.clone()),
                                                                          energies(context, goal_, actions, goal_state_))[1]
    plan = planner.plan(frames, start, goal, goal_state=goal_state)
    candidates = torch.cat(seen)  # (S, H, 2) absolute targets
    previous = torch.cat((start.expand(len(candidates), 1, 2), candidates[:, :-1]), dim=1)
    assert (candidates - previous).abs().max() <= 50.0 + 1e-4
    assert candidates.min() >= 0.0 and candidates.max() <= 512.0
    assert candidates[..., 1].max() == 512.0  # offsets past the box's edge are clipped to it
    torch.testing.assert_close(plan.planned[0, 0], torch.tensor(150.0), atol=1.0, rtol=0)  # a full step toward x
    assert plan.searched.abs().max() <= 50.0 and not torch.equal(plan.searched, plan.planned)
    with pytest.raises(ConfigError, match="imagined_states=target"):
        cem_config(step_radius=50.0)
