"""Registries: a component (a net, a training method, a sampler) is a name, a builder, its own
config section and its own checks. `genkit.config` assembles the run's config from them, so a new
component touches its own module and one `register` line.

Errors speak the library's terms: `ConfigError` names a config key (`model.unet.channels`),
`ArgumentError` a Python parameter (`labels`); the command line maps parameters to its flags.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable


class ConfigError(ValueError):
    """A mistake in a config file or override, named by its dotted key: 'key: problem'."""

    @property
    def problem(self) -> str:
        return str(self).split(": ", 1)[-1]


class ArgumentError(ValueError):
    """A bad argument to a library call, named by the parameter: `str(err)` is 'name: problem'."""

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument}: {problem}")
        self.argument, self.problem = argument, problem


@dataclass(frozen=True)
class Component:
    """One registered choice.

    `build` makes the thing; `config` is the dataclass of its options (its config section, named
    after the component), or None; `check(cfg)` raises `ConfigError` for a run config the component
    cannot serve; `family` groups components that work together ("denoiser", "autoregressive");
    `extra` holds what else the registry's users need (a sampler's default time grid).
    """

    name: str
    build: Callable
    config: type | None = None
    check: Callable[[Any], None] | None = None
    family: str = "denoiser"
    extra: dict = dataclasses.field(default_factory=dict)

    def __call__(self, *args, **kwargs):
        return self.build(*args, **kwargs)


class Registry(dict):
    """name -> `Component` for one kind of component ("net", "method", "sampler")."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str, build: Callable, config: type | None = None,
                 check: Callable[[Any], None] | None = None, family: str = "denoiser", **extra) -> Component:
        if name in self:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self[name] = Component(name, build, config, check, family, extra)
        return self[name]

    def names(self, family: str | None = None) -> list[str]:
        return [n for n, c in self.items() if family is None or c.family == family]

    def lookup(self, name: str, key: str, family: str | None = None) -> Component:
        """The component `name`, or a `ConfigError` at `key` listing the choices of `family`."""
        choices = self.names(family)
        if name not in choices:
            raise ConfigError(f"{key}: unknown {self.kind} {name!r}; choose from {', '.join(choices)}")
        return self[name]


MAX_LAYERS = 1000  # a stack deeper than this is a typo: building it would fill memory block by block


def require(section, prefix: str, positive=(), non_negative=(), unit=(), layers=()) -> None:
    """Range checks on fields of a config section: > 0, >= 0, in [0, 1), and layer counts in
    1..`MAX_LAYERS`."""
    for name in layers:
        if not 0 < getattr(section, name) <= MAX_LAYERS:
            raise ConfigError(f"{prefix}.{name}: must lie in 1..{MAX_LAYERS}, got {getattr(section, name)}")
    for name in positive:
        if not getattr(section, name) > 0:
            raise ConfigError(f"{prefix}.{name}: must be positive, got {getattr(section, name)}")
    for name in non_negative:
        if getattr(section, name) < 0:
            raise ConfigError(f"{prefix}.{name}: must not be negative, got {getattr(section, name)}")
    for name in unit:
        if not 0 <= getattr(section, name) < 1:
            raise ConfigError(f"{prefix}.{name}: must lie in [0, 1), got {getattr(section, name)}")


def one_of(value, allowed, key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")
