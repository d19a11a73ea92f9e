"""``PluginHost``: finds plugins, isolates their failures, records who provided what.

Built-ins load first, through the same hooks as everyone else; then the ``styleplug`` entry points;
then plugin objects passed in by an embedder. Each plugin's import, validation and each hook call is
guarded on its own, so a broken plugin is reported by name and skipped while the rest keeps working.

Environment switches (read when a host is created):

- ``STYLEPLUG_DISABLE_PLUGINS=a,b``: skip these plugins (entry-point or distribution names);
- ``STYLEPLUG_LOAD_PLUGINS=a,b``: load only these third-party plugins (empty: none);
- ``STYLEPLUG_STRICT_PLUGINS=1``: raise on the first plugin failure, with its traceback.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import inspect
import logging
import math
import numbers
import os
import re
import sys
import types
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy

from .. import hookspecs
from ..errors import PluginError, StyleplugError, UnknownNameError, one_line
from ..losses import ROLES, TILINGS, Loss, uses_old_contract
from ..networks import Network
from ..params import Param

log = logging.getLogger("styleplug.host.plugins")
T = TypeVar("T")

BUILTIN_MODULES = ("styleplug.default_plugins.networks", "styleplug.default_plugins.losses")
ENTRY_POINT_GROUP = "styleplug"
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
# A parameter name is a keyword argument, a CLI option and (after "__") a web API parameter.
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# Hook name -> registry kind, in calling order: networks first, so a plugin's losses may refer to them.
_KINDS = {"register_networks": "networks", "register_losses": "losses"}
_SINGULAR = {"losses": "loss", "networks": "network"}


@dataclass(frozen=True)
class Provider:
    """Which plugin provided something: entry-point (or module) name, distribution and version."""

    name: str
    package: str | None
    version: str | None
    builtin: bool = False

    def __str__(self) -> str:
        return f"plugin '{self.name}'" + (f" ({self.package} {self.version})" if self.package else "")


@dataclass(frozen=True)
class Registered:
    """A registered loss or network class and the plugin that provided it."""

    cls: type
    provider: Provider
    aliases: tuple[str, ...] = ()


@dataclass
class PluginRecord:
    """What ``styleplug plugins`` reports about one plugin."""

    provider: Provider
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=lambda: {"losses": [], "networks": []})
    error: str | None = None
    warning: str | None = None  # loaded, but something is likely wrong (it registers nothing)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.provider.name,
            "package": self.provider.package,
            "version": self.provider.version,
            "builtin": self.provider.builtin,
            "hooks": self.hooks,
            "provides": self.provides,
            "status": "failed" if self.error else "ok",
            "error": self.error,
            "warning": self.warning,
        }


class _Rejected(Exception):
    """A plugin broke the contract; the message says how."""


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    return None if value is None else {name.strip() for name in value.split(",") if name.strip()}


def styleplug_version() -> str:
    try:
        return importlib.metadata.version("styleplug")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class PluginHost:
    """The registry of losses and networks for one embedding; no state is shared between hosts.

    Args:
        plugins: extra plugin objects (modules or instances with ``@hookimpl`` functions).
        entrypoints: discover installed plugins through the ``styleplug`` entry-point group.
        load: only load these third-party plugins (default: ``STYLEPLUG_LOAD_PLUGINS``, else all).
        disable: never load these plugins (default: ``STYLEPLUG_DISABLE_PLUGINS``).
        strict: raise on the first plugin failure (default: ``STYLEPLUG_STRICT_PLUGINS=1``).
    """

    def __init__(
        self,
        plugins: Sequence[object] = (),
        *,
        entrypoints: bool = True,
        load: Collection[str] | None = None,
        disable: Collection[str] | None = None,
        strict: bool | None = None,
    ) -> None:
        self.strict = os.environ.get("STYLEPLUG_STRICT_PLUGINS", "") not in ("", "0") if strict is None else strict
        self._load_only = set(load) if load is not None else _env_names("STYLEPLUG_LOAD_PLUGINS")
        self._disabled = set(disable) if disable is not None else (_env_names("STYLEPLUG_DISABLE_PLUGINS") or set())
        self.losses: dict[str, Registered] = {}
        self.networks: dict[str, Registered] = {}
        self._aliases: dict[str, dict[str, str]] = {"losses": {}, "networks": {}}
        self.records: list[PluginRecord] = []
        self._pm = pluggy.PluginManager("styleplug")
        self._pm.add_hookspecs(hookspecs)

        version = styleplug_version()
        for module in BUILTIN_MODULES:
            self._add(Provider(module, "styleplug", version, builtin=True), functools.partial(importlib.import_module, module))
        if entrypoints:
            for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
                dist = entry_point.dist
                provider = Provider(entry_point.name, dist.name if dist else None, dist.version if dist else None)
                if self._wanted(provider) and provider.name not in {r.provider.name for r in self.records}:
                    self._add(provider, entry_point.load)
        for plugin in plugins:
            provider = Provider(getattr(plugin, "__name__", type(plugin).__name__), None, None)
            if self._wanted(provider):
                self._add(provider, lambda plugin=plugin: plugin)

    # -- loading -------------------------------------------------------------------------------

    def _wanted(self, provider: Provider) -> bool:
        names = {provider.name, provider.package}
        if names & self._disabled:
            return False
        return self._load_only is None or bool(names & self._load_only)

    def _add(self, provider: Provider, load: Callable[[], object]) -> None:
        record = PluginRecord(provider)
        self.records.append(record)
        stage = "import"
        try:
            plugin = load()
            stage = "validation"
            self._pm.register(plugin, name=provider.name)
            try:
                impls = self._hook_impls(plugin, record)
                stage = "registration"
                staged = self._call_hooks(impls, provider)
            except BaseException:
                self._pm.unregister(plugin)
                raise
        except Exception as error:
            message = str(error) if isinstance(error, _Rejected) else f"{type(error).__name__}: {error}"
            if provider.builtin or self.strict:
                raise PluginError(provider.name, provider.package, provider.version, stage, message) from error
            record.error = f"{stage}: {message}"
            log.warning(
                "%s failed at %s and was skipped: %s (set STYLEPLUG_STRICT_PLUGINS=1 for the traceback, "
                "or STYLEPLUG_DISABLE_PLUGINS=%s to silence this)", provider, stage, message, provider.name
            )
            return
        notes = []
        for kind, registered in staged:
            table = self.losses if kind == "losses" else self.networks
            table[registered.cls.name] = registered
            self._aliases[kind].update({alias: registered.cls.name for alias in registered.aliases})
            record.provides[kind].append(registered.cls.name)
            if kind == "losses" and uses_old_contract(registered.cls):
                notes.append(f"loss '{registered.cls.name}' {OLD_CONTRACT_NOTE}")
        if not staged:
            record.warning = f"registers nothing: {_why_nothing(plugin)}"
            if self.strict:
                raise PluginError(provider.name, provider.package, provider.version, "registration", record.warning)
            log.warning("%s %s", provider, record.warning)
        elif notes:
            record.warning = "; ".join(notes)
            if not ({provider.name, provider.package, "all"} & (_env_names("STYLEPLUG_QUIET_PLUGINS") or set())):
                log.warning("%s: %s (STYLEPLUG_QUIET_PLUGINS=%s silences this)", provider, record.warning, provider.name)

    def _hook_impls(self, plugin: object, record: PluginRecord) -> list[tuple[str, Any]]:
        impls = []
        for caller in self._pm.get_hookcallers(plugin) or []:
            if caller.name not in _KINDS:
                close = difflib.get_close_matches(caller.name, _KINDS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; known hooks: {', '.join(_KINDS)}"
                raise _Rejected(f"unknown hook '{caller.name}'{hint}")
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    if impl.hookwrapper or impl.wrapper:
                        raise _Rejected(f"hook wrappers are not supported on {caller.name}")
                    impls.append((caller.name, impl))
                    record.hooks.append(caller.name)
        return sorted(impls, key=lambda pair: list(_KINDS).index(pair[0]))

    def _call_hooks(self, impls: list[tuple[str, Any]], provider: Provider) -> list[tuple[str, Registered]]:
        staged: list[tuple[str, Registered]] = []
        for hook, impl in impls:
            kind = _KINDS[hook]

            def register(cls: type, /, *, aliases: Sequence[str] = (), kind: str = kind) -> None:
                self._validate(kind, cls, tuple(aliases), staged)
                staged.append((kind, Registered(cls, provider, tuple(aliases))))

            result = impl.function(**{arg: register for arg in impl.argnames})
            if result is not None:
                raise _Rejected(f"{hook} returned a value; call register(cls) instead")
        return staged

    # -- validation ----------------------------------------------------------------------------

    def _validate(self, kind: str, cls: Any, aliases: tuple[str, ...], staged: list[tuple[str, Registered]]) -> None:
        base = Loss if kind == "losses" else Network
        if not (inspect.isclass(cls) and issubclass(cls, base) and cls is not base):
            raise _Rejected(f"register_{kind} got {cls!r}; expected a subclass of styleplug.{base.__name__}")
        what = f"{base.__name__.lower()} class {cls.__name__}"
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise _Rejected(f"{what} has name {name!r}; expected lowercase letters, digits, '-' or '_'")
        if not (cls.__doc__ or "").strip():
            raise _Rejected(f"{what} has no docstring; its first line is the summary users see")
        taken = {**{n: r.provider for n, r in self._table(kind).items()}, **self._aliases_of(kind)}
        taken.update({n: r.provider for k, r in staged if k == kind for n in (r.cls.name, *r.aliases)})
        for alias in aliases:
            if not isinstance(alias, str) or not _NAME.match(alias):
                raise _Rejected(f"{what} has alias {alias!r}; expected lowercase letters, digits, '-' or '_'")
        for new in (name, *aliases):
            if kind == "losses" and new == "total":
                raise _Rejected(f"{what} is named 'total', which progress reports use for the sum of all terms; choose another name")
            if new in taken:
                raise _Rejected(f"{_SINGULAR[kind]} name '{new}' is already taken by {taken[new]}")
        _check_params(what, cls.params)
        if kind == "losses":
            _check_loss(what, cls)
        else:
            _check_network(what, cls)

    def _table(self, kind: str) -> dict[str, Registered]:
        return self.losses if kind == "losses" else self.networks

    def _aliases_of(self, kind: str) -> dict[str, Provider]:
        table = self._table(kind)
        return {alias: table[name].provider for alias, name in self._aliases[kind].items()}

    # -- lookups and listings ------------------------------------------------------------------

    def loss(self, name: str) -> Registered:
        """The registered loss called ``name`` (or an alias of it)."""
        return self._lookup("losses", name)

    def network(self, name: str) -> Registered:
        """The registered network called ``name`` (or an alias of it)."""
        return self._lookup("networks", name)

    def _lookup(self, kind: str, name: str) -> Registered:
        table = self._table(kind)
        found = table.get(self._aliases[kind].get(name, name))
        if found is None:
            known = list(table) + list(self._aliases[kind])
            failed = "; ".join(f"{record.provider} failed to load ({record.error})" for record in self.failures)
            raise UnknownNameError(_SINGULAR[kind], name, known, hint=f"Choose one of: {', '.join(known)}."
                                   + (f" Note: {failed}; fix it, or see `styleplug plugins`." if failed else ""))
        return found

    def plugins(self, all: bool = False) -> list[dict[str, Any]]:
        """JSON-ready records of the loaded plugins; built-ins only with ``all=True``."""
        return [r.to_json() for r in self.records if all or not r.provider.builtin]

    @property
    def failures(self) -> list[PluginRecord]:
        return [r for r in self.records if r.error]


def _check_params(what: str, params: Any) -> None:
    if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
        raise _Rejected(f"{what}.params must be a tuple of styleplug.Param")
    names = [p.name for p in params]
    if len(set(names)) != len(names) or {"layers", "weight", "weights"} & set(names):
        raise _Rejected(f"{what}.params has duplicate or reserved names (layers, weight, weights): {names}")
    for param in params:
        if not isinstance(param.name, str) or not _PARAM_NAME.match(param.name):
            raise _Rejected(f"{what} has parameter {param.name!r}; expected lowercase letters and digits in words joined "
                            "by single '_' (e.g. 'max_level'), so that it is a valid keyword, option and web API name")
        try:
            param.coerce(param.default, what)
        except Exception as error:
            raise _Rejected(f"{what}: default of parameter '{param.name}' is invalid: {error}") from None


def _why_nothing(plugin: object) -> str:
    """Why a plugin that loaded registered nothing, as far as can be told from its attributes."""
    unmarked = [name for name in dir(plugin) if difflib.get_close_matches(name, _KINDS, n=1, cutoff=0.8)
                and callable(getattr(plugin, name)) and not hasattr(getattr(plugin, name), "styleplug_impl")]
    if unmarked:
        return f"{', '.join(unmarked)} lacks the @styleplug.hookimpl decorator, so it is never called; add it"
    return "it has no @styleplug.hookimpl function register_losses or register_networks that calls register(cls)"


def _check_weights(what: str, weights: Any) -> None:
    """A network's ``loss_weights``: a mapping of loss names to finite numbers >= 0."""
    if not isinstance(weights, Mapping) or not all(isinstance(name, str) for name in weights):
        raise _Rejected(f"{what}.loss_weights must map loss names to weights, e.g. {{'gram': 1e7}}; got {weights!r}")
    for name, weight in weights.items():
        _check_weight(f"{what}.loss_weights['{name}']", weight)


