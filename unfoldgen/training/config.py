# ruff: noqa: RUF009 (setting() is dataclasses.field() with metadata, not a shared default value)
"""Every training setting, written once.

A setting is one field: of ``Config`` (what ``fit`` uses) or of ``Launch`` (what ``unfoldgen
train`` adds around it: the spec, the data, the model's size, the processes). The field's
metadata (``setting(...)``) holds its help text, how a command-line string becomes its value,
the check its value must pass and whether ``--resume`` may change it. The command-line options,
their defaults and help, the checks of ``fit``'s config and of the command line, the run record a
checkpoint stores and the resume rules are all derived from the fields, so adding a training
option is adding one field (and using it).

Safe to change on ``--resume`` (``resume=True`` on the field): how long and how fast the run goes
on (steps, the learning-rate schedule, clipping, validation and checkpoint intervals, patience) and
how it runs (stop-after, processes, threads, device, progress). What decides what is trained on
what (spec, unfold, data, layers, overrides, dtype, scheme, loss, batch, validation size, seed …)
is refused by name: the checkpoint would no longer describe the run. The refusal lists the flags
``--resume`` takes.

No torch here: the command line imports this module for every command.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

SCHEMES = ("supervised", "unsupervised", "deep-supervision", "layerwise")
LOSSES = ("nmse", "mse")
LAYER_WEIGHTS = ("uniform", "linear", "last")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda", "auto")


class ConfigError(ValueError):
    """A setting has a value it cannot take; the message names the setting, the value and what
    was expected."""


# ---------------------------------------------------------------------- checks and parsers
# A check returns None when the value is fine, else what was expected ("an integer ≥ 1").


def at_least(low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        return None if ok else f"an integer ≥ {low}"

    return check


def positive(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    return None if ok else "a finite number > 0"


def non_negative(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    return None if ok else "a finite number ≥ 0"


def one_of(choices: Sequence[str]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(choices)}"

    return check


def milestones_check(value: Any) -> str | None:
    ok = all(isinstance(v, int) and v >= 1 for v in value) and list(value) == sorted(value)
    return None if ok else "increasing step numbers ≥ 1"


def layer_weights_check(value: Any) -> str | None:
    expected = f"{', '.join(LAYER_WEIGHTS)} or non-negative numbers with a positive sum"
    if isinstance(value, str):
        return None if value in LAYER_WEIGHTS else expected
    numbers = list(value)
    ok = all(math.isfinite(w) and w >= 0 for w in numbers) and sum(numbers) > 0
    return None if ok else expected


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_weights(text: str) -> str | list[float]:
    return text if text in LAYER_WEIGHTS else [float(w) for w in text.split(",")]


def parse_text(text: str) -> str:
    return text


# ---------------------------------------------------------------------- the field metadata


@dataclass(frozen=True)
class Setting:
    help: str
    parse: Callable[[str], Any]
    check: Callable[[Any], str | None] | None
    resume: bool  # --resume may change it
    cli: bool  # on the command line
    flags: tuple[str, ...]  # () for --name-with-dashes; ("spec",): a positional argument
    metavar: str | None
    repeat: bool  # a list given by repeating the flag (--set a=1 --set b=2)
    switch: Any  # for an on/off flag: the value the flag sets


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    check: Callable[[Any], str | None] | None = None,
    choices: Sequence[str] | None = None,
    resume: bool = False,
    flags: tuple[str, ...] | None = None,
    metavar: str | None = None,
    repeat: bool = False,
    switch: Any = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its metadata. ``parse`` defaults to the default's type; ``choices``
    gives the check and the help's list; ``flags`` defaults to ``--name-with-dashes``."""
    if choices is not None:
        check = one_of(choices)
        help += f" ({' | '.join(choices)})"
    if parse is None:
        parse = parse_text if default is None or repeat else type(default)
    metadata = {"setting": Setting(help, parse, check, resume, cli, flags or (), metavar, repeat, switch)}
    if repeat:
        return field(default_factory=list, metadata=metadata)
    return field(default=default, metadata=metadata)


def meta(spec: Field) -> Setting:
    return spec.metadata["setting"]


def flags_of(spec: Field) -> tuple[str, ...]:
    """The command-line flags of a field: its own, else ``--name-with-dashes``."""
    found = meta(spec).flags
    return found if found else ("--" + spec.name.replace("_", "-"),)


def flag_name(spec: Field) -> str:
    """How messages name the setting on the command line: its long flag, or SPEC."""
    flag = flags_of(spec)[-1]
    return flag if flag.startswith("-") else flag.upper()


def problem(spec: Field, value: Any) -> str | None:
    """What the field expected, when ``value`` is not acceptable (None always is: 'not set')."""
    check = meta(spec).check
    if value is None or check is None:
        return None
    if meta(spec).repeat:
        return next((bad for bad in map(check, value) if bad), None)
    return check(value)


