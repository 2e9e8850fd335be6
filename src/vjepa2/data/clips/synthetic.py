"""The embedded dataset: procedural videos of moving shapes on textured backgrounds (NumPy only).

A clip is rendered from an explicit, serialisable :class:`Scene`: a :class:`Background` and a list
of :class:`SceneObject` s (drawn in order, the last on top), each with a :class:`Motion`.
``render(scene, frames, size)`` draws it; ``sample_scene(rng)`` draws a random scene for
pretraining; the evaluation code builds labelled scenes with :func:`make_object` /
:func:`make_motion` (or by hand) and renders them the same way.

Time. A scene describes motion over a normalised clip time ``tau`` in ``[0, 1]``; frame ``i`` of
``T`` is drawn at ``tau = i / (T - 1)``. The same scene rendered with more frames is the same motion
sampled more densely. ``scene.reversed()`` flips the time direction (``tau -> 1 - tau`` per frame),
so ``render(scene.reversed(), T, S)`` equals ``render(scene, T, S)[::-1]`` exactly, bit for bit.

Geometry. Positions are fractions of the frame (``x`` right, ``y`` down, ``(0.5, 0.5)`` the centre);
sizes are radii as a fraction of the frame's short side; angles are radians, positive =
clockwise on screen. Each object follows, for ``tau`` in ``[0, 1]``::

    size(tau)   = size * exp(growth * tau)
    angle(tau)  = angle + spin * tau
    centre(tau) = position + velocity * tau                                  (perspective off)
    centre(tau) = 0.5 + (position + velocity * tau - 0.5) * exp(growth * tau) (perspective on)

``perspective`` gives approach / recede: the object grows (shrinks) *and* drifts away from
(towards) the frame centre faster and faster, as an object moving towards the camera does.

Motion kinds (:data:`MOTIONS`) are labels of what the parameters do in forward time;
:data:`REVERSED_MOTION` maps each to what a time-reversed clip shows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vjepa2.config import from_dict, to_dict

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "ring", "ellipse")
BACKGROUNDS = ("plain", "stripes", "checker", "noise", "gradient")
MOTIONS = ("static", "translate", "rotate_cw", "rotate_ccw", "grow", "shrink", "approach", "recede")
REVERSED_MOTION = {"static": "static", "translate": "translate", "rotate_cw": "rotate_ccw",
                   "rotate_ccw": "rotate_cw", "grow": "shrink", "shrink": "grow", "approach": "recede",
                   "recede": "approach"}
ROLES = ("main", "distractor", "occluder")

#: Named object colours (RGB). Any ``"#rrggbb"`` string is accepted too.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "magenta": (210, 50, 200), "cyan": (40, 200, 210), "orange": (245, 130, 30), "purple": (120, 50, 170),
    "white": (245, 245, 245), "black": (15, 15, 15),
}


def colour_rgb(colour: str) -> tuple[int, int, int]:
    """RGB of a palette name (:data:`COLOURS`) or a ``"#rrggbb"`` string."""
    if colour in COLOURS:
        return COLOURS[colour]
    if isinstance(colour, str) and len(colour) == 7 and colour[0] == "#":
        try:
            return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
        except ValueError:
            pass
    raise ValueError(f"colour {colour!r} is neither one of {sorted(COLOURS)} nor '#rrggbb'")


@dataclass(frozen=True)
class Motion:
    """How an object moves over the clip (see the module docstring for the equations).

    Attributes:
        kind: label, one of :data:`MOTIONS` (the renderer only reads the numbers below).
        velocity: ``(dx, dy)`` displacement of the centre over the whole clip, in frame fractions.
        spin: rotation over the clip in radians, positive = clockwise on screen.
        growth: ``log(size at the end / size at the start)``.
        perspective: the offset from the frame centre scales with the size (approach / recede).
    """

    kind: str = "static"
    velocity: tuple[float, float] = (0.0, 0.0)
    spin: float = 0.0
    growth: float = 0.0
    perspective: bool = False

    def validate(self) -> None:
        if self.kind not in MOTIONS:
            raise ValueError(f"motion kind {self.kind!r} is not one of {list(MOTIONS)}")
        if not all(math.isfinite(v) for v in (*self.velocity, self.spin, self.growth)):
            raise ValueError("motion parameters must be finite numbers")


@dataclass(frozen=True)
class SceneObject:
    """A shape in the scene.

    Attributes:
        shape: one of :data:`SHAPES`.
        colour: palette name or ``"#rrggbb"``.
        size: radius at ``tau = 0`` as a fraction of the frame's short side.
        position: centre ``(x, y)`` at ``tau = 0`` in frame fractions.
        angle: orientation at ``tau = 0`` in radians (clockwise); 0 = a point of the shape up.
        motion: the object's :class:`Motion`.
        role: ``"main"`` (the subject of a labelled clip), ``"distractor"`` or ``"occluder"``.
    """

    shape: str = "circle"
    colour: str = "red"
    size: float = 0.15
    position: tuple[float, float] = (0.5, 0.5)
    angle: float = 0.0
    motion: Motion = field(default_factory=Motion)
    role: str = "main"

    def validate(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape {self.shape!r} is not one of {list(SHAPES)}")
        colour_rgb(self.colour)
        if not self.size > 0:
            raise ValueError(f"size must be > 0 (radius as a fraction of the short side), got {self.size}")
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {list(ROLES)}")


@dataclass(frozen=True)
class Background:
    """A textured background; ``value(x, y, tau)`` in ``[0, 1]`` blends ``colours[0]`` -> ``colours[1]``.

    Attributes:
        kind: ``plain`` (``colours[0]``), ``stripes``, ``checker``, ``gradient`` (a smooth ramp),
            ``noise`` (smooth random texture made of ``seed``-drawn plane waves).
        colours: the two colours (palette names or ``"#rrggbb"``).
        frequency: pattern periods per frame short side.
        angle: pattern orientation in radians.
        drift: pattern shift over the clip, in periods, along its orientation (a slow pan).
        seed: texture seed (``noise`` only).
    """

    kind: str = "plain"
    colours: tuple[str, str] = ("#303030", "#a0a0a0")
    frequency: float = 4.0
    angle: float = 0.0
    drift: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        if self.kind not in BACKGROUNDS:
            raise ValueError(f"background kind {self.kind!r} is not one of {list(BACKGROUNDS)}")
        for colour in self.colours:
            colour_rgb(colour)
        if not self.frequency > 0:
            raise ValueError(f"background frequency must be > 0, got {self.frequency}")


@dataclass(frozen=True)
class Scene:
    """Everything needed to render a clip; plain data (``to_dict`` / ``from_dict``, YAML/JSON safe).

    Attributes:
        background: the :class:`Background`.
        objects: drawn in order, the last one on top.
        time_reversed: render the frames in reverse time order (see :meth:`reversed`).
    """

    background: Background = field(default_factory=Background)
    objects: tuple[SceneObject, ...] = ()
    time_reversed: bool = False

    def reversed(self) -> "Scene":
        """The same scene played backwards: ``render(s.reversed(), T, S) == render(s, T, S)[::-1]``."""
        return dataclasses.replace(self, time_reversed=not self.time_reversed)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        """Inverse of :meth:`to_dict`; raises ``ConfigError`` naming a bad key or value."""
        return from_dict(cls, data)

    def main_object(self) -> SceneObject | None:
        """The first object with role ``"main"`` (the subject of a labelled clip), if any."""
        return next((o for o in self.objects if o.role == "main"), None)


# ---------------------------------------------------------------------------------------------- rendering


def _clip_times(frames: int, time_reversed: bool) -> np.ndarray:
    """``tau`` of each output frame, ``(T,)``."""
    tau = np.arange(frames, dtype=np.float64) / max(frames - 1, 1)
    # Index from the far end rather than computing 1 - tau: the reversed clip must hold the very
    # same floating-point times, frame for frame.
    return tau[::-1].copy() if time_reversed else tau


def _background(bg: Background, tau: np.ndarray, xs: np.ndarray, ys: np.ndarray, short: float) -> np.ndarray:
    """float32 ``(T or 1, H, W, 3)`` in ``[0, 255]``."""
    a = np.asarray(colour_rgb(bg.colours[0]), dtype=np.float32)
    b = np.asarray(colour_rgb(bg.colours[1]), dtype=np.float32)
    if bg.kind == "plain":
        return np.broadcast_to(a, (1, 1, 1, 3))
    # Pattern coordinates in periods: `along` follows the orientation, `across` is perpendicular.
    cos, sin = math.cos(bg.angle), math.sin(bg.angle)
    shift = (bg.drift * tau if bg.drift else np.zeros(1)).astype(np.float32)[:, None, None]   # (T|1, 1, 1)
    along = ((xs * cos + ys * sin) * (bg.frequency / short)).astype(np.float32)[None] - shift   # (T|1, H, W)
    across = ((-xs * sin + ys * cos) * (bg.frequency / short)).astype(np.float32)[None]
    if bg.kind == "stripes":
        value = (np.floor(2 * along) % 2).astype(np.float32)
    elif bg.kind == "checker":
        value = ((np.floor(2 * along) + np.floor(2 * across)) % 2).astype(np.float32)
    elif bg.kind == "gradient":
        value = 1 - np.abs(2 * (along % 1.0) - 1)  # triangle wave: a smooth ramp without jumps
    else:  # noise: a few random plane waves, each drifting with the pattern
        rng = np.random.default_rng(bg.seed)
        value = np.zeros(np.broadcast_shapes(along.shape, across.shape), dtype=np.float32)
        for _ in range(6):
            direction = rng.uniform(0, 2 * math.pi)
            freq = rng.uniform(0.5, 1.5)
            phase = rng.uniform(0, 2 * math.pi)
            wave = freq * (along * math.cos(direction) + across * math.sin(direction))
            value = value + np.cos(2 * math.pi * wave + phase).astype(np.float32)
        value = np.clip(0.5 + value / 6.0 * 1.2, 0.0, 1.0)
    return a + (b - a) * value[..., None]


# Every shape lies within this many radii of its centre (the square's corner: 0.8 * sqrt(2)).
_SHAPE_REACH = 1.15


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean coverage of ``shape`` at local coordinates ``u`` (right), ``v`` (down), radius 1."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ellipse":
        return u * u + (v / 0.55) ** 2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    r2 = u * u + v * v
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55 ** 2)
    r = np.sqrt(r2)
    phi = np.arctan2(u, -v)  # angle from "up", clockwise on screen
    if shape in ("triangle", "hexagon"):
        n = 3 if shape == "triangle" else 6
        sector = 2 * math.pi / n
        # Distance to the edge whose normal is nearest to phi; a vertex points up.
        off_normal = np.mod(phi, sector) - sector / 2
        return r * np.cos(off_normal) <= math.cos(math.pi / n)
    if shape == "star":
        n, inner = 5, 0.45
        half = math.pi / n
        folded = np.abs(np.mod(phi + half, 2 * half) - half)   # 0 at a point, `half` at a notch
        px, py = r * np.cos(folded), r * np.sin(folded)
        bx, by = inner * math.cos(half), inner * math.sin(half)
        # Same side of the edge point (1, 0) -> notch (bx, by) as the centre.
        cross = (bx - 1.0) * py - by * (px - 1.0)
        return cross * by >= 0
    raise ValueError(f"shape {shape!r} is not one of {list(SHAPES)}")


def _object_track(obj: SceneObject, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre x, y (frame fractions), radius (short-side fractions), angle: each ``(T,)``."""
    m = obj.motion
    scale = np.exp(m.growth * tau)
    x = obj.position[0] + m.velocity[0] * tau
    y = obj.position[1] + m.velocity[1] * tau
    if m.perspective:
        x = 0.5 + (x - 0.5) * scale
        y = 0.5 + (y - 0.5) * scale
    return x, y, obj.size * scale, obj.angle + m.spin * tau


