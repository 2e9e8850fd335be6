"""``vjepa2 demo``: the whole system on built-in data, in one command, on a CPU.

::

    vjepa2 demo                 # about 15 minutes on 2 cores; report in demo-report/index.html
    vjepa2 demo --quick         # a 3-minute smoke version (tiny sizes; numbers mean little)
    vjepa2 demo --fresh         # redo every stage instead of reusing what a previous run left

Stages, each a call of the corresponding command's Python entry point (so an error surfaces as
itself), each reusing its output in ``--work`` when a previous run completed it:

1. **pretrain** -- the tiny V-JEPA 2 on the procedural videos (``vjepa2 pretrain``, recipe
   ``tiny`` with fewer iterations);
2. **probe** -- attentive probes on toy-SSv2 (12 classes, each a motion and its exact time
   reversal) on the frozen pretrained encoder and, as the baseline, on the same architecture with
   random weights (:func:`vjepa2.evals.probe.run_probe_eval`);
3. **collect** -- random-action trajectories of the built-in toy-push world (``vjepa2 collect``);
4. **train-ac** -- the action-conditioned predictor on the frozen pretrained encoder's features
   (``vjepa2 train-ac``), and its k-step latent error on held-out episodes against copying the
   current latent (``vjepa2 eval-ac``);
5. **plan** -- CEM + model-predictive control toward goal images on the reach and push tasks, with
   random- and zero-action baselines (``vjepa2 plan-eval``);
6. **report** -- ``<report>/index.html`` and ``<report>/README.md``: loss curves, the probe table,
   the world-model table, the planning tables and the pictures.
"""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from vjepa2.config import ConfigError, from_dict, load_yaml, resolve_recipe, to_dict
from vjepa2.files import atomic_write, atomic_write_text, check_output_dir
from vjepa2.engine.checkpoint import CheckpointDir
from vjepa2.engine.config import changed_config_keys

