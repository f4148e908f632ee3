"""The integrations registry (``callgate.integrations``) and the ``Integration`` base class.

Each test builds a fake framework package in ``tmp_path`` (on ``sys.path``, a unique name per
test) and registers a recording ``Integration`` for it in ``REGISTRY``, then drives the real
``callgate.configure()`` / ``reset()`` lifecycle. No framework is installed in this environment.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import subprocess
import sys
import textwrap
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import wrapt

import callgate
from callgate import integrations
from callgate.integrations import DidNotEnable
from callgate.integrations._base import Integration

TOOLS_SOURCE = '''
class Tool:
    def run(self, x):
        return f"ran {x}"

class Special(Tool):
    """Inherits run."""
'''


class Recording(Integration):
    """Wraps ``Tool.run`` of the fake framework's ``tools`` module; records what happens."""

    identifier: ClassVar[str] = "recording"
    framework: ClassVar[str] = "fakefw"
    modules: ClassVar[tuple[str, ...]] = ()
    fail_with: ClassVar[BaseException | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.calls: list[tuple[Any, ...]] = []

    def patch_module(self, name: str, module: Any) -> None:
        self.loaded.append(name)
        if self.fail_with is not None:
            raise self.fail_with
        self.wrap(module.Tool, "run", self._run)

    def _run(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.calls.append(args)
        return "checked " + wrapped(*args, **kwargs)


class Fake:
    """One fake framework and its registered integration."""

    def __init__(self, package: str, identifier: str, cls: type[Recording]) -> None:
        self.package = package
        self.tools_module = f"{package}.tools"
        self.identifier = identifier
        self.cls = cls

    def import_tools(self) -> Any:
        return importlib.import_module(self.tools_module)

    @property
    def instance(self) -> Recording | None:
        return integrations._integrations.get(self.identifier)  # type: ignore[return-value]


def _write_package(root: Path, package: str, init: str = "") -> None:
    (root / package).mkdir()
    (root / package / "__init__.py").write_text(init)
    (root / package / "tools.py").write_text(TOOLS_SOURCE)


def _register(
    monkeypatch: pytest.MonkeyPatch, package: str, *, trigger: bool, fail_with: BaseException | None = None
) -> Fake:
    identifier = f"fake_{package}"
    cls = type(
        f"Recording_{package}",
        (Recording,),
        {"identifier": identifier, "modules": (f"{package}.tools",), "fail_with": fail_with},
    )
    holder = types.ModuleType(f"_callgate_test_integration_{package}")
    setattr(holder, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, holder.__name__, holder)
    monkeypatch.setitem(integrations.REGISTRY, identifier, f"{holder.__name__}:{cls.__name__}")
    if trigger:
        monkeypatch.setitem(integrations._TRIGGERS, identifier, (package,))
    return Fake(package, identifier, cls)


@pytest.fixture
def make_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``make_fake(trigger=False, fail_with=None, init="")``: a fresh fake framework + integration."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[Fake] = []

    def make(*, trigger: bool = False, fail_with: BaseException | None = None, init: str = "") -> Fake:
        package = f"cgfake_{uuid.uuid4().hex[:10]}"
        _write_package(tmp_path, package, init)
        importlib.invalidate_caches()
        fake = _register(monkeypatch, package, trigger=trigger, fail_with=fail_with)
        made.append(fake)
        return fake

    yield make
    callgate.reset()
    for fake in made:
        integrations._integrations.pop(fake.identifier, None)
        for name in [m for m in sys.modules if m == fake.package or m.startswith(fake.package + ".")]:
            del sys.modules[name]


@pytest.fixture
def configure(dead_url: str, tmp_path: Path) -> Any:
    """Configure for real (no network at configure time) with the given options."""

    def go(**options: Any) -> None:
        callgate.configure(dead_url, "cg_agent_k", spool_dir=tmp_path / "spool", **options)

    return go


def _is_wrapped(fake: Fake) -> bool:
    return isinstance(sys.modules[fake.tools_module].Tool.__dict__["run"], wrapt.FunctionWrapper)


class TestHooks:
    def test_a_module_imported_after_configure_is_patched_when_it_loads(
        self, make_fake: Any, configure: Any
    ) -> None:
        fake = make_fake()
        configure()
        assert fake.tools_module not in sys.modules  # configure imported nothing of the framework
        assert fake.instance is not None and fake.instance.loaded == []

        tools = fake.import_tools()
        assert fake.instance.loaded == [fake.tools_module]
        assert tools.Tool().run(1) == "checked ran 1" and tools.Special().run(2) == "checked ran 2"
        assert fake.instance.calls == [(1,), (2,)]

    def test_a_module_imported_before_configure_is_patched_at_once(
        self, make_fake: Any, configure: Any
    ) -> None:
        fake = make_fake()
        tools = fake.import_tools()
        tool = tools.Tool()  # an instance made before configure() is covered: the patch is on the class
        configure()
        assert fake.instance.loaded == [fake.tools_module]
        assert tool.run("a") == "checked ran a"

    def test_the_module_sees_its_real_loader(self, make_fake: Any, configure: Any) -> None:
        """The watcher is invisible to the module: its loader, source and resources are the real ones."""
        fake = make_fake()
        configure()
        tools = fake.import_tools()
        assert type(tools.__loader__).__name__ == "SourceFileLoader"
        assert tools.__spec__.loader is tools.__loader__
        assert "class Special(Tool)" in inspect.getsource(tools)
        assert fake.instance.loaded == [fake.tools_module]

    def test_a_failing_hook_never_breaks_the_import(
        self, make_fake: Any, configure: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        fake = make_fake()
        configure()

        def broken(module: Any) -> None:
            raise RuntimeError("hook bug")

        integrations._when_imported(fake.tools_module, broken)
        with caplog.at_level(logging.ERROR, logger="callgate"):
            tools = fake.import_tools()
        assert tools.Tool().run(3) == "checked ran 3"  # the other hook still ran
        assert "post-import hook for" in caplog.text and "hook bug" in caplog.text


class TestTriggers:
    def test_the_integration_loads_only_when_its_framework_is_imported(
        self, make_fake: Any, configure: Any
    ) -> None:
        fake = make_fake(trigger=True)
        configure()
        assert fake.identifier in integrations.installed()
        assert fake.instance is None  # not even the integration's class is instantiated yet

        importlib.import_module(fake.package)
        assert fake.instance is not None and fake.instance.loaded == []
        assert fake.import_tools().Tool().run(1) == "checked ran 1"

    def test_a_submodule_the_package_imports_itself_is_patched_before_the_import_returns(
        self, make_fake: Any, configure: Any
    ) -> None:
        fake = make_fake(trigger=True, init="from . import tools\n")
        configure()
        package = importlib.import_module(fake.package)
        assert package.tools.Tool().run(5) == "checked ran 5"

    def test_a_framework_imported_before_configure_is_armed_at_once(
        self, make_fake: Any, configure: Any
    ) -> None:
        fake = make_fake(trigger=True)
        tools = fake.import_tools()
        configure()
        assert tools.Tool().run(1) == "checked ran 1"

    def test_every_real_integration_patches_only_under_its_trigger(self) -> None:
        """The lazy arming is sound only if each patched module lives under a trigger package:
        Python imports the package (and so arms the integration) before any of its modules."""
        for identifier, target in integrations.REGISTRY.items():
            triggers = integrations._TRIGGERS[identifier]
            module_name, _, class_name = target.partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            assert cls.identifier == identifier
            for module in cls.modules:
                assert any(module == t or module.startswith(t + ".") for t in triggers), (identifier, module)


class TestLifecycle:
    def test_install_is_idempotent(self, make_fake: Any, configure: Any) -> None:
        fake = make_fake()
        tools = fake.import_tools()
        configure()
        first = tools.Tool.__dict__["run"]
        assert integrations.install_all() == integrations.install_all()
        configure(timeout=3.0)  # a new configuration installs again: still one layer
        assert fake.instance.loaded == [fake.tools_module]
        assert tools.Tool.__dict__["run"] is first
        assert tools.Tool().run(1) == "checked ran 1" and fake.instance.calls == [(1,)]

    def test_uninstall_restores_the_original_attributes(self, make_fake: Any, configure: Any) -> None:
        fake = make_fake()
        tools = fake.import_tools()
        original = tools.Tool.__dict__["run"]
        configure()
        assert _is_wrapped(fake)
        callgate.reset()
        assert tools.Tool.__dict__["run"] is original and "run" not in tools.Special.__dict__
        assert tools.Tool().run(1) == "ran 1" and fake.instance.calls == []
        assert fake.identifier not in integrations.installed()

    def test_reinstall_after_uninstall_patches_again(self, make_fake: Any, configure: Any) -> None:
        fake = make_fake()
        configure()
        tools = fake.import_tools()
        callgate.reset()
        assert not _is_wrapped(fake)
        configure()
        assert _is_wrapped(fake) and tools.Tool().run(9) == "checked ran 9"
        assert fake.instance.loaded == [fake.tools_module] * 2

    def test_a_module_imported_after_uninstall_is_left_alone(self, make_fake: Any, configure: Any) -> None:
        fake = make_fake()
        configure()
        callgate.reset()
        tools = fake.import_tools()  # the hook is still registered, but its integration is off
        assert fake.instance.loaded == [] and tools.Tool().run(1) == "ran 1"

    def test_configure_without_integrations_installs_none(self, make_fake: Any, configure: Any) -> None:
        fake = make_fake()
        configure(integrations=False)
        assert integrations.installed() == []
        assert fake.import_tools().Tool().run(1) == "ran 1"


class TestFailures:
    @pytest.mark.parametrize(
        ("error", "level", "text"),
        [
            (RuntimeError("patch bug"), logging.ERROR, "could not patch"),
            (DidNotEnable("framework 0.1 is too old"), logging.WARNING, "disabled"),
        ],
    )
    def test_a_failing_patch_logs_and_the_users_import_still_works(
        self,
        make_fake: Any,
        configure: Any,
        caplog: pytest.LogCaptureFixture,
        error: BaseException,
        level: int,
        text: str,
    ) -> None:
        fake = make_fake(fail_with=error)
        configure()
        with caplog.at_level(logging.WARNING, logger="callgate"):
            tools = fake.import_tools()
        assert tools.Tool().run(1) == "ran 1"
        records = [r for r in caplog.records if text in r.getMessage()]
        assert records and records[0].levelno == level and str(error) in caplog.text

    def test_an_integration_that_cannot_be_loaded_is_skipped(
        self,
        monkeypatch: pytest.MonkeyPatch,
        make_fake: Any,
        configure: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        fake = make_fake()
        monkeypatch.setitem(integrations.REGISTRY, "missing", "callgate.integrations.no_such_module:Nope")
        with caplog.at_level(logging.ERROR, logger="callgate"):
            configure()
        assert "missing" not in integrations.installed() and fake.identifier in integrations.installed()
        assert "integration missing" in caplog.text and "could not be loaded" in caplog.text
        assert fake.import_tools().Tool().run(1) == "checked ran 1"


class TestWrap:
    def test_refuses_an_inherited_method(self, make_fake: Any) -> None:
        tools = make_fake().import_tools()
        with pytest.raises(DidNotEnable, match="does not define run"):
            Recording().wrap(tools.Special, "run", lambda w, i, a, k: w(*a, **k))
        assert "run" not in tools.Special.__dict__

    def test_wrapping_twice_is_one_layer_and_undo_restores(self, make_fake: Any) -> None:
        tools = make_fake().import_tools()
        original = tools.Tool.__dict__["run"]
        integration = Recording()
        integration.wrap(tools.Tool, "run", integration._run)
        integration.wrap(tools.Tool, "run", integration._run)
        assert tools.Tool().run(1) == "checked ran 1" and integration.calls == [(1,)]
        integration.uninstall()
        assert tools.Tool.__dict__["run"] is original

    def test_wraps_on_top_of_another_librarys_wrapper_and_puts_it_back(self, make_fake: Any) -> None:
        tools = make_fake().import_tools()
        wrapt.wrap_function_wrapper(tools.Tool, "run", lambda w, i, a, k: "other " + w(*a, **k))
        theirs = tools.Tool.__dict__["run"]
        integration = Recording()
        integration.wrap(tools.Tool, "run", integration._run)
        assert tools.Tool().run(1) == "checked other ran 1"
        integration.uninstall()
        assert tools.Tool.__dict__["run"] is theirs


FRAMEWORKS = ("langchain", "langchain_core", "langgraph", "agents", "crewai", "openai", "anthropic")


def test_configure_imports_no_framework_even_when_installed(tmp_path: Path) -> None:
    """``import callgate; callgate.configure()`` in a fresh process imports no agent framework or
    provider SDK -- proven with importable stand-ins for all of them on the path (none of the real
    ones is installed here), each of which would show up in ``sys.modules`` if anything imported it."""
    for name in FRAMEWORKS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    for sub in (
        "langchain_core/tools",
        "langchain_core/tracers",
        "agents/models",
        "crewai/tools",
        "crewai/llms",
    ):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "__init__.py").write_text("")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import callgate
        callgate.configure("http://127.0.0.1:9", "k", spool_dir={str(tmp_path / "spool")!r})
        print(json.dumps({{"modules": sorted(sys.modules), "installed": callgate.integrations.installed()}}))
    """)
    out = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        ).stdout
    )
    loaded = {m.split(".")[0] for m in out["modules"]}
    assert not loaded & set(FRAMEWORKS), loaded & set(FRAMEWORKS)
    assert out["installed"] == sorted(integrations.REGISTRY)
    # P6 (docs/performance.md): no wrapt (~60 ms, it imports asyncio) and no integration module
    # until a framework is imported.
    assert "wrapt" not in loaded and "asyncio" not in loaded
    assert not [m for m in out["modules"] if m.startswith("callgate.integrations.")]


def test_importing_a_framework_arms_its_integration(tmp_path: Path) -> None:
    """The other half of the laziness: importing a framework's top-level package loads its
    integration (and only that one), so the hooks are in place before its modules load."""
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "__init__.py").write_text("")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import callgate
        callgate.configure("http://127.0.0.1:9", "k", spool_dir={str(tmp_path / "spool")!r})
        import agents
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("callgate.integrations."))))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "callgate.integrations.openai_agents" in json.loads(out.stdout)
    assert "callgate.integrations.langchain" not in json.loads(out.stdout)
