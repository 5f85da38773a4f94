"""Parameter profiles (``params/<profile>.yaml``), the chapters' parameter declarations, and
the checks every parameter passes before a chapter runs.

A profile holds a ``common`` section (seed, device) and one section per chapter, named by
the notebook's stem (``03_base_models``). A chapter's parameters are its ``parameters`` cell's
defaults, overridden by ``common``, overridden by the chapter's section
(:func:`resolved_parameters`); the book runner validates all of them up front
(:func:`validate_parameters`: the declared type, plus the :data:`RULES` below: ranges,
choices, and values that must be among another parameter's) and injects them through
papermill. Chapters that rebuild earlier chapters' stages also get those chapters' parameters,
injected as ``upstream`` (:data:`UPSTREAM`). Inside a chapter's kernel, :func:`check_run`
validates what papermill injected the same way and records overrides of the profile. The value
checks (``check_int`` ...) live in :mod:`esae.checks` (re-exported here), which the science
modules' config dataclasses call.

Bad profiles stop with one line naming the file: malformed YAML (with its line), an unknown
section (a misspelled chapter), a missing section of the chapter being run. YAML's ``1e-3``
(no dot) is read as a number, as YAML 1.2 and every reader expects.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from esae.checks import bounds as _range
from esae.checks import check_choice, check_float, check_int, check_int_list  # noqa: F401 - re-exported
from esae.runtime import HEAD_DTYPES, MATMUL_DTYPES, repo_root

PROFILES = ("smoke", "default", "paper")


def params_dir() -> Path:
    """Where the profiles live: ``ESAE_PARAMS`` or ``<repo>/params``."""
    return Path(os.environ.get("ESAE_PARAMS", repo_root() / "params"))


def check_profile(profile: str) -> str:
    """Fail unless ``profile`` names one of the profiles."""
    return check_choice("profile", profile, PROFILES)


# ----------------------------------------------------------------------------- reading profiles


class ProfileError(ValueError):
    """A profile or a chapter parameter that cannot be used; the message is one line naming the
    file, the chapter, the parameter, what is allowed and what was given."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a float (YAML 1.2) rather than a string."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _shown(path: Path) -> str:
    """``params/smoke.yaml`` inside the repository, the full path elsewhere."""
    try:
        return str(path.resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


def profile_path(profile: str) -> Path:
    """``params/<profile>.yaml`` (under ``ESAE_PARAMS`` when set)."""
    check_profile(profile)
    return params_dir() / f"{profile}.yaml"


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; malformed YAML raises :class:`ProfileError` with the file and line."""
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        problem = getattr(err, "problem_mark", None)
        context = getattr(err, "context_mark", None)
        mark = context or problem  # where the broken construct starts, e.g. an unclosed [
        where = f"{_shown(path)}:{mark.line + 1}" if mark is not None else _shown(path)
        parts = [getattr(err, "context", None), getattr(err, "problem", None)]
        what = " ".join(": ".join(str(x) for x in parts if x).split()) or " ".join(str(err).split())
        if context is not None and problem is not None and problem.line != context.line:
            what += f" on line {problem.line + 1}"
        raise ProfileError(f"{where}: malformed YAML ({what})") from None


CHAPTER_STEM = re.compile(r"[0-9][0-9][a-z]?_\w+")
"""A chapter's stem: two digits, an optional letter for a chapter placed between two others
(``06b_beyond`` sorts after ``06_probing`` and before ``07_sae_match``), an underscore and a name."""


def chapter_stems(root: Path | None = None) -> list[str]:
    """The chapter stems, in book order (``01_groups``, ``02_dataset``, ..., ``06b_beyond``, ...)."""
    return sorted(p.stem for p in ((root or repo_root()) / "notebooks").glob("[0-9][0-9]*_*.py")
                  if CHAPTER_STEM.fullmatch(p.stem))


def chapter_number(stem: str) -> str:
    """What ``make chapter N=...`` takes for ``stem``: ``04`` for ``04_fitting_m``, ``06b`` for ``06b_beyond``."""
    return stem.split("_", 1)[0]


def load_profile(profile: str) -> dict[str, Any]:
    """Read ``params/<profile>.yaml`` as a dict of sections: ``common`` and chapter stems.

    Refuses (``ProfileError``, one line naming the file) a missing file, malformed YAML, a
    non-mapping, and a section that names no chapter (``03_base_model``: did you mean ...)."""
    path = profile_path(profile)
    if not path.is_file():
        raise FileNotFoundError(f"profile file {_shown(path)} is missing")
    data = read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ProfileError(f"{_shown(path)} must hold a mapping of sections (common, 01_groups, ...), "
                           f"got {type(data).__name__}")
    stems = chapter_stems()
    known = ["common", *stems]
    for section, values in data.items():
        if stems and section not in known:
            close = difflib.get_close_matches(str(section), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ProfileError(f"{_shown(path)}: unknown section {section!r}{hint}; sections are "
                               f"{', '.join(known)}")
        if values is not None and not isinstance(values, dict):
            raise ProfileError(f"{_shown(path)}: section {section} must be a mapping of parameters, "
                               f"got {values!r}")
    return data


def chapter_parameters(stem: str, profile: str) -> dict[str, Any]:
    """The parameters the profile sets for chapter ``stem``: ``profile``, then the profile's
    ``common`` section, then the chapter's own section (which wins).

    The chapter's section must exist (``08_summary: {}`` for a chapter that needs none), so a
    misspelled or forgotten section never silently runs the notebook's built-in sizes."""
    data = load_profile(profile)
    if stem not in data:
        raise ProfileError(f"{_shown(profile_path(profile))} has no section {stem}: add it "
                           f"(`{stem}: {{}}` keeps the chapter's defaults)")
    merged: dict[str, Any] = {"profile": profile}
    merged.update(data.get("common") or {})
    merged.update(data.get(stem) or {})
    return merged


# ----------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Declared:
    """One line of a chapter's ``parameters`` cell: ``name: type = default  # help``."""

    name: str
    type: str
    default: Any
    help: str


_PARAMETERS_CELL = re.compile(r"^# %%.*\btags=\[[^\]]*[\"']parameters[\"']", re.M)


def declared_parameters(stem: str, root: Path | None = None) -> dict[str, Declared]:
    """The parameters chapter ``stem`` declares in its ``parameters`` cell (read from the
    Jupytext source ``notebooks/<stem>.py``, in order), with their types and defaults."""
    source = ((root or repo_root()) / "notebooks" / f"{stem}.py").read_text()
    start = _PARAMETERS_CELL.search(source)
    if start is None:
        raise ProfileError(f"notebooks/{stem}.py has no cell tagged 'parameters'")
    body = source[start.end():].split("\n", 1)[1]
    body = re.split(r"^# %%", body, maxsplit=1, flags=re.M)[0]
    lines = body.splitlines()
    out: dict[str, Declared] = {}
    for node in ast.parse(body).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, kind = node.target.id, ast.unparse(node.annotation)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, kind = node.targets[0].id, ""
        else:
            continue
        default = ast.literal_eval(node.value)
        kind = kind or type(default).__name__
        line = lines[node.lineno - 1]
        out[name] = Declared(name, kind, default, line.split("#", 1)[1].strip() if "#" in line else "")
    return out


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """What a parameter may be, beyond its declared type. For a list, the bounds, ``choices``
    and ``pattern`` apply to each entry. ``among`` names another parameter (``"ks"``, or
    ``"05_equivariant_sae.ks"`` in another chapter) whose value(s) this one's must be among."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None  # a regex the whole string must match
    pattern_text: str = ""      # how the pattern reads to a person
    nonempty: bool = False
    distinct: bool = False
    among: str | None = None
    not_values: tuple[Any, ...] = ()


_INT1 = Rule(lo=1)
_RATE = Rule(lo=0.0, hi=1.0, lo_open=True)
_COUNTS = Rule(lo=1, nonempty=True, distinct=True)

#: The constraints of every chapter's parameters (the declared type is checked for every
#: parameter, ruled here or not). ``common`` applies to every chapter.
RULES: dict[str, dict[str, Rule]] = {
    "common": {
        "profile": Rule(choices=PROFILES),
        "seed": Rule(lo=0),
        "device": Rule(pattern=r"auto|cpu|cuda(:[0-9]+)?", pattern_text="auto, cpu, cuda or cuda:N"),
    },
    "01_groups": {"image_size": Rule(lo=16, hi=256), "n_samples": Rule(lo=100)},
    "02_dataset": {"n_samples": Rule(lo=100), "n_show": Rule(lo=1, hi=128),
                   "layout": Rule(choices=("upright", "independent"))},
    "03_base_models": {
        "n_train": _INT1, "n_heldout": _INT1, "mlp_epochs": _INT1, "cnn_epochs": _INT1,
        "batch_size": _INT1, "lr": _RATE, "n_show": Rule(lo=1, hi=16), "n_seeds": Rule(lo=1, hi=100),
        "jobs": Rule(lo=0),
    },
    "04_fitting_m": {
        "epochs": _INT1, "paper_epochs": _INT1, "constrained_epochs": _INT1, "batch_size": _INT1, "lr": _RATE,
        "penalty": Rule(lo=0.0), "jobs": Rule(lo=0),
    },
    "05_equivariant_sae": {
        "ks": _COUNTS, "expansion": Rule(lo=1, hi=1024), "d_hidden": _INT1, "n_epochs": _INT1,
        "invariant_epochs": _INT1, "batch_size": _INT1, "lr": _RATE,
        "lr_decay_fraction": Rule(lo=0.0, hi=1.0), "aux_coefficient": Rule(lo=0.0),
        "dead_window": _INT1, "n_eval": Rule(lo=10), "invariance_threshold": Rule(lo=-1.0, hi=1.0),
        "feature_k": Rule(among="ks"), "n_features_shown": Rule(lo=1, hi=16), "jobs": Rule(lo=0),
    },
    "06_probing": {
        "n_train": Rule(lo=20), "n_test": Rule(lo=20),
        "figure3_ks": Rule(nonempty=True, among="05_equivariant_sae.ks"),
        "figure3_tasks_per_group": Rule(lo=0),
        "figure7_panels": Rule(pattern=r"(mlp|cnn)/L([1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|25[0-6])",
                               pattern_text="'<mlp|cnn>/L<length 1..256>', e.g. 'cnn/L32'"),
        "figure7_ks": Rule(nonempty=True, among="05_equivariant_sae.ks"),
        "figure7_tasks_per_group": Rule(lo=0),
        "compared_saes": Rule(choices=("regular", "wide", "two_layer", "invariant", "equivariant"),
                              nonempty=True, distinct=True),
        "probes": Rule(choices=("knn", "logreg", "xgboost"), nonempty=True, distinct=True),
        "xgb_max_bin": Rule(lo=2), "n_jobs": Rule(lo=-1, not_values=(0,)),
        "sweep_lengths": Rule(lo=1, hi=256, nonempty=True),
        "xgb_estimators": _INT1,
        "sweep_ks": Rule(nonempty=True, among="05_equivariant_sae.ks"),
        "sweep_tasks_per_group": Rule(lo=0),
    },
    "06b_beyond": {
        "n_seeds": Rule(lo=1, hi=100), "jitter": Rule(lo=0.0, hi=1.0, lo_open=True),
        "base_models": Rule(choices=("mlp", "cnn"), nonempty=True, distinct=True),
        "n_train": Rule(lo=64), "n_heldout": Rule(lo=16),
        "base_epochs": _INT1, "base_lr": _RATE, "ks": Rule(lo=1, hi=2048, nonempty=True, distinct=True),
        "sae_epochs": _INT1, "invariant_epochs": _INT1, "sae_batch_size": _INT1, "sae_lr": _RATE, "m_epochs": _INT1,
        "n_probe_train": Rule(lo=20), "n_probe_test": Rule(lo=20),
        "lengths": Rule(lo=1, hi=256, nonempty=True, distinct=True), "tasks_per_group": Rule(lo=0),
        "xgb_estimators": _INT1, "xgb_max_bin": Rule(lo=2), "n_jobs": Rule(lo=-1, not_values=(0,)),
        "jobs": Rule(lo=0), "digits_hidden": Rule(lo=4, hi=1024), "digits_epochs": _INT1,
        "digits_ks": Rule(lo=1, nonempty=True, distinct=True), "digits_sae_epochs": _INT1,
        "digits_invariant_epochs": _INT1, "digits_lengths": Rule(lo=1, nonempty=True, distinct=True),
        "digits_orientation_tasks": Rule(lo=0, hi=40),
    },
    "07_sae_match": {
        "torch_threads": Rule(lo=0), "jobs": Rule(lo=0), "model": Rule(choices=("gemma-3-270m", "google/gemma-2-2b", "tiny-random")),
        "sae_source": Rule(choices=("train", "gemma-scope")), "layers": Rule(lo=0, distinct=True),
        "context_len": Rule(lo=8, hi=8192), "n_train_tokens": Rule(lo=0), "n_eval_tokens": _INT1,
        "n_loss_windows": _INT1, "d_sae": _INT1, "target_l0": Rule(lo=0.0, lo_open=True),
        "sae_sparsity_loss": Rule(choices=("step", "quadratic")), "sae_l0_coefficient": Rule(lo=0.0),
        "sae_steps": _INT1, "sae_batch_size": _INT1, "sae_lr": _RATE, "persistence_distance": _INT1,
        "persistence_stride": _INT1, "gt_n_layers": Rule(lo=2), "gt_d": _INT1, "gt_n_features": _INT1,
        "gt_n_samples": _INT1, "gt_steps": _INT1, "gt_noises": Rule(lo=0.0, nonempty=True),
        "gt_scale_spread": Rule(lo=1.0), "loss_head_dtype": Rule(choices=HEAD_DTYPES),
        "sae_dtype": Rule(choices=MATMUL_DTYPES),
        "loss_every_pair": Rule(choices=("folded", "unfolded", "unfolded_decoder", "data_based", "own", "layer_drop"),
                                distinct=True),
    },
    "07b_your_model": {
        "n_train": Rule(lo=64), "n_test": Rule(lo=16), "train_epochs": Rule(lo=0), "fit_epochs": _INT1,
        "sae_epochs": _INT1, "k": Rule(lo=1, hi=64), "expansion": Rule(lo=1, hi=64), "batch_size": Rule(lo=1, hi=1024),
        "lr": _RATE, "invariance_threshold": Rule(lo=-1.0, hi=1.0),
    },
    "08_summary": {},
}

_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                      "list": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}
_TYPE_WORDS = {"int": "an int", "float": "a number", "str": "a string", "bool": "true or false",
               "list": "a list", "tuple": "a list", "dict": "a mapping"}


def _is(kind: str, value: Any) -> bool:
    base = kind.split("[", 1)[0].lower()
    if base not in _TYPES:
        return True
    if isinstance(value, bool) and base != "bool":
        return False
    return isinstance(value, _TYPES[base])


def _allowed(rule: Rule) -> str:
    """How the rule reads: ``>= 1``, ``in (0, 1]``, ``one of 'a', 'b'``."""
    if rule.choices is not None:
        return "one of " + ", ".join(repr(c) for c in rule.choices)
    if rule.pattern is not None:
        return rule.pattern_text or f"matching {rule.pattern}"
    return _range(rule.lo, rule.hi, rule.lo_open).strip()


def _entry_problem(rule: Rule, v: Any) -> str | None:
    """Why ``v`` breaks the rule's bounds, choices or pattern (``None`` when it does not)."""
    if rule.choices is not None and v not in rule.choices:
        return _allowed(rule)
    if rule.pattern is not None and not (isinstance(v, str) and re.fullmatch(rule.pattern, v)):
        return _allowed(rule)
    if rule.lo is not None or rule.hi is not None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "a number " + _allowed(rule)
        low = rule.lo is not None and (v <= rule.lo if rule.lo_open else v < rule.lo)
        if low or (rule.hi is not None and v > rule.hi):
            return _allowed(rule)
    if v in rule.not_values:
        return f"{_allowed(rule)} and not " + ", ".join(repr(x) for x in rule.not_values)
    return None


def validate_parameters(stem: str, params: Mapping[str, Any], declared: Mapping[str, Declared],
                        upstream: Mapping[str, Mapping[str, Any]] | None = None, where: str = "") -> None:
    """Check every parameter of chapter ``stem`` before it runs: declared by the chapter, of the
    declared type, within its :data:`RULES`. ``upstream`` maps other chapters' stems to their
    resolved parameters (for rules such as "figure3_ks among 05_equivariant_sae's ks").
    Raises :class:`ProfileError` whose one-line message starts with ``where`` (the profile
    file) and names the chapter, the parameter, what is allowed and the value received."""
    prefix = f"{where}, {stem}" if where else stem
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ProfileError(f"{prefix}: unknown parameter {', '.join(unknown)}; the chapter declares "
                           f"{', '.join(declared)}")
    rules = {**RULES["common"], **RULES.get(stem, {})}
    full = {**{d.name: d.default for d in declared.values()}, **params}
    for name, value in params.items():
        kind = declared[name].type
        base = kind.split("[", 1)[0].lower()
        if not _is(kind, value):
            raise ProfileError(f"{prefix}: {name} must be {_TYPE_WORDS.get(base, kind)}"
                               f"{_type_hint(rules.get(name))}, got {value!r}")
        values = list(value) if base in ("list", "tuple") else [value]
        each = "each entry of " if base in ("list", "tuple") else ""
        item = _item_type(declared[name])
        for v in values if each and item else ():
            if not _is(item, v):
                raise ProfileError(f"{prefix}: {each}{name} must be {_TYPE_WORDS[item]}, got {v!r}")
        rule = rules.get(name)
        if rule is None:
            continue
        if rule.nonempty and not values:
            raise ProfileError(f"{prefix}: {name} must be a non-empty list, got {value!r}")
        if rule.distinct and len(set(map(repr, values))) != len(values):
            raise ProfileError(f"{prefix}: {name} must not repeat an entry, got {value!r}")
        for v in values:
            problem = _entry_problem(rule, v)
            if problem is not None:
                raise ProfileError(f"{prefix}: {each}{name} must be {problem}, got {v!r}")
        if rule.among is not None:
            other_stem, _, other = rule.among.rpartition(".")
            source = full if not other_stem else (upstream or {}).get(other_stem)
            if source is None or other not in source:
                continue
            pool = source[other] if isinstance(source[other], (list, tuple)) else [source[other]]
            missing = [v for v in values if v not in pool]
            if missing:
                whose = f"{other_stem}'s {other}" if other_stem else other
                what = "a subset of" if base in ("list", "tuple") else "one of"
                raise ProfileError(f"{prefix}: {name} must be {what} {whose} {list(pool)}, got {value!r}")


def _item_type(d: Declared) -> str | None:
    """The type of a list parameter's entries: from ``list[int]``, else from its default's entries."""
    inner = re.fullmatch(r"(?:list|tuple)\[(\w+)(?:, \.\.\.)?\]", d.type)
    if inner and inner.group(1) in _TYPES:
        return inner.group(1)
    kinds = {type(v).__name__ for v in d.default} if isinstance(d.default, (list, tuple)) else set()
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 and next(iter(kinds)) in _TYPES else None


def _type_hint(rule: Rule | None) -> str:
    text = _allowed(rule) if rule is not None else ""
    if not text:
        return ""
    return f" ({text})" if rule.choices is not None or rule.pattern is not None else f" {text}"


#: The other chapters whose parameters a chapter needs, because it rebuilds their stages' configs
#: (chapter 5 loads chapter 3's base models and chapter 4's M through :mod:`esae.pipeline`; chapter
#: 2's table counts what a chapter-3 training set covers). The book injects them into the chapter as
#: one parameter, ``upstream``: ``{stem: that chapter's resolved parameters}`` (without its
#: ``profile``, ``device`` and own ``upstream``), from the same profile, so a chapter never reads
#: a profile behind papermill's back.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "02_dataset": ("03_base_models",),
    "03_base_models": ("02_dataset",),
    "04_fitting_m": ("02_dataset", "03_base_models"),
    "05_equivariant_sae": ("02_dataset", "03_base_models", "04_fitting_m"),
    "06_probing": ("02_dataset", "03_base_models", "04_fitting_m", "05_equivariant_sae"),
}
_NOT_UPSTREAM = ("profile", "device", "upstream", "jobs")