STAGES = ("pretrain", "probe", "collect", "train-ac", "plan")
#: The stages whose outputs each stage reads: when one of them runs again, so does the stage.
DEPENDS_ON = {"probe": ("pretrain",), "train-ac": ("pretrain", "collect"), "plan": ("train-ac",)}
#: Config keys that do not change a run's result (a difference in them does not redo a stage).
RESULT_NEUTRAL = ("output_dir", "threads", "device", "log", "checkpoint", "data.num_workers")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run. The stage settings are dotted overrides of each command's own typed
    config (so a mistake fails there, naming the key).

    Attributes:
        pretrain: overrides of the ``tiny`` pretraining recipe.
        probe: overrides of the toy-SSv2 probe evaluation (both encoders).
        episodes / episode_steps: toy-push trajectories for the world model, and actions per trajectory.
        heldout_episodes: trajectories (other seeds) for the world model's k-step error.
        train_ac_recipe / train_ac: the ``vjepa2 train-ac`` recipe (``--config``) and overrides of it.
        rollout_horizons: steps ahead of the held-out latent error.
        plan_recipe / plan: the ``vjepa2 plan-eval`` recipe and overrides of it (both tasks).
        tasks: planning tasks.
    """

    pretrain: tuple[str, ...]
    probe: tuple[str, ...]
    episodes: int
    episode_steps: int
    heldout_episodes: int
    train_ac: tuple[str, ...]
    rollout_horizons: tuple[int, ...]
    plan: tuple[str, ...]
    tasks: tuple[str, ...] = ("reach", "push")
    train_ac_recipe: str | None = None
    plan_recipe: str | None = None

    def validate(self) -> None:
        if self.episodes < 1 or self.episode_steps < 2 or self.heldout_episodes < 1:
            raise ConfigError("episodes, heldout_episodes must be >= 1 and episode_steps >= 2")
        if not self.rollout_horizons or max(self.rollout_horizons) >= self.episode_steps:
            raise ConfigError(f"rollout_horizons must be non-empty and shorter than episode_steps={self.episode_steps}")
        unknown = set(self.tasks) - {"reach", "push"}
        if unknown or not self.tasks:
            raise ConfigError(f"tasks must be reach and/or push, got {list(self.tasks)}")


def demo_settings(name: str) -> DemoSettings:
    """The demo budget ``name`` (``full`` or ``quick``): the recipe ``vjepa2/configs/demo/<name>.yaml``."""
    return from_dict(DemoSettings, load_yaml(resolve_recipe("demo", name)))


FULL = demo_settings("full")
QUICK = demo_settings("quick")


@dataclass
class StageRecord:
    """``status``: ``ran``, or ``reused`` (then ``seconds`` is the time of the run that made it, if known)."""

    name: str
    status: str
    seconds: float
    detail: dict


class Demo:
    """Runs the stages in ``work`` and writes the report to ``report``; see the module docstring."""

    def __init__(self, work: str | Path, report: str | Path, settings: DemoSettings, fresh: bool = False,
                 progress: bool = True) -> None:
        self.work, self.report = Path(work), Path(report)
        self.settings = settings
        self.fresh = fresh
        self.progress = progress
        self.records: list[StageRecord] = []

    # -- paths -------------------------------------------------------------------------------------

    def path(self, stage: str) -> Path:
        return self.work / stage

    # -- driver --------------------------------------------------------------------------------------

    def run(self) -> Path:
        """All stages, then the report; returns the path of ``index.html``."""
        check_output_dir(self.work, "--work")
        check_output_dir(self.report, "--report")
        if self.fresh:
            for stage in (*STAGES, "heldout"):
                shutil.rmtree(self.path(stage), ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        steps = [("pretrain", self.pretrain), ("probe", self.probe), ("collect", self.collect),
                 ("train-ac", self.train_ac), ("plan", self.plan)]
        ran: set[str] = set()
        for number, (name, stage) in enumerate(steps, 1):
            self._say(f"[{number}/{len(steps) + 1}] {name} ({time.perf_counter() - started:.0f} s so far)")
            inputs_changed = [d for d in DEPENDS_ON.get(name, ()) if d in ran]
            if inputs_changed and self.path(name).exists():
                self._say(f"    {name}: redone, its input ({', '.join(inputs_changed)}) was made again")
                shutil.rmtree(self.path(name))
            tick = time.perf_counter()
            status, detail = stage()
            if status == "ran":
                ran.add(name)
            seconds = time.perf_counter() - tick
            timing = self.path(name) / "demo-stage-seconds.txt"  # so a later report still shows the cost
            if status == "ran":
                atomic_write_text(timing, f"{seconds:.1f}\n")
            elif timing.is_file():
                seconds = float(timing.read_text())
            self.records.append(StageRecord(name, status, seconds, detail))
            self._say(f"    {name}: {status}" + (f" in {seconds:.0f} s" if status == "ran" else ""))
        self._say(f"[{len(steps) + 1}/{len(steps) + 1}] report")
        index = write_report(self.report, self.records, self.settings, time.perf_counter() - started, self.work)
        self._say(f"demo finished in {time.perf_counter() - started:.0f} s; report: {index}")
        return index

    def _say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def _drop_if_settings_changed(self, stage: str, config) -> None:
        """Delete ``stage``'s output when an earlier run made it with other settings (e.g. a newer
        version of the recipe), so that it is trained again instead of silently reused."""
        changed = changed_settings(self.path(stage), config)
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            self._say(f"    {stage}: redone, {self.path(stage)} was made with other settings ({shown})")
            shutil.rmtree(self.path(stage))

    # -- stages --------------------------------------------------------------------------------------

    def pretrain(self) -> tuple[str, dict]:
        from vjepa2.train.config import load_pretrain_config
        from vjepa2.train.pretrain import pretrain

        out = self.path("pretrain")
        cfg = dataclasses.replace(load_pretrain_config("tiny", self.settings.pretrain), output_dir=str(out))
        self._drop_if_settings_changed("pretrain", cfg)
        total = cfg.total_iterations
        status = "reused"
        if not any(step == total for step, _ in CheckpointDir(out / "checkpoints").steps()):
            pretrain(cfg, resume=True)  # continues a run a crash interrupted
            status = "ran"
        checkpoint = CheckpointDir(out / "checkpoints").path(total)
        return status, {"checkpoint": str(checkpoint), "loss_png": _existing(out / "loss.png"),
                        "last": _last_row(out / "log.csv"), "iterations": total,
                        "phases": [f"{p.name}: {p.iterations} steps, {p.frames} frames, {p.resolution} px"
                                   for p in cfg.phases]}

    @property
    def encoder_checkpoint(self) -> str:
        return self.records[0].detail["checkpoint"]

    def probe(self) -> tuple[str, dict]:
        from vjepa2.config import apply_overrides
        from vjepa2.evals.probe import ProbeReport, probe_eval_config, run_probe_eval

        rows, status = [], "reused"
        for name, random_init in (("pretrained", False), ("random init", True)):
            out = self.path("probe") / name.replace(" ", "-")
            data = apply_overrides({"encoder": self.encoder_checkpoint, "random_init": random_init,
                                    "dataset": "toy-ssv2", "out": str(out),
                                    "cache_dir": str(self.path("probe") / "features"), "device": "cpu"},
                                   self.settings.probe)
            cfg = probe_eval_config(data)
            results = out / "results.json"
            if results.is_file():
                report = ProbeReport.read(results)
            else:
                report = run_probe_eval(cfg, progress=self.progress)
                status = "ran"
            best = report.best
            metrics = best.heads["class"]
            rows.append({"encoder": name, "top1": metrics.top1, "top5": metrics.top5,
                         "mean_class_accuracy": metrics.mean_class_accuracy, "lr": best.lr,
                         "weight_decay": best.weight_decay, "train": report.train.count,
                         "val": report.val.count, "confusion_png": _existing(out / "confusion.png")})
        return status, {"rows": rows, "classes": 12}

    def collect(self) -> tuple[str, dict]:
        from vjepa2.world_model.collect import collect, episode_dir
        from vjepa2.world_model.envs.toy_push import ToyPushConfig, ToyPushSource

        s = self.settings
        status = "reused"
        for stage, episodes, seed in (("collect", s.episodes, 0), ("heldout", s.heldout_episodes, 50_000)):
            out = self.path(stage)
            if not all((episode_dir(out, i) / "states.npy").is_file() for i in range(episodes)):
                collect(ToyPushSource(ToyPushConfig(size=64)), out, episodes, s.episode_steps, seed=seed,
                        progress=self.progress)  # keeps finished episodes: resumes an interrupted collection
                status = "ran"
        return status, {"episodes": s.episodes, "steps": s.episode_steps, "heldout": s.heldout_episodes,
                        "seeds": f"0..{s.episodes - 1} (held out: 50000..{50_000 + s.heldout_episodes - 1})"}

    def train_ac(self) -> tuple[str, dict]:
        from vjepa2.world_model.config import load_ac_config
        from vjepa2.world_model.evaluate import rollout_errors
        from vjepa2.world_model.feature_cache import build_feature_cache
        from vjepa2.world_model.model import load_world_model
        from vjepa2.world_model.train import train_ac

        out = self.path("train-ac")
        cfg = load_ac_config(self.settings.train_ac_recipe, (f"encoder.weights={self.encoder_checkpoint}",
                                                             "encoder.img_size=64",
                                    *self.settings.train_ac),
                             **{"data.trajectories": str(self.path("collect")), "output_dir": str(out)})
        self._drop_if_settings_changed("train-ac", cfg)
        total = cfg.schedule.iterations
        status = "reused"
        if not any(step == total for step, _ in CheckpointDir(out / "checkpoints").steps()):
            train_ac(cfg, resume=True)
            status = "ran"
        errors_file = out / "heldout-errors.json"
        if errors_file.is_file() and status == "reused":
            errors = {k: {int(h): v for h, v in d.items()} for k, d in json.loads(errors_file.read_text()).items()}
        else:
            world = load_world_model(out)
            horizons = self.settings.rollout_horizons
            features = build_feature_cache(self.path("heldout"), world.encoder, out / "features", img_size=world.img_size,
                                           min_steps=max(horizons) + 1, progress=self.progress)
            errors = rollout_errors(world.predictor, features.files, horizons, progress=self.progress)
            atomic_write_text(errors_file, json.dumps(errors, indent=1) + "\n")
        return status, {"loss_png": _existing(out / "loss.png"), "last": _last_row(out / "log.csv"),
                        "iterations": total, "errors": errors}

    def plan(self) -> tuple[str, dict]:
        from vjepa2.world_model.model import load_world_model
        from vjepa2.world_model.plan_eval import load_plan_eval_config, plan_eval

        out = self.path("plan")
        world, status, tasks = None, "reused", {}
        for task in self.settings.tasks:
            cfg = load_plan_eval_config(self.settings.plan_recipe, self.settings.plan, task=task)
            saved = out / f"plan-eval-{task}.json"
            if not saved.is_file():
                world = world or load_world_model(self.path("train-ac"))
                plan_eval(world, cfg, out, progress=self.progress)
                status = "ran"
            data = json.loads(saved.read_text())
            tasks[task] = {"summaries": data["summaries"], "markdown": (out / f"plan-eval-{task}.md").read_text(),
                           "files": [f for f in data["files"] if f.endswith((".png", ".gif"))],
                           "planner": data["config"]["planner"], "mpc": data["config"]["mpc"]}
        return status, {"tasks": tasks}


def changed_settings(run_dir: str | Path, config) -> list[str]:
    """Dotted keys whose value in ``run_dir/config.yaml`` (the config an earlier run saved) differs
    from ``config`` (a typed config), leaving out :data:`RESULT_NEUTRAL` keys; [] without a saved config."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return []
    old = yaml.safe_load(saved.read_text()) or {}
    new = json.loads(json.dumps(to_dict(config)))  # tuples -> lists, as the YAML file has them
    return [key for key, _, _ in changed_config_keys(old, new)
            if not any(key == neutral or key.startswith(neutral + ".") for neutral in RESULT_NEUTRAL)]