def _check_weight(where: str, weight: Any) -> None:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
        raise _Rejected(f"{where} is {weight!r}; expected a finite number >= 0")


def _check_loss(what: str, cls: type[Loss]) -> None:
    if getattr(cls, "role", None) not in ROLES:
        raise _Rejected(f"{what} has role {getattr(cls, 'role', None)!r}; expected one of {', '.join(ROLES)}")
    _check_weight(f"{what}.default_weight", cls.default_weight)
    tiling = getattr(cls, "tiling", None)
    if tiling is not None and tiling not in TILINGS:
        raise _Rejected(f"{what}.tiling is {tiling!r}; expected None or one of {', '.join(TILINGS)}")
    if tiling is not None and (cls.sums is Loss.sums or cls.from_sums is Loss.from_sums):
        raise _Rejected(f"{what} sets tiling={tiling!r} but does not implement both sums and from_sums")
    if tiling is not None and not cls.uses_features:
        raise _Rejected(f"{what} works on pixels, which a tiled run computes on the whole image; remove its tiling")
    if cls.call is Loss.call and tiling is None:
        raise _Rejected(f"{what} does not implement call(features, image, target, mask=None), nor sums and from_sums "
                        "with a tiling")


#: What the listing and the log say of a loss written to the contract before ``compute_target``.
OLD_CONTRACT_NOTE = (
    "is written to the old loss contract: the optimiser runs it (under a mask it sees only the region's feature "
    "vectors, as a one-row grid; it is compiled again for every job), but training refuses it. To update it, return "
    "the target from compute_target(features) instead of setting self.target in set_target, and take it in "
    "call(features, image, target, mask=None): see `styleplug docs contracts`")


