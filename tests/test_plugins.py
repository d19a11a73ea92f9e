"""The plugin host: discovery through real entry points, isolation of broken plugins, switches, listing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types

import pytest

import styleplug
from styleplug.errors import PluginError, UnknownNameError
from styleplug.networks.vgg import VGG19
from styleplug.host.plugins import PluginHost, Provider

BROKEN = {
    "broken_import": ("import", "needs a module that is not installed"),
    "broken_hook": ("registration", "boom in register_losses"),
    "invalid_class": ("registration", "expected a subclass of styleplug.Loss"),
    "duplicate_name": ("registration", "loss name 'gram' is already taken by plugin 'styleplug.default_plugins.losses'"),
    "misspelt_hook": ("validation", "unknown hook 'register_loss'; did you mean 'register_losses'?"),
}


def test_builtins_register_through_the_same_hooks():
    host = PluginHost(entrypoints=False)
    assert set(host.losses) == {"content", "gram", "tv"}
    assert set(host.networks) == {"vgg19", "vgg16"}
    assert all(entry.provider.builtin and entry.provider.package == "styleplug" for entry in host.losses.values())
    listing = host.plugins(all=True)
    assert [(p["name"], p["hooks"], p["status"]) for p in listing] == [
        ("styleplug.default_plugins.networks", ["register_networks"], "ok"),
        ("styleplug.default_plugins.losses", ["register_losses"], "ok"),
    ]
    assert host.plugins() == []  # built-ins only with all=True


def test_entry_point_plugin_is_discovered_with_provenance(with_test_plugins):
    host = PluginHost()
    entry = host.loss("brightness")
    assert entry.provider == Provider("brightness", "styleplug-testplugins", "0.3.0")
    record = {p["name"]: p for p in host.plugins()}["brightness"]
    assert "loss 'brightness' is written to the old loss contract" in record.pop("warning")  # call(features, image)
    assert record == {
        "name": "brightness", "package": "styleplug-testplugins", "version": "0.3.0", "builtin": False,
        "hooks": ["register_losses"], "provides": {"losses": ["brightness"], "networks": []}, "status": "ok", "error": None,
    }


def test_each_broken_plugin_is_reported_by_name_and_skipped(with_test_plugins, caplog):
    with caplog.at_level(logging.WARNING, logger="styleplug.host.plugins"):
        host = PluginHost()
    records = {p["name"]: p for p in host.plugins()}
    for name, (stage, message) in BROKEN.items():
        assert records[name]["status"] == "failed", name
        assert records[name]["error"].startswith(f"{stage}: "), records[name]["error"]
        assert message in records[name]["error"]
        assert records[name]["provides"] == {"losses": [], "networks": []}
        assert f"plugin '{name}' (styleplug-testplugins 0.3.0) failed at {stage}" in caplog.text
    # The plugin that failed half-way keeps nothing it registered; the built-ins keep working.
    assert "halfway" not in host.losses
    assert host.loss("gram").provider.builtin
    assert {"content", "gram", "tv", "brightness"} <= set(host.losses)


def test_strict_mode_raises_the_first_failure_with_its_cause(with_test_plugins, monkeypatch):
    monkeypatch.setenv("STYLEPLUG_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as raised:
        PluginHost()
    assert raised.value.plugin == "broken_hook"  # the first in name order
    assert raised.value.package == "styleplug-testplugins"
    assert isinstance(raised.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("STYLEPLUG_LOAD_PLUGINS", "brightness", {"brightness"}),
        ("STYLEPLUG_LOAD_PLUGINS", "", set()),
        ("STYLEPLUG_LOAD_PLUGINS", "styleplug-testplugins", {"brightness", *BROKEN}),
        ("STYLEPLUG_DISABLE_PLUGINS", ",".join(BROKEN), {"brightness"}),
        ("STYLEPLUG_DISABLE_PLUGINS", "styleplug-testplugins", set()),
    ],
)
def test_allow_and_deny_lists(with_test_plugins, monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    host = PluginHost()
    # Only the test package's plugins: other installed plugins (the examples) may be listed too.
    assert {p["name"] for p in host.plugins() if p["package"] == "styleplug-testplugins"} == expected
    if variable == "STYLEPLUG_LOAD_PLUGINS":
        assert {p["name"] for p in host.plugins()} == expected
    assert {"content", "gram", "tv"} <= set(host.losses)  # built-ins are never filtered out


class _PlainVGG(VGG19):
    """VGG19 under another name."""

    name = "plainvgg"


def test_hook_register_networks():
    plugin = types.SimpleNamespace(__name__="embedded", register_networks=styleplug.hookimpl(lambda register: register(_PlainVGG)))
    host = PluginHost([plugin], entrypoints=False)
    assert host.network("plainvgg").cls is _PlainVGG
    assert host.network("plainvgg").provider.name == "embedded"
    assert host.plugins()[0]["provides"] == {"losses": [], "networks": ["plainvgg"]}


def test_hook_register_losses():
    class Halve(styleplug.Loss):
        """Half the mean pixel value."""

        name = "halve"
        role = "regularizer"
        uses_features = False

        def call(self, features, image):
            return image.mean() / 2

    plugin = types.SimpleNamespace(__name__="embedded", register_losses=styleplug.hookimpl(lambda register: register(Halve, aliases=("half",))))
    host = PluginHost([plugin], entrypoints=False)
    assert host.loss("half").cls is Halve
    assert PluginHost(entrypoints=False).losses.keys() == {"content", "gram", "tv"}  # hosts do not share state


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"layers": ()}, "layers must be a non-empty tuple"),
        ({"default_style_layers": ("nope",)}, "default_style_layers must name layers"),
        ({"name": "Bad Name"}, "expected lowercase letters"),
        ({"__doc__": None}, "has no docstring"),
    ],
)
def test_invalid_network_classes_are_rejected(attributes, message):
    cls = type("Broken", (VGG19,), {"name": "broken", "__doc__": "A broken network.", **attributes})
    plugin = types.SimpleNamespace(__name__="bad", register_networks=styleplug.hookimpl(lambda register: register(cls)))
    host = PluginHost([plugin], entrypoints=False)
    assert message in host.failures[0].error
    assert "broken" not in host.networks


def test_hook_returning_a_value_is_rejected():
    plugin = types.SimpleNamespace(__name__="returns", register_losses=styleplug.hookimpl(lambda register: [1]))
    host = PluginHost([plugin], entrypoints=False)
    assert "returned a value; call register(cls) instead" in host.failures[0].error


def test_unknown_loss_suggests_the_nearest_name():
    with pytest.raises(UnknownNameError, match="unknown loss 'gramm'. Did you mean 'gram'"):
        PluginHost(entrypoints=False).loss("gramm")


def test_cli_lists_plugins_as_json(installed_test_plugins):
    env = {**os.environ, "PYTHONPATH": str(installed_test_plugins), "STYLEPLUG_DISABLE_PLUGINS": "broken_import"}
    result = subprocess.run([sys.executable, "-m", "styleplug", "plugins"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    listing = {p["name"]: p for p in json.loads(result.stdout)}
    assert listing["brightness"]["status"] == "ok"
    assert listing["broken_hook"]["status"] == "failed"
    assert "broken_import" not in listing
    assert "plugin 'broken_hook' (styleplug-testplugins 0.3.0) failed at registration" in result.stderr
    everything = subprocess.run([sys.executable, "-m", "styleplug", "plugins", "--all"], capture_output=True, text=True, env=env)
    assert {"styleplug.default_plugins.losses", "styleplug.default_plugins.networks"} <= {p["name"] for p in json.loads(everything.stdout)}