def validate(settings: Any) -> None:
    """Check every field of a Config or Launch: a ConfigError names the first bad one."""
    for spec in fields(settings):
        value = getattr(settings, spec.name)
        expected = problem(spec, value)
        if expected:
            raise ConfigError(f"{spec.name}={value!r}: expected {expected}")


# ---------------------------------------------------------------------- the settings


@dataclass
class Config:
    """How ``fit`` trains (``fit(model, data, Config(steps=500, lr=3e-3))``)."""

    scheme: str = setting("supervised", "training scheme", choices=SCHEMES)
    steps: int = setting(300, "Adam steps in all", check=at_least(1), resume=True)
    batch: int = setting(64, "global batch size (split over --nproc ranks)", check=at_least(1))
    lr: float = setting(1e-2, "learning rate", check=positive, resume=True)
    milestones: list[int] | None = setting(
        None,
        "absolute steps where lr *= gamma (default: half and three quarters of the way)",
        parse=parse_ints,
        check=milestones_check,
        resume=True,
        metavar="S1,S2,...",
    )
    gamma: float = setting(0.3, "learning-rate factor at each milestone", check=positive, resume=True)
    warmup: int = setting(
        0,
        "raise lr linearly over the first N steps of each phase (against early Adam spikes)",
        check=at_least(0),
        resume=True,
    )
    loss: str = setting("nmse", "supervised loss", choices=LOSSES)
    layer_weights: str | list[float] = setting(
        "uniform",
        "deep supervision: uniform | linear | last | w1,w2,...,wK",
        parse=parse_weights,
        check=layer_weights_check,
        flags=("--weights",),
    )
    finetune_factor: float = setting(0.2, "layerwise: fine-tuning lr = lr * this factor", check=positive)
    clip: float | None = setting(10.0, "gradient-norm clipping (0: off)", check=non_negative, resume=True)
    val_size: int = setting(1000, "validation samples (an .npz holds out its own split)", check=at_least(1))
    val_every: int = setting(25, "validate every this many steps", check=at_least(1), resume=True)
    patience: int | None = setting(
        None,
        "early stopping after this many validations without gain (default: never)",
        parse=int,
        check=at_least(1),
        resume=True,
    )
    checkpoint_every: int = setting(50, "write checkpoint.pt every this many steps", check=at_least(1), resume=True)
    restore_best: bool = setting(True, "keep the best validated parameters of each phase", cli=False)
    seed: int = setting(0, "seeds the data and the nets' initialisation", check=at_least(0))

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Launch:
    """What ``unfoldgen train`` needs around ``Config``: the spec, the data, the model, the run."""

    spec: str | None = setting(None, "the spec file (not with --resume)", flags=("spec",))
    unfold: str | None = setting(None, "the unfold block to train (needed when the spec has several)")
    data: str | None = setting(
        None,
        "sparse:m=20,n=40,p=0.1,snr=40 | rpca:m=20,n=20,rank=2,outliers=0.05,noise=0.01 | "
        "detection:m=16,n=8,modulation=bpsk|4pam|qpsk|16qam,snr=10|5:20,channel=rayleigh|kronecker | "
        "image:size=64,noise=0.01 | mri:size=128,acceleration=4,noise=0.01 | FILE.npz (arrays named after the spec)",
        metavar="SOURCE",
    )
    layers: int | None = setting(None, "override the spec's number of layers K", parse=int, check=at_least(1))
    overrides: list[str] = setting(
        help="constructor override, e.g. lam=0.05, W=analytic", repeat=True, flags=("--set",), metavar="NAME=VALUE"
    )
    baselines: list[str] = setting(
        help="another unfold of the spec to compare against", repeat=True, flags=("--baseline",), metavar="UNFOLD"
    )
    dtype: str = setting("float32", "floating-point type of the model and data", choices=DTYPES)
    device: str = setting("cpu", "where to train", choices=DEVICES, resume=True)
    out: str | None = setting(None, "output folder (default runs/UNFOLD)", flags=("-o", "--out"), metavar="DIR")
    resume: str | None = setting(None, "continue the run in DIR exactly", metavar="DIR")
    stop_after: int | None = setting(
        None, "stop (resumably) once STEP steps are done", parse=int, check=at_least(0), resume=True, metavar="STEP"
    )
    nproc: int = setting(1, "data-parallel processes (torch.distributed.run)", check=at_least(1), resume=True)
    threads: int = setting(1, "torch threads per process (small nets: 1 is fastest)", check=at_least(1), resume=True)
    progress: bool = setting(True, "no progress bar", flags=("--no-progress",), switch=False, resume=True)

    def __post_init__(self) -> None:
        validate(self)


