"""The plugin docs stay true: every hook is documented and tested, examples run, the tutorial is the real package."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest

from styleplug import hookspecs
from styleplug.host.plugins import PluginHost

from support import REPO

DOCS = REPO / "styleplug" / "docs"  # shipped in the package: `styleplug docs NAME`
HOOKS = [name for name, value in vars(hookspecs).items() if inspect.isfunction(value) and hasattr(value, "styleplug_spec")]
FENCE = re.compile(r'```(\w+)(?: title="([^"]+)")?\n(.*?)```', re.S)


def code_blocks(path: Path, language: str = "python") -> list[tuple[str | None, str]]:
    return [(title, body) for lang, title, body in FENCE.findall(path.read_text()) if lang == language]


def test_there_are_hooks():
    assert set(HOOKS) == {"register_losses", "register_networks"}


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_reference_entry_with_its_exact_signature(hook):
    signature = f"{hook}({', '.join(inspect.signature(getattr(hookspecs, hook)).parameters)})"
    assert f"## `{signature}`" in (DOCS / "hooks.md").read_text(), f"docs/hooks.md needs a heading ## `{signature}`"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = "".join(path.read_text() for path in (REPO / "tests").glob("test_*.py"))
    assert f"def test_hook_{hook}(" in tests, f"add a test named test_hook_{hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_example_in_the_reference_works(hook):
    examples = [body for _, body in code_blocks(DOCS / "hooks.md") if f"def {hook}(" in body]
    assert examples, f"docs/hooks.md has no example of {hook}"
    for body in examples:
        module = types.ModuleType(f"example_{hook}")
        exec(compile(body, f"docs/hooks.md:{hook}", "exec"), module.__dict__)
        host = PluginHost([module], entrypoints=False, strict=True)
        assert host.plugins()[0]["provides"][hook.removeprefix("register_")], f"the {hook} example registers nothing"


def test_tutorial_code_is_the_real_package():
    package = REPO / "plugins" / "styleplug-meanstd"
    blocks = [(title, body) for language in ("python", "toml") for title, body in code_blocks(DOCS / "tutorial.md", language) if title]
    assert {title for title, _ in blocks} == {"pyproject.toml", "styleplug_meanstd/__init__.py", "tests/conftest.py", "tests/test_meanstd.py"}
    for title, body in blocks:
        assert body == (package / title).read_text(), f"docs/tutorial.md's {title} differs from {package / title}"


def test_readme_links_the_plugin_docs():
    readme = (REPO / "README.md").read_text()
    for page in ("tutorial.md", "hooks.md", "contracts.md", "managing-plugins.md", "testing-plugins.md"):
        assert f"styleplug/docs/{page}" in readme


def test_readme_documents_every_job_field_and_stylize_argument():
    from styleplug.core.engine import Engine
    from styleplug.run.job import job_fields

    readme = (REPO / "README.md").read_text()
    options = [item.name for item in job_fields()] + [name for name in inspect.signature(Engine.stylize).parameters
                                                      if name not in ("self", "options")]
    assert [name for name in options if f"`{name}`" not in readme] == []
