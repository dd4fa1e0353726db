"""The container image, checked without a Docker engine: what the Dockerfile copies exists
and passes .dockerignore, the entry points it and the chart name are runnable modules, and
the pins cover the project's dependencies."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "hack" / "requirements-image.txt"
TEMPLATES = ROOT / "charts" / "kubenova" / "templates"


def instructions() -> list[tuple[str, list[str]]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.split()))
    return out


def copied_sources() -> list[str]:
    """Sources of every COPY from the build context (not from another stage)."""
    sources = []
    for word, args in instructions():
        if word == "COPY" and not any(a.startswith("--from") for a in args):
            sources += [a for a in args if not a.startswith("--")][:-1]
    return sources


def _pattern(p: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\*\*|\*|\?)", p.strip("/")):
        out += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(out + "(/.*)?")


def ignored(relative: str) -> bool:
    """Docker's rule: the last pattern that matches decides; `!` re-includes."""
    result = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if _pattern(line.lstrip("!")).fullmatch(relative):
            result = not negate
    return result


def _files(source: str) -> list[Path]:
    path = ROOT / source
    found = [path] if path.is_file() else sorted(path.rglob("*"))
    return [f for f in found if f.is_file() and "__pycache__" not in f.parts]


def test_every_copied_source_exists_and_reaches_the_build_context() -> None:
    sources = copied_sources()
    assert sources
    for source in sources:
        files = _files(source)
        assert files, f"COPY {source}: nothing there"
        kept = [f for f in files if not ignored(str(f.relative_to(ROOT)))]
        assert kept == files, f"COPY {source}: .dockerignore drops {set(files) - set(kept)}"


def test_the_image_holds_every_package_of_the_wheel() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    sources = [s.rstrip("/") for s in copied_sources()]
    for package in packages:
        assert any(package == s or package.startswith(s + "/") for s in sources), package
    assert "pyproject.toml" in sources and pyproject["project"]["readme"] in sources


def entry_points() -> set[str]:
    """Modules run with `python -m` by the Dockerfile (comments included) and the chart."""
    modules = set(
        re.findall(r"python\"?,? +\"?-m\"?,? +\"?(kubenova\.\w+)", DOCKERFILE.read_text())
    )
    for template in TEMPLATES.glob("*.yaml"):
        modules |= set(
            re.findall(r"command: \[python, -m, (kubenova\.[\w.]+)\]", template.read_text())
        )
    return modules


def test_every_entry_point_is_a_runnable_module() -> None:
    modules = entry_points()
    assert {"kubenova.operator", "kubenova.node_agent", "kubenova.webhooks"} <= modules
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{module} is not importable"
        if spec.submodule_search_locations is not None:  # a package runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, module


def test_the_pins_are_exact_and_satisfy_the_projects_requirements() -> None:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"{line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["agent"]]
    for raw in wanted:
        req = Requirement(raw)
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name} is not pinned in {LOCK.name}"
        assert req.specifier.contains(pinned), f"{req.name}=={pinned} does not meet {req}"


def test_dockerignore_reader() -> None:
    assert ignored("tests/unit/test_x.py")
    assert not ignored("operator/kubenova/operator/__main__.py")
    assert ignored("operator/kubenova/operator/__pycache__/x.pyc")
