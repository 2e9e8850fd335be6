"""Typed configuration: dataclasses read from / written to YAML, validated before any work.

Every config in the project is a (nested) dataclass. :func:`from_dict` builds one from plain data
and fails with a one-line :class:`ConfigError` naming the offending key for unknown keys, wrong
types or bad values; :func:`apply_overrides` applies dotted command-line overrides such as
``optim.lr=1e-4`` before validation, so a typo fails exactly like a typo in the file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from vjepa2.errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """A configuration key or value is wrong; the message names the key."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check / coerce ``value`` to type ``tp``; ``key`` is the dotted name for error messages."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{key}: {value!r} matches none of {[_type_name(o) for o in options]}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)  # YAML reads "1e-4" as a string
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(number)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _merge(base: Any, over: Any) -> Any:
    """``over`` laid over ``base``, recursively for mappings."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise :class:`ConfigError`.

    A nested section given in part is laid over the field's default, so ``grid.epochs=5`` changes
    one key and keeps the others as the enclosing config defines them.

    A class with an ``upgrade(data) -> data`` classmethod has it applied first (older key layouts).
    After construction, a dataclass's own ``validate()`` method (if any) is called so that
    cross-field rules fail just as early.
    """
    data = dict(data or {})
    upgrade = getattr(cls, "upgrade", None)  # a class that reads an older layout of its keys
    if callable(upgrade):
        data = upgrade(data)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        import difflib

        hints_txt = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hints_txt.append(f"{where}{name}" + (f" (did you mean {where}{close[0]}?)" if close else ""))
        raise ConfigError(f"unknown config key {', '.join(hints_txt)}; valid keys here: "
                          f"{', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        owner_default = _field_default(fields[name])
        if isinstance(value, dict) and dataclasses.is_dataclass(owner_default):
            # A section given in part keeps the *owner's* defaults for the other keys (the owner
            # may default a section to a non-default instance of its class).
            value = _merge(to_dict(owner_default), value)
        kwargs[name] = _convert(value, hints[name], key)
    missing = [name for name, f in fields.items() if name not in kwargs and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix + ': ' if prefix else ''}missing {', '.join(missing)} (required; "
                          f"given: {', '.join(kwargs) or 'nothing'})")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"{prefix + ': ' if prefix else ''}{err}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML-safe) form of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` -> ``(["optim", "lr"], 1e-4)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    """Return a copy of ``data`` with dotted ``key=value`` overrides applied (validated later)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


#: Larger config files are refused unread (a recipe is a few KB; YAML parsing of a huge file takes minutes).
MAX_CONFIG_BYTES = 1 << 20


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping (an empty file is ``{}``); raise :class:`ConfigError` if not a mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {path.stat().st_size / 1e6:,.1f} MB; a config is a few KB "
                          f"(at most {MAX_CONFIG_BYTES // 2**20} MiB): is it the right file?")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file (not UTF-8)") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def config_yaml(obj: Any) -> str:
    """A config dataclass (or plain data) as YAML, keys in field order (``--print-config``, ``config.yaml``)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a config dataclass (or plain data) as YAML (atomically)."""
    from vjepa2.files import atomic_write_text

    atomic_write_text(path, config_yaml(obj))


# ------------------------------------------------------------------------------------------------
# Recipes: YAML files shipped in the package, one folder per command (vjepa2/configs/<command>/)
# ------------------------------------------------------------------------------------------------


def _recipe_dir(command: str):
    # Package data (not a package): ships in the wheel via [tool.setuptools.package-data].
    from importlib import resources

    return resources.files("vjepa2") / "configs" / command


def recipe_names(command: str) -> list[str]:
    """Names of the recipes shipped for ``command`` (``vjepa2/configs/<command>/*.yaml``)."""
    folder = _recipe_dir(command)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def resolve_recipe(command: str, name_or_path: str) -> Path:
    """A YAML path as given, or ``command``'s shipped recipe of that name (``tiny``, ``vitl``, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = _recipe_dir(command) / f"{name_or_path}.yaml"
    is_name = path.suffix not in (".yaml", ".yml") and path.parent == Path(".")
    if is_name and shipped.is_file():  # a recipe name wins over a folder of that name in the working directory
        return Path(str(shipped))
    names = ", ".join(recipe_names(command)) or "none"
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; give a YAML file (e.g. {path / 'config.yaml'}) or a "
                          f"recipe name: {names}")
    if not is_name:
        raise ConfigError(f"config file {path} does not exist")
    raise ConfigError(f"--config {name_or_path!r} is neither a file nor a shipped recipe; recipes: {names}")