def _check_network(what: str, cls: type[Network]) -> None:
    layers = getattr(cls, "layers", None)
    if not isinstance(layers, tuple) or not layers or not all(isinstance(layer, str) for layer in layers):
        raise _Rejected(f"{what}.layers must be a non-empty tuple of layer names")
    _check_weights(what, cls.loss_weights)
    for attribute in ("default_content_layers", "default_style_layers"):
        defaults = getattr(cls, attribute, ())
        if not defaults or not set(defaults) <= set(layers):
            raise _Rejected(f"{what}.{attribute} must name layers from {what}.layers")
    for method in ("build", "preprocess"):
        if getattr(cls, method) is getattr(Network, method):
            raise _Rejected(f"{what} does not implement {method}()")


def writes_tensorflow(cls: type) -> bool:
    """Whether ``cls`` (or a base class outside styleplug) comes from a module that uses TensorFlow
    itself (``import tensorflow as tf`` or ``styleplug.lazy.tf``), rather than ``keras.ops``."""
    for klass in cls.__mro__:
        module = sys.modules.get(klass.__module__)
        if module is None or klass.__module__.startswith(("styleplug.", "builtins", "keras")):
            continue
        if any(isinstance(value, types.ModuleType) and value.__name__.partition(".")[0] == "tensorflow"
               for value in vars(module).values()):
            return True
    return False


