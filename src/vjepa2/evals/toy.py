"""Built-in labelled tasks drawn from the procedural generator (:mod:`vjepa2.data.clips.synthetic`).

``toy-ssv2`` (temporal reasoning, 12 classes)
    Six pairs of classes, each pair a motion and its exact time reversal: moving left / right, moving
    up / down, rotating clockwise / counter-clockwise, growing / shrinking, approaching / receding,
    being covered / being uncovered. A clip of the second class of a pair is *built* as
    ``scene.reversed()`` of a scene drawn for the first class, so the two classes are the same
    distribution of scenes played in opposite directions: any single frame, and the unordered set of
    a clip's frames, is distributed identically in both classes. Only the order of frames separates
    them. Backgrounds (plain / stripes / checker / noise / gradient, sometimes drifting), object
    shapes and colours and 0-2 static distractor objects vary from clip to clip.
``toy-appearance`` (8 classes)
    Which shape the main object is (circle, square, triangle, star, hexagon, cross, ring, ellipse),
    whatever its motion, colour, background and distractors: what one frame shows.
``toy-anticipation`` (verb x noun = 4 x 7 actions)
    Four static target objects sit near the left, right, top and bottom edges; a ring starts near
    the centre and moves towards one of them. The clip shows the first half of the approach; the
    contact happens after the clip ends. verb = the direction of the approach, noun = the shape of
    the target that will be reached, action = (verb, noun). It can only be anticipated from the
    observed motion.

Splits are fixed by ``seed``: sample ``i`` of split ``s`` is a pure function of ``(seed, s, i)``
and its class is ``i % num_classes`` (balanced classes).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vjepa2.config import ConfigError
from vjepa2.files import atomic_write_text
from vjepa2.data.clips.synthetic import (COLOURS, SHAPES, Motion, Scene, SceneObject, make_motion, make_object,
                                         render, sample_background)

TOY_TASKS = ("toy-ssv2", "toy-appearance", "toy-anticipation")
SPLITS = ("train", "val")

# (forward class, its time reversal); class 2p is the forward one, 2p + 1 the reversed one.
TOY_SSV2_PAIRS = (
    ("moving left", "moving right"),
    ("moving up", "moving down"),
    ("rotating clockwise", "rotating counter-clockwise"),
    ("growing", "shrinking"),
    ("approaching", "receding"),
    ("being covered", "being uncovered"),
)
TOY_SSV2_CLASSES = tuple(name for pair in TOY_SSV2_PAIRS for name in pair)
# Shapes whose rotation is visible (circles and rings look the same at every angle).
ROTATING_SHAPES = ("triangle", "star", "cross", "ellipse", "square")

ANTICIPATION_VERBS = ("reach left", "reach right", "reach up", "reach down")
ANTICIPATION_MOVER = "ring"
ANTICIPATION_NOUNS = tuple(s for s in SHAPES if s != ANTICIPATION_MOVER)
# Where the four targets sit, in the order of ANTICIPATION_VERBS.
_TARGET_SPOTS = ((0.13, 0.5), (0.87, 0.5), (0.5, 0.13), (0.5, 0.87))


@dataclass(frozen=True)
class ToyConfig:
    """Size and seed of a built-in task's splits.

    Attributes:
        train_size / val_size: clips per split.
        seed: fixes both splits (different seeds give different, equally distributed splits).
        max_distractors: up to this many static distractor objects per clip.
    """

    train_size: int = 1200
    val_size: int = 480
    seed: int = 0
    max_distractors: int = 2

    def validate(self) -> None:
        if self.train_size < 1 or self.val_size < 1:
            raise ConfigError(f"toy.train_size and toy.val_size must be >= 1, got {self.train_size}, {self.val_size}")
        if self.max_distractors < 0:
            raise ConfigError(f"toy.max_distractors must be >= 0, got {self.max_distractors}")


def _distractors(rng: np.random.Generator, count: int, avoid: tuple[str, ...]) -> list[SceneObject]:
    """Small static objects anywhere in the frame (clutter that never carries the label)."""
    out = []
    for _ in range(count):
        out.append(make_object(rng, "static", size=float(rng.uniform(0.05, 0.09)), role="distractor",
                               avoid_colours=avoid + tuple(o.colour for o in out)))
    return out


def _direction_motion(rng: np.random.Generator, angle: float) -> Motion:
    # A little jitter around the nominal direction keeps the class about the direction, not one path.
    return make_motion("translate", rng, direction=angle + rng.uniform(-0.35, 0.35))


def toy_ssv2_forward_scene(pair: int, rng: np.random.Generator, max_distractors: int = 2) -> Scene:
    """A random scene of the *first* class of pair ``pair`` (its reversal is the second class)."""
    background = sample_background(rng)
    if pair == 0:
        main = make_object(rng, _direction_motion(rng, math.pi))
    elif pair == 1:
        main = make_object(rng, _direction_motion(rng, -math.pi / 2))  # y grows downwards
    elif pair == 2:
        main = make_object(rng, "rotate_cw", shape=str(rng.choice(ROTATING_SHAPES)),
                           size=float(rng.uniform(0.17, 0.25)))
    elif pair == 3:
        main = make_object(rng, "grow")
    elif pair == 4:
        main = make_object(rng, "approach")
    elif pair == 5:
        main = make_object(rng, "static", size=float(rng.uniform(0.1, 0.16)))
    else:
        raise ValueError(f"toy-ssv2 has {len(TOY_SSV2_PAIRS)} pairs, got pair {pair}")
    objects = _distractors(rng, int(rng.integers(0, max_distractors + 1)), (main.colour,)) + [main]
    if pair == 5:
        # An occluder that ends exactly on top of the main object: "being covered".
        direction, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0.55, 0.85)
        vx, vy = speed * math.cos(direction), speed * math.sin(direction)
        cx, cy = main.position
        objects.append(SceneObject(shape=str(rng.choice(("square", "circle", "hexagon"))),
                                   colour=str(rng.choice([c for c in COLOURS if c != main.colour])),
                                   size=float(max(main.size * 1.45, rng.uniform(0.2, 0.26))),
                                   position=(cx - vx, cy - vy), angle=float(rng.uniform(0, 2 * math.pi)),
                                   motion=Motion("translate", velocity=(vx, vy)), role="occluder"))
    return Scene(background=background, objects=tuple(objects))


def toy_appearance_scene(shape: str, rng: np.random.Generator, max_distractors: int = 2) -> Scene:
    """A random scene whose main object is a ``shape``, moving in a random way."""
    motion = str(rng.choice(("static", "translate", "rotate_cw", "rotate_ccw")))
    main = make_object(rng, motion, shape=shape, size=float(rng.uniform(0.14, 0.22)))
    objects = _distractors(rng, int(rng.integers(0, max_distractors + 1)), (main.colour,)) + [main]
    return Scene(background=sample_background(rng), objects=tuple(objects))


def toy_anticipation_scene(verb: int, rng: np.random.Generator) -> tuple[Scene, int]:
    """A scene where a ring heads for the target in direction ``verb``; returns it and the noun."""
    shapes = [str(s) for s in rng.permutation(ANTICIPATION_NOUNS)[:4]]
    palette = [str(c) for c in rng.permutation(list(COLOURS))]
    targets = [SceneObject(shape=shapes[k], colour=palette[k], size=float(rng.uniform(0.09, 0.11)),
                           position=_TARGET_SPOTS[k], angle=0.0, role="distractor") for k in range(4)]
    mover_size = float(rng.uniform(0.08, 0.1))
    start = (0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05))
    tx, ty = _TARGET_SPOTS[verb]
    # Contact point: just short of the target along the line from the start.
    dx, dy = tx - start[0], ty - start[1]
    dist = math.hypot(dx, dy)
    stop = dist - (targets[verb].size + mover_size) * 0.9
    # The clip covers tau in [0, 1]; contact happens at tau = 2, after the clip ends.
    velocity = (dx / dist * stop / 2, dy / dist * stop / 2)
    mover = SceneObject(shape=ANTICIPATION_MOVER, colour=palette[4], size=mover_size, position=start,
                        motion=Motion("translate", velocity=velocity), role="main")
    scene = Scene(background=sample_background(rng), objects=tuple(targets) + (mover,))
    return scene, ANTICIPATION_NOUNS.index(shapes[verb])


def export_toy_dataset(name: str, out: str | os.PathLike, config: ToyConfig | None = None, frames: int = 16,
                       size: int = 80, fps: float = 8.0, progress: bool = True) -> dict[str, Path]:
    """Write a built-in task as videos plus list files, so the list-file path can be exercised.

    Layout: ``out/<split>/<index>.mp4``, ``out/<split>.txt`` (``<split>/<index>.mp4 <label>`` lines,
    paths relative to the list), ``out/classes.txt`` (one class name per line, line ``k`` = label
    ``k - 1``). Anticipation tasks write the action label. Videos are written atomically one by one
    and the list files last, so an interrupted export never lists a missing video.

    Returns:
        ``{"train": path, "val": path, "classes": path}``.
    """
    from vjepa2.data.clips.video import write_video
    from vjepa2.progress import progress_bar

    if size % 2:
        raise ConfigError(f"--size {size} must be even (H.264 video stores even frame sizes)")
    if frames < 1 or fps <= 0:
        raise ConfigError(f"--frames must be >= 1 and --fps > 0, got {frames}, {fps}")
    out = Path(out)
    written = {}
    for split in SPLITS:
        task = ToyTask(name, split, config)
        lines = []
        for i in progress_bar(range(len(task)), desc=f"{name} {split}", unit="video", disable=not progress):
            relative = f"{split}/{i:05d}.mp4"
            write_video(out / relative, task.render(i, frames, size), fps=fps)
            label = task.label(i)
            lines.append(f"{relative} {label[2] if isinstance(label, tuple) else label}\n")
        written[split] = atomic_write_text(out / f"{split}.txt", "".join(lines))
    written["classes"] = atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in ToyTask(name, "train",
                                                                                            config).classes))
    return written


class ToyTask:
    """One split of a built-in task: ``len(task)`` clips, ``task.scene(i)``, ``task.label(i)``.

    ``label(i)`` is an int class for ``toy-ssv2`` / ``toy-appearance`` and ``(verb, noun, action)``
    for ``toy-anticipation`` (``action = verb * len(nouns) + noun``).
    """

    def __init__(self, name: str, split: str, config: ToyConfig | None = None) -> None:
        if name not in TOY_TASKS:
            raise ConfigError(f"unknown built-in dataset {name!r}; choose one of {', '.join(TOY_TASKS)}")
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        self.name, self.split, self.config = name, split, config or ToyConfig()
        self.size = self.config.train_size if split == "train" else self.config.val_size

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names (for anticipation: the action names ``"verb / noun"``)."""
        if self.name == "toy-ssv2":
            return TOY_SSV2_CLASSES
        if self.name == "toy-appearance":
            return SHAPES
        return tuple(f"{v} / {n}" for v in ANTICIPATION_VERBS for n in ANTICIPATION_NOUNS)

    @property
    def head_classes(self) -> tuple[tuple[str, ...], ...]:
        """Class names of each probe head (one head, or verb / noun / action)."""
        if self.name == "toy-anticipation":
            return (ANTICIPATION_VERBS, ANTICIPATION_NOUNS, self.classes)
        return (self.classes,)

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.size:
            raise IndexError(f"{self.name}/{self.split} has {self.size} clips, asked for #{index}")
        return np.random.default_rng([self.config.seed, SPLITS.index(self.split), TOY_TASKS.index(self.name), index])

    def origin(self, index: int) -> str:
        return f"{self.name}/{self.split}#{index}"

    def label(self, index: int) -> int | tuple[int, int, int]:
        if self.name == "toy-anticipation":
            verb = index % len(ANTICIPATION_VERBS)
            _, noun = toy_anticipation_scene(verb, self._rng(index))
            return verb, noun, verb * len(ANTICIPATION_NOUNS) + noun
        return index % len(self.classes)

    def scene(self, index: int) -> Scene:
        rng = self._rng(index)
        if self.name == "toy-ssv2":
            cls = index % len(TOY_SSV2_CLASSES)
            forward = toy_ssv2_forward_scene(cls // 2, rng, self.config.max_distractors)
            return forward.reversed() if cls % 2 else forward
        if self.name == "toy-appearance":
            return toy_appearance_scene(SHAPES[index % len(SHAPES)], rng, self.config.max_distractors)
        return toy_anticipation_scene(index % len(ANTICIPATION_VERBS), rng)[0]

    def twin(self, index: int) -> Scene:
        """toy-ssv2: the same scene played backwards, i.e. a clip of the other class of the pair."""
        if self.name != "toy-ssv2":
            raise ValueError("only toy-ssv2 clips have a time-reversed twin class")
        return self.scene(index).reversed()

    def render(self, index: int, frames: int, size: int) -> np.ndarray:
        """uint8 ``(frames, size, size, 3)`` clip of sample ``index``."""
        return render(self.scene(index), frames, size)

