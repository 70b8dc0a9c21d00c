"""Every notebook executed by papermill's command line, as a user runs it.

Quick tests use synthetic run directories (`run_dir` mode: no lab): s1 from inside notebooks/
with the notebook on stdout, a failed run, compare. The `lab` tests run s1 (both modes), s2, s3
and s4 for real on one shared local lab with short durations (each report re-executes its
notebook in `run_dir` mode, so every notebook runs both ways), then compare.ipynb on the s1 runs
of the same session, and check each report for its figure and its verdict.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from synthetic_runs import write_run

from gtnb.analysis import load_run, verdict
from gtnb.artifacts import REPO_ROOT
from gtnb.notebook import NOTEBOOKS_DIR

# papermill's command line from the environment running the tests, as a user types it.
PAPERMILL = str(Path(sys.executable).parent / "papermill")
NOTEBOOKS = ["s1", "s2", "s3", "s4", "compare"]


def _papermill(*args: str, cwd: Path = REPO_ROOT, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAPERMILL, *args, "--log-level", "WARNING"], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout)


def _parameters_cell(name: str) -> list[tuple[str, str]]:
    """(name, comment) of every parameter in the notebook's `parameters` cell."""
    nb = nbformat.read(str(NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}.ipynb needs exactly one cell tagged `parameters`"
    out = []
    for line in cells[0].source.splitlines():
        code, _, comment = line.partition("#")
        tree = ast.parse(code)
        assert isinstance(tree.body[0], (ast.Assign, ast.AnnAssign)), line
        assert isinstance(tree.body[0].value, ast.Constant), f"not a literal: {line}"
        target = tree.body[0].target if isinstance(tree.body[0], ast.AnnAssign) else tree.body[0].targets[0]
        out.append((target.id, comment.strip()))
    return out


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_committed_clean(name: str) -> None:
    nb = nbformat.read(str(NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_help_notebook_documents_every_parameter(name: str) -> None:
    params = _parameters_cell(name)
    assert {"target", "artifacts", "report"} <= {p for p, _ in params}
    proc = _papermill("--help-notebook", f"notebooks/{name}.ipynb")
    assert proc.returncode == 0, proc.stderr
    help_text = re.sub(r"\s+", " ", proc.stdout)
    for param, comment in params:
        assert comment, f"{name}: parameter {param} has no trailing comment"
        assert re.search(rf"\b{param}: \w+ \(default ", help_text), (param, proc.stdout)
        assert comment in help_text, (param, comment)


def test_bad_mode_fails_with_the_allowed_ones(tmp_path: Path) -> None:
    proc = _papermill("notebooks/s1.ipynb", str(tmp_path / "out.ipynb"), "-p", "mode", "improvd",
                      "-p", "artifacts", str(tmp_path))
    assert proc.returncode != 0
    assert "ConfigError" in proc.stderr + proc.stdout
    assert "mode 'improvd' is not one of current | improved" in proc.stderr + proc.stdout
    assert not list(tmp_path.glob("*/*/run.json")), "nothing may run on bad input"


@pytest.mark.parametrize(
    ("scenario", "values", "message"),
    [
        ("S1", {"mode": "fast"}, "mode 'fast' is not one of current | improved"),
        ("S1", {"mode": "current", "target": "prod"}, "target 'prod' is not one of local | homelab"),
        ("S5", {"mode": "current"}, "scenario 'S5' is not one of S1, S2, S3, S4"),
        ("S2", {"mode": "current"}, "S2 runs in improved mode only"),
        ("S1", {"mode": "current", "duration_s": -3}, "duration_s = -3 must be > 0 s"),
        ("S1", {"mode": "current", "duration_s": "60"}, "duration_s = '60' is not a number of seconds"),
        ("S1", {"mode": "current", "duration_s": 6, "kill_after_s": 6},
         "kill_after_s = 6 must be shorter than duration_s = 6"),
        ("S3", {"mode": "current", "workers": 0}, "workers = 0 must be a whole number >= 1"),
        ("S3", {"mode": "current", "path": "fast"}, "path = 'fast' must start with '/'"),
        ("S1", {"mode": "current", "target": "homelab"}, "target 'homelab' needs `profile`"),
        ("S1", {"mode": "current", "run_dir": "/nonexistent/run"}, "is not a directory"),
    ],
)
def test_parameters_name_the_bad_value_and_the_allowed_ones(scenario, values, message) -> None:
    from gtnb.errors import ConfigError
    from gtnb.notebook import parameters

    with pytest.raises(ConfigError, match=re.escape(message)):
        parameters(scenario, **values)


def test_s3_notebook_passes_path_to_the_run() -> None:
    # run() takes S3's `path`; the notebook must offer it and hand it through to run().
    assert "path" in dict(_parameters_cell("s3")), "s3.ipynb has no `path` parameter"
    from gtnb.notebook import parameters

    p = parameters("S3", mode="current", path="/sleep?seconds=0.2")
    assert p.run_kwargs()["path"] == "/sleep?seconds=0.2"
    assert "path" not in parameters("S3", mode="current", path="").run_kwargs()
    # compare.ipynb too, for S3 only (as `workers`).
    from gtnb.notebook import compare_parameters

    assert "path" in dict(_parameters_cell("compare"))
    assert [p.run_kwargs()["path"] for p in compare_parameters("S3", path="/sleep")] == ["/sleep"] * 2
    assert all("path" not in p.run_kwargs() for p in compare_parameters("S1", path="/sleep"))


def test_run_dir_of_another_scenario_is_refused(tmp_path: Path) -> None:
    from gtnb.errors import ConfigError
    from gtnb.notebook import parameters

    run_dir = write_run(tmp_path, "S4", "current")
    with pytest.raises(ConfigError, match=r"holds a S4 run, not S1: open s4.ipynb"):
        parameters("S1", mode="current", run_dir=str(run_dir))
    p = parameters("S4", mode="improved", duration_s=60, run_dir=str(run_dir))
    # An existing run is analysed as it was run, whatever the parameters cell says.
    assert (p.mode, p.duration_s, p.run_dir) == ("current", 12.0, run_dir)


def _report_checks(run_dir: Path, report: Path) -> str:
    page = report.read_text()
    assert page.count("data:image/png;base64,") >= 1, f"{report}: no inline figure"
    expected = verdict(load_run(run_dir))._repr_html_()
    assert str(BeautifulSoup(expected, "html.parser")) in page, f"{report}: verdict missing"
    assert "nb.finish(" not in page, "code cells must be hidden"
    return page


def test_s1_from_notebooks_dir_without_output_path(tmp_path: Path) -> None:
    """`papermill s1.ipynb` inside notebooks/, stdout as the output: the report still lands."""
    run_dir = write_run(tmp_path, "S1", "current")
    proc = _papermill("s1.ipynb", "-p", "run_dir", str(run_dir), cwd=NOTEBOOKS_DIR)
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = nbformat.reads(proc.stdout, as_version=4)  # the notebook went to stdout
    assert executed.metadata["papermill"]["parameters"]["run_dir"] == str(run_dir)
    _report_checks(run_dir, run_dir / "report.html")


def test_failed_run_notebook_exits_nonzero_with_its_report(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "S1", "current", status="failed")
    proc = _papermill("notebooks/s1.ipynb", str(tmp_path / "out.ipynb"), "-p", "run_dir", str(run_dir))
    assert proc.returncode != 0
    assert "run failed at step wait_traffic" in proc.stderr + proc.stdout
    page = (run_dir / "report.html").read_text()
    assert "failed at step wait_traffic" in page


def test_compare_on_synthetic_runs(tmp_path: Path) -> None:
    cur = write_run(tmp_path, "S1", "current", stamp="20261201-002000")
    imp = write_run(tmp_path, "S1", "improved", stamp="20261201-002100")
    proc = _papermill("notebooks/compare.ipynb", str(tmp_path / "out.ipynb"), "-p", "scenario", "S1",
                      "-p", "run_dir_current", str(cur), "-p", "run_dir_improved", str(imp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (imp / "compare.html").read_text()
    assert page.count("data:image/png;base64,") >= 1
    assert "current vs improved" in page
    from gtnb.analysis import compare

    expected = str(BeautifulSoup(compare(load_run(cur), load_run(imp))._repr_html_(), "html.parser"))
    # The comparison verdict heads the page, before the notebook's narrative.
    assert expected in page and page.index(expected) < page.index("Current vs improved, side by side")


def test_compare_refuses_swapped_run_dirs(tmp_path: Path) -> None:
    cur = write_run(tmp_path, "S1", "current", stamp="20261201-002000")
    imp = write_run(tmp_path, "S1", "improved", stamp="20261201-002100")
    proc = _papermill("notebooks/compare.ipynb", str(tmp_path / "out.ipynb"),
                      "-p", "run_dir_current", str(imp), "-p", "run_dir_improved", str(cur))
    assert proc.returncode != 0
    assert "is a improved-mode run: give a current-mode run directory" in proc.stderr + proc.stdout


# -- on the local lab --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """One local lab for every notebook of this module; taken down however the tests end."""
    from gtnb.targets.local.lab import lab_down, lab_up

    state = tmp_path_factory.mktemp("nblab")
    artifacts = tmp_path_factory.mktemp("nbart")
    lab_up(state)
    try:
        yield state, artifacts
    finally:
        lab_down(state)


_LAB_RUNS = {
    # (notebook, mode): short durations that keep each mode's effect: current mode's cut comes
    # at HAProxy's DOWN, 2-3 s after the kill (before the 5 s terminationDrainDuration kill), so
    # long requests outlast it.
    ("s1", "current"): {"duration_s": 12, "kill_after_s": 2},
    ("s1", "improved"): {"duration_s": 8, "kill_after_s": 2},
    ("s2", "improved"): {"duration_s": 8, "kill_after_s": 2},
    # S3 through the notebook's `path`: requests that hold their session make current mode's
    # cuts certain (tests/test_scenarios.py's S3_LOAD, where the numbers are).
    ("s3", "current"): {"duration_s": 20, "kill_after_s": 2, "workers": 10, "path": "/sleep?seconds=0.2"},
    ("s4", "current"): {"duration_s": 12, "kill_after_s": 2},
}
_runs: dict[tuple[str, str], Path] = {}


@pytest.mark.lab
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("name", "mode"), list(_LAB_RUNS))
def test_notebook_runs_on_the_local_lab(lab, name: str, mode: str) -> None:
    state, artifacts = lab
    args = [a for k, v in _LAB_RUNS[name, mode].items() for a in ("-p", k, str(v))]
    out = artifacts / f"{name}-{mode}.ipynb"
    proc = _papermill(f"notebooks/{name}.ipynb", str(out), "-p", "mode", mode, "-p", "state_dir",
                      str(state), "-p", "artifacts", str(artifacts), *args, timeout=280)
    scenario = name.upper()
    dirs = sorted(artifacts.glob(f"*/{scenario}-{mode}/run.json"))
    assert dirs, f"no run directory: {proc.stderr[-3000:]}"
    run_dir = dirs[-1].parent
    journal = json.loads((run_dir / "run.json").read_text())
    assert proc.returncode == 0, f"{journal['status']} at {journal['step']}: {journal['error']}\n{proc.stderr[-3000:]}"
    assert journal["status"] == "completed"
    _report_checks(run_dir, run_dir / "report.html")
    _runs[name, mode] = run_dir
    run = load_run(run_dir)
    if "path" in _LAB_RUNS[name, mode]:  # the notebook's `path` reached the workers
        assert set(run.frames["client"]["path"]) == {_LAB_RUNS[name, mode]["path"]}
    result = verdict(run)
    assert result.ok, f"{name} {mode}: the verdict does not hold on the local lab:\n{result}"


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_compare_notebook_on_this_session_runs(lab) -> None:
    cur, imp = _runs.get(("s1", "current")), _runs.get(("s1", "improved"))
    if cur is None or imp is None:
        pytest.fail("the s1 lab runs of this session did not complete (see their failures)")
    _, artifacts = lab
    proc = _papermill("notebooks/compare.ipynb", str(artifacts / "compare.ipynb"),
                      "-p", "run_dir_current", str(cur), "-p", "run_dir_improved", str(imp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (imp / "compare.html").read_text()
    assert page.count("data:image/png;base64,") >= 1
    from gtnb.analysis import compare

    expected = compare(load_run(cur), load_run(imp))
    assert str(BeautifulSoup(expected._repr_html_(), "html.parser")) in page
    assert expected.ok, f"current and improved must differ as the seed expects:\n{expected}"