def check_backend(provider: Provider, kind: str, cls: type, old_contract: bool = False) -> None:
    """Refuse, in one line, a plugin class that runs on TensorFlow only when the backend is another."""
    from ..core import backends

    backend = backends.name()
    if backend == "tensorflow":
        return
    if old_contract:
        why = "is written to the old loss contract (call(features, image)), which runs on TensorFlow only"
    elif writes_tensorflow(cls):
        why = "calls TensorFlow (tf.*), which runs on the TensorFlow backend only"
    else:
        return
    raise PluginError(provider.name, provider.package, provider.version, f"the {backend} backend",
                      f"{kind} '{getattr(cls, 'name', cls.__name__)}' {why}. Fix: write it with keras.ops "
                      "(`styleplug docs plugins`), or run with --backend tensorflow")


def guarded(provider: Provider, stage: str, action: Callable[[], T]) -> T:
    """Run plugin code so that a failure, eager or while TensorFlow traces it, is one line that
    names the plugin and ``stage`` (e.g. "call of loss 'x'")."""
    try:
        return action()
    except StyleplugError:
        raise
    except Exception as error:
        raise PluginError(provider.name, provider.package, provider.version, stage,
                          f"{type(error).__name__}: {one_line(error)}{plugin_location(error)}{tensor_hint(error)}") from error