def _existing(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def _last_row(csv_path: Path) -> dict:
    """The last logged row of a training CSV (empty if none)."""
    import csv

    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def _copy(source: str | None, report: Path, name: str) -> str | None:
    """Copy a picture into the report directory (atomically); returns its name there."""
    if not source or not Path(source).is_file():
        return None
    data = Path(source).read_bytes()
    atomic_write(report / name, lambda f: f.write(data))
    return name


def _table(headers: list[str], rows: list[list]) -> tuple[str, str]:
    """The same table as (Markdown, HTML)."""
    md = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    md += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return "\n".join(md), f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def reproduce_commands(settings: DemoSettings, work: str | Path, checkpoint: str) -> list[str]:
    """The command lines equivalent to the demo's stages (``checkpoint``: the pretrained encoder's)."""
    w = Path(work)
    lines = [f"vjepa2 pretrain --config tiny --out {w}/pretrain {' '.join(settings.pretrain)}"]
    for flag in ("", " --random-init"):
        lines.append(f"vjepa2 eval probe --encoder {checkpoint} --dataset toy-ssv2{flag} "
                     f"--out {w}/probe/{'random-init' if flag else 'pretrained'} {' '.join(settings.probe)}")
    lines.append(f"vjepa2 collect --env toy-push --episodes {settings.episodes} --steps {settings.episode_steps} "
                 f"--out {w}/collect --seed 0")
    lines.append(f"vjepa2 collect --env toy-push --episodes {settings.heldout_episodes} "
                 f"--steps {settings.episode_steps} --out {w}/heldout --seed 50000")
    ac_recipe = f" --config {settings.train_ac_recipe}" if settings.train_ac_recipe else ""
    plan_recipe = f" --config {settings.plan_recipe}" if settings.plan_recipe else ""
    lines.append(f"vjepa2 train-ac{ac_recipe} --data {w}/collect --out {w}/train-ac encoder.weights={checkpoint} "
                 f"encoder.img_size=64 {' '.join(settings.train_ac)}")
    lines.append(f"vjepa2 eval-ac --run {w}/train-ac --data {w}/heldout "
                 f"--horizons {' '.join(map(str, settings.rollout_horizons))}")
    for task in settings.tasks:
        lines.append(f"vjepa2 plan-eval{plan_recipe} --run {w}/train-ac --env toy-push --task {task} --out {w}/plan "
                     f"{' '.join(settings.plan)}")
    return lines


REPORT_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
                "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;"
                "text-align:right}th{background:#eee}img{max-width:100%}figure{margin:1em 0}"
                "figcaption{color:#555;font-size:.9em}")