# ---------------------------------------------------------------------- the command line from the fields


def add_arguments(parser: argparse.ArgumentParser, *classes: type) -> None:
    """One option per field. Values stay strings here (no argparse ``type``): ``from_arguments``
    parses and checks them, so a bad value is one line naming the flag and what was expected.
    Nothing has an argparse default, so what the user gave is told apart from what they did not."""
    for cls in classes:
        for spec in fields(cls):
            info = meta(spec)
            if not info.cli:
                continue
            shown = (
                f"{info.help} (default: {_shown(spec.default)})" if spec.default not in (None, MISSING) else info.help
            )
            if info.switch is not None:
                parser.add_argument(
                    *flags_of(spec),
                    dest=spec.name,
                    action="store_const",
                    const=info.switch,
                    default=argparse.SUPPRESS,
                    help=info.help,
                )
            elif not flags_of(spec)[0].startswith("-"):
                parser.add_argument(spec.name, nargs="?", default=argparse.SUPPRESS, help=shown)
            else:
                parser.add_argument(
                    *flags_of(spec),
                    dest=spec.name,
                    action="append" if info.repeat else "store",
                    default=argparse.SUPPRESS,
                    metavar=info.metavar,
                    help=shown,
                )


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def parse_given(given: Mapping[str, Any], *classes: type) -> dict[str, Any]:
    """The user's strings as values, each checked: ``{field name: value}`` for what was given."""
    specs = {spec.name: spec for cls in classes for spec in fields(cls)}
    values = {}
    for name, raw in given.items():
        spec = specs[name]
        info = meta(spec)
        flag = flag_name(spec)
        if info.switch is not None:
            values[name] = raw
            continue
        try:
            value = [info.parse(item) for item in raw] if info.repeat else info.parse(raw)
        except ValueError:
            raise ConfigError(f"{flag} {raw}: expected {_expected_type(info)}") from None
        expected = problem(spec, value)
        if expected:
            raise ConfigError(f"{flag} {raw}: expected {expected}")
        values[name] = value
    return values


def _expected_type(info: Setting) -> str:
    return {int: "an integer", float: "a number", parse_ints: "comma-separated integers"}.get(
        info.parse, "comma-separated numbers or " + ", ".join(LAYER_WEIGHTS)
    )


def split(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Values by name → (Config's, Launch's)."""
    names = {spec.name for spec in fields(Config)}
    return {k: v for k, v in values.items() if k in names}, {k: v for k, v in values.items() if k not in names}


def refused_on_resume(given: Mapping[str, Any]) -> list[str]:
    """The flags given with --resume that it may not change."""
    specs = {spec.name: spec for cls in (Config, Launch) for spec in fields(cls)}
    return [flag_name(specs[name]) for name in given if name != "resume" and not meta(specs[name]).resume]


def resume_flags() -> list[str]:
    """The flags ``--resume`` takes."""
    return [flag_name(spec) for cls in (Config, Launch) for spec in fields(cls) if meta(spec).resume and meta(spec).cli]


def known(cls: type, stored: Mapping[str, Any]) -> dict[str, Any]:
    """The stored settings that ``cls`` still has (a checkpoint may predate a removed one)."""
    names = {spec.name for spec in fields(cls)}
    return {name: value for name, value in stored.items() if name in names}


def resumable(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` that a resumed run may change."""
    return tuple(spec.name for spec in fields(cls) if meta(spec).resume)


@dataclass
class CertifySettings:
    """What ``unfoldgen certify`` checks: a trained run (its folder, model.pt or checkpoint.pt), or
    an unfold of a spec built on a data source (untrained, or with a run's parameter file)."""

    run: str | None = setting(
        None, "a `unfoldgen train` output folder, or its model.pt or checkpoint.pt", flags=("run",)
    )
    spec: str | None = setting(None, "certify an unfold of this spec instead of a run", metavar="SPEC")
    unfold: str | None = setting(None, "the unfold block (needed with --spec when the spec has several)")
    data: str | None = setting(
        None, "with --spec: the data source the model is built on (as for train)", metavar="SOURCE"
    )
    params: str | None = setting(
        None, "with --spec: a model.pt or checkpoint.pt whose parameters to load", metavar="FILE"
    )
    overrides: list[str] = setting(
        help="with --spec: constructor override, e.g. W=analytic", repeat=True, flags=("--set",), metavar="NAME=VALUE"
    )
    layers: int | None = setting(
        None, "the depth to certify for (past the trained depth the last layer repeats)", parse=int, check=at_least(1)
    )
    json: bool = setting(False, "print the certificate as JSON", flags=("--json",), switch=True)

    def __post_init__(self) -> None:
        validate(self)
