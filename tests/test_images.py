"""The workload Dockerfiles, checked without a Docker engine: pinned base, non-root, COPY sources
present, pinned requirements equal to what the tests run, and the entry point importable with
only the image's packages (the notebook/analysis dependencies are blocked)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"backend": "gtnb.workloads.backend", "hc": "gtnb.workloads.hc"}

# Import names of gtnb's dependencies (pyproject) mapped from their distribution names.
IMPORT_NAMES = {"jupyterlab": "jupyterlab", "papermill": "papermill", "nbconvert": "nbconvert",
                "ipykernel": "ipykernel", "pandas": "pandas", "matplotlib": "matplotlib", "tqdm": "tqdm",
                "kubernetes": "kubernetes", "paramiko": "paramiko", "psutil": "psutil", "pyyaml": "yaml",
                "httpx": "httpx", "hypercorn": "hypercorn", "cryptography": "cryptography"}


@dataclass
class Dockerfile:
    name: str
    path: Path
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined

    @classmethod
    def read(cls, name: str) -> Dockerfile:
        path = ROOT / "images" / name / "Dockerfile"
        text = re.sub(r"\\\n", " ", path.read_text())
        instructions = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                word, _, rest = line.partition(" ")
                instructions.append((word.upper(), rest.strip()))
        return cls(name, path, instructions)

    def all(self, word: str) -> list[str]:
        return [rest for w, rest in self.instructions if w == word]


@pytest.fixture(params=sorted(IMAGES))
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return Dockerfile.read(request.param)


def requirements(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "images" / name / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            dist, sep, pinned = line.partition("==")
            assert sep, f"images/{name}/requirements.txt: {line!r} is not pinned with =="
            pins[dist.strip().lower()] = pinned.strip()
    return pins


def test_base_image_is_pinned(dockerfile: Dockerfile) -> None:
    (base,) = dockerfile.all("FROM")
    image = base.split()[0]
    assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+[-\w]*$", image), \
        f"{dockerfile.path}: FROM {image} is not pinned to an exact version or digest"


def test_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.all("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_copy_sources_exist_in_the_repo(dockerfile: Dockerfile) -> None:
    copies = dockerfile.all("COPY")
    assert copies
    for args in copies:
        parts = [p for p in args.split() if not p.startswith("--")]
        assert not any(p.startswith("--from") for p in args.split())
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"{dockerfile.path}: COPY source {source} is not in the repo"
    ignore = (dockerfile.path.parent / "Dockerfile.dockerignore").read_text().splitlines()
    for args in copies:
        for source in [p for p in args.split() if not p.startswith("--")][:-1]:
            top = source.split("/")[0]
            assert f"!{top}" in ignore or f"!{top}/" in ignore, f"{source} is excluded by the dockerignore"


def test_requirements_match_what_the_tests_run(dockerfile: Dockerfile) -> None:
    pins = requirements(dockerfile.name)
    assert pins, f"images/{dockerfile.name}/requirements.txt pins nothing: the image needs its runtime packages"
    for dist, pinned in pins.items():
        assert version(dist) == pinned, f"images/{dockerfile.name}/requirements.txt pins {dist}=={pinned}, " \
                                        f"tests run {version(dist)}: update the pin"


def test_entry_point_imports_with_only_the_image_packages(dockerfile: Dockerfile) -> None:
    entry = dockerfile.all("ENTRYPOINT")[-1]
    module = IMAGES[dockerfile.name]
    assert entry == f'["python", "-m", "{module}"]'
    allowed = {IMPORT_NAMES[d] for d in requirements(dockerfile.name) if d in IMPORT_NAMES}
    blocked = sorted(set(IMPORT_NAMES.values()) - allowed)
    # A finder that refuses gtnb's other dependencies, as if they were not installed.
    probe = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('not in the image: ' + name)
sys.meta_path.insert(0, Block())
import runpy
sys.argv = ['{module}', '--help']
runpy.run_module('{module}', run_name='__main__')
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    env_names = [n for args in dockerfile.all("ENV") for n in re.findall(r"(?:^|\s)(\w+)=", args)]
    assert env_names
    for name in env_names:
        if name.startswith(("PYTHON", "PIP")):
            continue
        assert name in result.stdout, f"ENV {name} is not a flag's env var of {module}"