class ReportPage:
    """The report as Markdown and HTML built side by side; pictures are copied into ``directory``."""

    def __init__(self, directory: Path, title: str) -> None:
        self.directory = directory
        self.title = title
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def section(self, title: str, level: int = 2) -> None:
        self.md.extend([f"{'#' * level} {title}", ""])
        self.html.append(f"<h{level}>{html.escape(title)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.extend([text, ""])
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, headers: list[str], rows: list[list]) -> None:
        md, table = _table(headers, rows)
        self.md.extend([md, ""])
        self.html.append(table)

    def picture(self, source: str | None, name: str, caption: str) -> None:
        """Copy the picture ``source`` (if it exists) into the report as ``name`` and show it."""
        name = _copy(source, self.directory, name)
        if name:
            self.md.extend([f"![{caption}]({name})", ""])
            self.html.append(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def code(self, lines: list[str]) -> None:
        self.md.extend(["```bash", *lines, "```", ""])
        self.html.append("<pre>" + html.escape("\n".join(lines)) + "</pre>")

    def write(self) -> Path:
        """``README.md`` and ``index.html`` in ``directory``; returns the path of ``index.html``."""
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{REPORT_STYLE}</style></head><body>{''.join(self.html)}</body></html>\n")
        atomic_write_text(self.directory / "README.md", "\n".join(self.md) + "\n")
        return atomic_write_text(self.directory / "index.html", page)


def write_report(report: str | Path, records: list[StageRecord], settings: DemoSettings, seconds: float,
                 work: str | Path = "runs/demo") -> Path:
    """``report/index.html`` and ``report/README.md`` (same content) with pictures copied beside them."""
    report = Path(report)
    report.mkdir(parents=True, exist_ok=True)
    page = ReportPage(report, "vjepa2 demo report")
    by_name = {r.name: r.detail for r in records}
    total = sum(r.seconds for r in records)
    page.para(f"All stages on built-in data, CPU: {total / 60:.1f} minutes of stage time ({seconds / 60:.1f} minutes "
              f"in this invocation). Each stage reuses its output in the work directory when present "
              f"(vjepa2 demo --fresh redoes them).")
    page.table(["stage", "status", "seconds"], [[r.name, r.status, f"{r.seconds:.0f}"] for r in records])
    _pretrain_section(page, by_name["pretrain"])
    _probe_section(page, by_name["probe"])
    _world_model_section(page, by_name["collect"], by_name["train-ac"])
    _planning_section(page, by_name["plan"])
    page.section("Reproduce")
    page.para("Every stage is a command of its own; vjepa2 demo calls their Python entry points with these settings:")
    page.code(reproduce_commands(settings, work, by_name["pretrain"]["checkpoint"]))
    return page.write()


def _pretrain_section(page: ReportPage, pre: dict) -> None:
    page.section("1. Pretraining (tiny V-JEPA 2 on procedural videos)")
    page.para(f"{pre['iterations']} steps: {'; '.join(pre['phases'])}. Last logged loss: "
              f"{float(pre['last'].get('loss', 'nan')):.4f}.")
    page.picture(pre["loss_png"], "pretrain-loss.png", "pretraining loss (L1 in latent space)")


def _probe_section(page: ReportPage, probe: dict) -> None:
    page.section("2. Frozen-encoder probe on toy-SSv2")
    page.para("12 classes: six motions and their exact time reversals, so single frames carry no label information; "
              "chance is 8.3%. The same probe grid on the pretrained encoder and on its architecture with random "
              "weights.")
    page.table(["encoder", "top-1", "top-5", "best lr", "best wd", "train / val clips"],
               [[r["encoder"], _pct(r["top1"]), _pct(r["top5"]), r["lr"], r["weight_decay"],
                 f"{r['train']} / {r['val']}"] for r in probe["rows"]])
    page.picture(probe["rows"][0]["confusion_png"], "probe-confusion.png",
                 "confusion matrix of the best probe on the pretrained encoder")


def _world_model_section(page: ReportPage, col: dict, ac: dict) -> None:
    page.section("3. Action-conditioned world model (toy-push)")
    page.para(f"{col['episodes']} random-action episodes of {col['steps']} steps (seeds {col['seeds']}); the AC "
              f"predictor trained {ac['iterations']} steps on the frozen pretrained encoder's features. Held-out "
              f"latent error k steps ahead (mean L1 of layer-normed latents) against copying the current latent:")
    errors = ac["errors"]
    # "shuffled": the same rollouts under other windows' actions; equal to "model" means the
    # predictor ignores its actions, and then planning cannot work.
    shuffled = "shuffled" in errors
    page.table(["steps ahead", "AC predictor", *(["same, shuffled actions"] if shuffled else []), "copy current",
                "predictor / copy"],
               [[k, f"{errors['model'][k]:.4f}", *([f"{errors['shuffled'][k]:.4f}"] if shuffled else []),
                 f"{errors['copy'][k]:.4f}", f"{errors['model'][k] / errors['copy'][k]:.2f}"] for k in errors["model"]])
    page.picture(ac["loss_png"], "train-ac-loss.png", "AC predictor training loss (teacher forcing + rollout)")


def _planning_section(page: ReportPage, plan: dict) -> None:
    page.section("4. Planning toward goal images (CEM + MPC)")
    for task, info in plan["tasks"].items():
        planner, mpc = info["planner"], info["mpc"]
        page.section(task, level=3)
        page.para(info["markdown"].splitlines()[0])
        energy = ("mean L1 between imagined and goal latents" if not planner.get("state_weight") else
                  f"mean L1 between imagined and goal latents + {planner['state_weight']:g} x the L1 gap between the "
                  f"imagined and the goal's robot state")
        page.para(f"CEM: {planner['samples']} samples x {planner['iterations']} iterations, {planner['elites']} "
                  f"elites, horizon {planner['horizon']}, {planner['constraint']} constraint; execute "
                  f"{mpc['execute']} action per plan, budget {mpc['steps_per_goal']} actions. Energy: {energy}.")
        page.table(["method", "success rate", "final distance (mean)", "actions (mean)", "seconds / action"],
                   [[s["method"], f"{100 * s['success_rate']:.0f}%", f"{s['final_distance_mean']:.3f}",
                     f"{s['steps_mean']:.1f}", f"{s['seconds_per_action']:.3g}"] for s in info["summaries"]])
        for picture in info["files"]:
            page.picture(picture, Path(picture).name, Path(picture).stem.replace("-", " "))


def run_demo(work: str | Path | None = None, report: str | Path = "demo-report", quick: bool = False,
             fresh: bool = False, progress: bool = True) -> Path:
    """Run the demo (``vjepa2 demo``): every stage with the :data:`FULL` settings (:data:`QUICK` if
    ``quick``) in ``work`` (default ``runs/demo``, or ``runs/demo-quick``), then the report in
    ``report``; ``fresh`` redoes every stage. Returns the path of ``index.html``."""
    settings = QUICK if quick else FULL
    work = work or ("runs/demo-quick" if quick else "runs/demo")
    return Demo(work, report, settings, fresh=fresh, progress=progress).run()