_USER_FRAME = re.compile(r'File "([^"]+)", line (\d+), in')


def _host_code(path: str) -> bool:
    """Whether ``path`` is styleplug's, Python's, TensorFlow's, Keras's or NumPy's own code: a frame
    anywhere else is the plugin's."""
    folders = [os.path.dirname(os.path.dirname(__file__)), os.path.dirname(os.__file__)]
    folders += [os.path.dirname(module.__file__) for name in ("tensorflow", "keras", "numpy")
                if (module := sys.modules.get(name)) is not None and getattr(module, "__file__", None)]
    return any(path.startswith(folder + os.sep) for folder in folders)


def plugin_location(error: BaseException) -> str:
    """`` at FILE:LINE`` of the innermost frame of plugin code in ``error``'s traceback (for code
    TensorFlow traced, among the frames its message quotes); empty when none is found."""
    frames = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)]
    frames += [(path, int(line)) for path, line in _USER_FRAME.findall(str(error))]
    own = [(path, line) for path, line in frames if not _host_code(path)]
    return f" at {own[-1][0]}:{own[-1][1]}" if own else ""


def tensor_hint(error: BaseException) -> str:
    """A hint for the mistake that only shows when code is traced: leaving the backend's tensors for
    Python or NumPy (TensorFlow's and JAX's ways of saying so)."""
    text = f"{type(error).__name__}: {error}"
    symbolic = isinstance(error, AttributeError) and "numpy" in text or "symbolic" in text.lower() \
        or "OperatorNotAllowedInGraphError" in text or "Tracer" in text or "ConcretizationTypeError" in text
    return (". Inside a compiled step tensors are symbolic: use tensor operations (keras.ops; ops.where or "
            "ops.cond for a choice) instead of .numpy(), float(), bool(), `if` on a tensor or NumPy") if symbolic else ""


@functools.lru_cache(maxsize=1)
def default_host() -> PluginHost:
    """The host the CLI, the demo and ``styleplug.stylize`` use when given none: built once per process."""
    return PluginHost()