def upstream_parameters(stem: str, profile: str, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """What the book injects into chapter ``stem`` as ``upstream`` under ``profile``: for each
    chapter of :data:`UPSTREAM`, its validated parameters (declared defaults overridden by the
    profile), less ``profile``, ``device`` and ``upstream``. ``{}`` for a chapter that needs none."""
    return {other: {k: v for k, v in _resolved(other, profile, root, upstream=False).items() if k not in _NOT_UPSTREAM}
            for other in UPSTREAM.get(stem, ())}


def resolved_parameters(stem: str, profile: str, root: Path | None = None) -> dict[str, Any]:
    """Every parameter of chapter ``stem`` under ``profile``, validated: the notebook's declared
    defaults overridden by the profile (:func:`chapter_parameters`), and, where the chapter declares
    ``upstream``, the parameters of the chapters it builds on (:func:`upstream_parameters`). What the
    book injects and what ``python -m esae.book params`` writes for ``papermill -f``."""
    return _resolved(stem, profile, root, upstream=True)


def _resolved(stem: str, profile: str, root: Path | None, upstream: bool) -> dict[str, Any]:
    root = root or repo_root()
    declared = declared_parameters(stem, root)
    given = chapter_parameters(stem, profile)
    others = {}
    for rule in {**RULES["common"], **RULES.get(stem, {})}.values():
        other_stem = (rule.among or "").rpartition(".")[0]
        if other_stem and other_stem not in others:
            others[other_stem] = {**{d.name: d.default for d in declared_parameters(other_stem, root).values()},
                                  **chapter_parameters(other_stem, profile)}
    resolved = {**{d.name: d.default for d in declared.values()}, **given}
    unknown = sorted(set(given) - set(declared))
    # every parameter is checked, the notebook's defaults too; unknown names first, as given
    validate_parameters(stem, given if unknown else resolved, declared, others,
                        where=_shown(profile_path(profile)))
    if "upstream" in given:
        raise ProfileError(f"{_shown(profile_path(profile))}, {stem}: upstream is set by the book from the other "
                           f"chapters' sections, not in a profile")
    if upstream and "upstream" in declared:
        resolved["upstream"] = upstream_parameters(stem, profile, root)
    return resolved


# ----------------------------------------------------------------------------- the run's own parameters


def _injected_cell(history: Sequence[str]) -> str | None:
    """The last cell papermill injected (it starts with ``# Parameters``) in a kernel's input history."""
    for source in reversed(history):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            return source
    return None


@dataclass(frozen=True)
class KernelRun:
    """The parameters a chapter's kernel runs with (``values``: declared defaults overridden by
    what papermill injected) and the names papermill injected (``injected``)."""

    values: dict[str, Any]
    injected: frozenset[str]


def kernel_run(stem: str, root: Path | None = None) -> KernelRun | None:
    """The parameters this Jupyter kernel's chapter ``stem`` runs with: its declared defaults,
    overridden by what papermill injected (read from the kernel's input history, so a notebook
    that later rebinds a name does not count). ``None`` outside a kernel or without the source."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None:
        return None
    try:
        values = {d.name: d.default for d in declared_parameters(stem, root).values()}
    except (OSError, ProfileError, SyntaxError, ValueError):
        return None
    history = shell.user_ns.get("In") or []
    injected = _injected_cell(history)
    names = set()
    if injected is not None:
        for node in ast.parse(injected).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                names.add(node.targets[0].id)
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    values[node.targets[0].id] = object()  # not a literal: matches no profile value
    return KernelRun(values, frozenset(names))


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _differences(run: Any, expected: Any) -> Any:
    """What of ``run`` differs from ``expected``: the value itself, or for a mapping of mappings
    (``upstream``) only the entries that differ."""
    if isinstance(run, dict) and isinstance(expected, dict):
        out = {}
        for k, v in run.items():
            if k not in expected:
                out[k] = v
            elif v != expected[k]:
                out[k] = _differences(v, expected[k])
        return out
    return run


def check_run(stem: str, profile: str) -> dict[str, Any]:
    """Inside a chapter's kernel: validate the parameters papermill injected (as the book runner
    validates a profile: one line naming the parameter, what is allowed and the value received),
    and fail unless every parameter that was *not* injected has the profile's value, so a notebook's
    built-in sizes never run under a profile's name. Returns the injected parameters that differ
    from the profile (``papermill -f <profile's parameters> -p epochs 3``): the overrides, which
    :func:`esae.results.write_results` records next to the numbers. A no-op (``{}``) outside a
    Jupyter kernel. ``upstream``, when not injected, is the profile's (:func:`upstream_parameters`)."""
    run = kernel_run(stem)
    if run is None:
        return {}
    declared = declared_parameters(stem)
    injected = {k: v for k, v in run.values.items() if k in run.injected}
    upstream = run.values.get("upstream") if isinstance(run.values.get("upstream"), dict) else None
    validate_parameters(stem, injected, declared, upstream, where="injected parameters")
    expected = resolved_parameters(stem, profile)
    differ = [k for k in expected if k in run.values and k not in run.injected and k != "upstream"
              and run.values[k] != expected[k]]
    if differ:
        shown = "; ".join(f"{k}={_short(run.values[k])} where {_shown(profile_path(profile))} has {_short(expected[k])}"
                          for k in differ[:3]) + ("; ..." if len(differ) > 3 else "")
        raise ProfileError(
            f"{stem} runs with parameters that are not profile {profile!r}'s ({shown}), so its results "
            f"would be mislabelled: run `make chapter N={chapter_number(stem)} PROFILE={profile}`, or papermill with "
            f"`-f` on the file `python -m esae.book params {chapter_number(stem)} --profile {profile}` writes "
            f"(then `-p name value` overrides one parameter, recorded in the results)")
    return {k: _differences(v, expected[k]) for k, v in injected.items()
            if k in expected and v != expected[k]}