def object_track(obj: SceneObject, frames: int, time_reversed: bool = False) -> dict[str, np.ndarray]:
    """Where ``obj`` is in each of ``frames`` frames: ``x``, ``y`` (fractions), ``size``, ``angle``, each ``(T,)``."""
    x, y, size, angle = _object_track(obj, _clip_times(frames, time_reversed))
    return {"x": x, "y": y, "size": size, "angle": angle}


def _frame_geometry(frames: int, size: int | tuple[int, int]) -> tuple[int, int, float, np.ndarray, np.ndarray]:
    """``(height, width, short side, pixel-centre xs (1, W), ys (H, 1))`` of a clip, checked."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    height, width = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    # Pixel centres in pixels; shapes are measured in short-side units so they stay round.
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    return height, width, float(min(height, width)), xs, ys


def _coverage(scene: Scene, tau: np.ndarray, xs: np.ndarray, ys: np.ndarray, short: float):
    """For each object in drawing order, ``(obj, (y0, y1, x0, x1), inside)``: the box it sweeps over
    the clip and its boolean coverage of that box in every frame, ``(T, y1 - y0, x1 - x0)``."""
    height, width = ys.shape[0], xs.shape[1]
    for obj in scene.objects:
        cx, cy, radius, angle = _object_track(obj, tau)
        cx_px, cy_px, radius_px = cx * width, cy * height, np.maximum(radius * short, 1e-3)
        # Only the box the object sweeps over the clip is tested (every shape fits in 1.15 radii).
        reach = radius_px * _SHAPE_REACH + 1
        x0, x1 = max(int(np.floor((cx_px - reach).min())), 0), min(int(np.ceil((cx_px + reach).max())), width)
        y0, y1 = max(int(np.floor((cy_px - reach).min())), 0), min(int(np.ceil((cy_px + reach).max())), height)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = xs[None, :, x0:x1] - cx_px.astype(np.float32)[:, None, None]   # (T, 1, w)
        dy = ys[None, y0:y1] - cy_px.astype(np.float32)[:, None, None]      # (T, h, 1)
        cos = np.cos(angle).astype(np.float32)[:, None, None]
        sin = np.sin(angle).astype(np.float32)[:, None, None]
        inv_radius = (1.0 / radius_px).astype(np.float32)[:, None, None]
        # World -> object frame: undo the object's clockwise rotation.
        u = (dx * cos + dy * sin) * inv_radius
        v = (dy * cos - dx * sin) * inv_radius
        yield obj, (y0, y1, x0, x1), _inside(obj.shape, u, v)


def render(scene: Scene, frames: int, size: int | tuple[int, int]) -> np.ndarray:
    """Draw ``scene`` as ``frames`` frames of ``size`` (int: square; or ``(H, W)``).

    Returns:
        uint8 ``(T, H, W, 3)`` RGB.
    """
    height, width, short, xs, ys = _frame_geometry(frames, size)
    tau = _clip_times(frames, scene.time_reversed)
    background = _background(scene.background, tau, xs, ys, short)
    canvas = np.array(np.broadcast_to(np.clip(background + 0.5, 0, 255).astype(np.uint8),
                                      (frames, height, width, 3)))
    for obj, (y0, y1, x0, x1), inside in _coverage(scene, tau, xs, ys, short):
        canvas[:, y0:y1, x0:x1][inside] = colour_rgb(obj.colour)
    return canvas


def render_labels(scene: Scene, frames: int, size: int | tuple[int, int]) -> np.ndarray:
    """Which shape covers each pixel of :func:`render`'s clip: uint8 ``(T, H, W)``, 0 = background,
    ``1 + SHAPES.index(shape)`` where an object of that shape is drawn on top (later objects over
    earlier ones, as drawn)."""
    height, width, short, xs, ys = _frame_geometry(frames, size)
    tau = _clip_times(frames, scene.time_reversed)
    labels = np.zeros((frames, height, width), dtype=np.uint8)
    for obj, (y0, y1, x0, x1), inside in _coverage(scene, tau, xs, ys, short):
        labels[:, y0:y1, x0:x1][inside] = 1 + SHAPES.index(obj.shape)
    return labels


# ---------------------------------------------------------------------------------------------- sampling


def make_motion(kind: str, rng: np.random.Generator, *, direction: float | None = None,
                speed: float | None = None) -> Motion:
    """Random parameters for a motion of ``kind`` (one of :data:`MOTIONS`).

    ``direction`` (radians, 0 = right, pi/2 = down) and ``speed`` (frame fractions per clip) fix a
    translation; rotations turn by 0.5-1.5 pi, grow/shrink change the size by a factor 1.6-2.6.
    """
    if kind == "static":
        return Motion("static")
    if kind == "translate":
        direction = rng.uniform(0, 2 * math.pi) if direction is None else direction
        speed = rng.uniform(0.25, 0.5) if speed is None else speed
        return Motion("translate", velocity=(speed * math.cos(direction), speed * math.sin(direction)))
    if kind in ("rotate_cw", "rotate_ccw"):
        turn = rng.uniform(0.5, 1.5) * math.pi
        return Motion(kind, spin=turn if kind == "rotate_cw" else -turn)
    if kind in ("grow", "shrink", "approach", "recede"):
        growth = math.log(rng.uniform(1.6, 2.6))
        sign = 1.0 if kind in ("grow", "approach") else -1.0
        return Motion(kind, growth=sign * growth, perspective=kind in ("approach", "recede"))
    raise ValueError(f"motion kind {kind!r} is not one of {list(MOTIONS)}")


def _start_position(motion: Motion, size: float, rng: np.random.Generator) -> tuple[float, float]:
    """A start centre that keeps the whole trajectory (mostly) inside the frame."""
    end_scale = math.exp(max(motion.growth, 0.0))
    margin = min(0.45, size * end_scale * 0.8 + 0.05)
    if motion.perspective:
        # The offset from the centre is multiplied by up to `end_scale`; start close enough.
        reach = max(0.02, (0.5 - margin) / end_scale)
        r, theta = rng.uniform(0.3, 1.0) * reach, rng.uniform(0, 2 * math.pi)
        return 0.5 + r * math.cos(theta), 0.5 + r * math.sin(theta)
    dx, dy = motion.velocity
    lo_x, hi_x = margin - min(dx, 0.0), 1 - margin - max(dx, 0.0)
    lo_y, hi_y = margin - min(dy, 0.0), 1 - margin - max(dy, 0.0)
    x = rng.uniform(lo_x, hi_x) if hi_x > lo_x else 0.5 - dx / 2
    y = rng.uniform(lo_y, hi_y) if hi_y > lo_y else 0.5 - dy / 2
    return float(x), float(y)


def make_object(rng: np.random.Generator, motion: str | Motion = "static", *, shape: str | None = None,
                colour: str | None = None, size: float | None = None, role: str = "main",
                avoid_colours: tuple[str, ...] = (), size_scale: float = 1.0) -> SceneObject:
    """A random object with the given motion (kind or :class:`Motion`) that stays in the frame;
    ``size_scale`` multiplies a randomly drawn size (the draws are the same for every scale)."""
    motion = make_motion(motion, rng) if isinstance(motion, str) else motion
    shape = shape or str(rng.choice(SHAPES))
    if colour is None:
        options = [c for c in COLOURS if c not in avoid_colours] or list(COLOURS)
        colour = str(rng.choice(options))
    if size is None:
        # Things that grow start small, things that shrink start large.
        low, high = (0.07, 0.12) if motion.growth > 0 else (0.16, 0.24) if motion.growth < 0 else (0.1, 0.2)
        size = float(rng.uniform(low, high)) * size_scale
    position = _start_position(motion, size, rng)
    return SceneObject(shape=shape, colour=colour, size=size, position=position,
                       angle=float(rng.uniform(0, 2 * math.pi)), motion=motion, role=role)


def make_occluder(target: SceneObject, rng: np.random.Generator, colour: str | None = None) -> SceneObject:
    """An object that passes in front of ``target`` around mid-clip, moving across the frame."""
    track = object_track(target, 3)
    cx, cy = float(track["x"][1]), float(track["y"][1])
    direction = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(0.7, 1.0)
    vx, vy = speed * math.cos(direction), speed * math.sin(direction)
    motion = Motion("translate", velocity=(vx, vy))
    colour = colour or str(rng.choice([c for c in COLOURS if c != target.colour]))
    return SceneObject(shape=str(rng.choice(("square", "circle", "hexagon"))), colour=colour,
                       size=float(max(target.size * 1.3, rng.uniform(0.18, 0.26))),
                       position=(cx - vx / 2, cy - vy / 2), angle=float(rng.uniform(0, 2 * math.pi)),
                       motion=motion, role="occluder")


def _random_colour(rng: np.random.Generator, low: int, high: int) -> str:
    r, g, b = rng.integers(low, high, size=3)
    return f"#{r:02x}{g:02x}{b:02x}"


def sample_background(rng: np.random.Generator, kind: str | None = None) -> Background:
    """A random background (muted colours so the objects stand out)."""
    kind = kind or str(rng.choice(BACKGROUNDS))
    dark, light = _random_colour(rng, 0, 110), _random_colour(rng, 90, 200)
    colours = (dark, light) if rng.random() < 0.5 else (light, dark)
    drift = float(rng.uniform(-1.0, 1.0)) if rng.random() < 0.3 else 0.0
    freq = float(rng.uniform(1.0, 3.0)) if kind in ("noise", "gradient") else float(rng.uniform(2.0, 8.0))
    return Background(kind=kind, colours=colours, frequency=freq, angle=float(rng.uniform(0, math.pi)),
                      drift=drift, seed=int(rng.integers(2**31)))


def sample_scene(rng: np.random.Generator | int, *, num_objects: tuple[int, int] = (1, 3),
                 motions: tuple[str, ...] = MOTIONS, occluder_prob: float = 0.25,
                 backgrounds: tuple[str, ...] = BACKGROUNDS, object_scale: float = 1.0) -> Scene:
    """A random scene for pretraining: ``num_objects`` (inclusive range) moving objects, the first
    one ``"main"``, the others distractors, and with probability ``occluder_prob`` an occluder that
    crosses the main object. ``object_scale`` multiplies every object's drawn size (radius 0.07-0.24
    of the short side at 1; the same scene otherwise)."""
    if object_scale <= 0:
        raise ValueError(f"object_scale must be positive, got {object_scale}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    background = sample_background(rng, str(rng.choice(backgrounds)))
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    objects: list[SceneObject] = []
    for i in range(count):
        objects.append(make_object(rng, str(rng.choice(motions)), role="main" if i == 0 else "distractor",
                                   avoid_colours=tuple(o.colour for o in objects), size_scale=object_scale))
    if objects and rng.random() < occluder_prob:
        objects.append(make_occluder(objects[0], rng))
    return Scene(background=background, objects=tuple(objects))


class SyntheticVideos:
    """An indexable collection of random scenes: scene ``i`` is a pure function of ``(seed, i)``.

    ``SyntheticVideos(seed=0)[i]`` is a :class:`Scene`; ``clip(i, frames, size)`` renders it.
    ``num_videos`` (None = unbounded) is only a bound on valid indices.
    """

    def __init__(self, seed: int = 0, num_videos: int | None = None, **scene_options: Any) -> None:
        if num_videos is not None and num_videos < 1:
            raise ValueError(f"num_videos must be >= 1 or None (unbounded), got {num_videos}")
        self.seed, self.num_videos, self.scene_options = int(seed), num_videos, scene_options

    def __len__(self) -> int:
        if self.num_videos is None:
            raise TypeError("an unbounded SyntheticVideos has no length")
        return self.num_videos

    def __getitem__(self, index: int) -> Scene:
        if index < 0 or (self.num_videos is not None and index >= self.num_videos):
            raise IndexError(f"scene index {index} out of range for {self.num_videos} videos")
        return sample_scene(np.random.default_rng([self.seed, int(index)]), **self.scene_options)

    def clip(self, index: int, frames: int, size: int | tuple[int, int]) -> np.ndarray:
        """uint8 ``(T, H, W, 3)`` clip of scene ``index``."""
        return render(self[index], frames, size)


__all__ = ["BACKGROUNDS", "Background", "COLOURS", "MOTIONS", "Motion", "REVERSED_MOTION", "ROLES", "SHAPES",
           "Scene", "SceneObject", "SyntheticVideos", "colour_rgb", "make_motion", "make_object", "make_occluder",
           "object_track", "render", "render_labels", "sample_background", "sample_scene"]
