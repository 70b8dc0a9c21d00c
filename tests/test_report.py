"""report.html and artifacts/index.html from synthetic run directories.

`render_report` executes the real scenario notebook with papermill (analysis only) and renders it
through nbconvert: no mocks, a real kernel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from synthetic_runs import write_run

from gtnb.analysis import load_run, verdict
from gtnb.report import find_runs, notebook_html, render_index, render_reports

pytestmark = pytest.mark.timeout(240)


def _visible_text(page: str) -> str:
    body = page[page.index("<body"):]
    body = re.sub(r"<(style|script)\b.*?</\1>", " ", body, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_notebook_html_hides_code_keeps_outputs_and_is_self_contained(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("secret_code_marker = 42")
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png}),
                    nbformat.v4.new_output("stream", name="stdout", text="visible output line\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Narrative heading"), cell]
    executed = tmp_path / "x.ipynb"
    nbformat.write(nb, str(executed))
    out = notebook_html(executed, "<div id='hdr'>HEADER FIRST</div>", tmp_path / "r.html")
    page = out.read_text()
    text = _visible_text(page)
    assert "secret_code_marker" not in page
    assert "visible output line" in text and "Narrative heading" in text
    assert text.index("HEADER FIRST") < text.index("Narrative heading")
    assert f"data:image/png;base64,{png}" in page
    assert not re.search(r"<script[^>]+src=", page), "external scripts make the report need a network"
    assert not re.search(r"<link[^>]+href=[\"']https?:", page)


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """One completed and one failed S1 run, each with its report rendered."""
    root = tmp_path_factory.mktemp("artifacts")
    ok = write_run(root, "S1", "improved", stamp="20261201-002000")
    failed = write_run(root, "S1", "current", status="failed", stamp="20261201-002100")
    paths = render_reports([ok, failed], artifacts=root)  # what `gtnb report` calls
    assert paths == [ok / "report.html", failed / "report.html", root / "index.html"]
    return root, ok, failed


def test_report_has_parameters_verdict_and_figure_but_no_code(reported) -> None:
    _, run_dir, _ = reported
    page = (run_dir / "report.html").read_text()
    text = _visible_text(page)
    journal = json.loads((run_dir / "run.json").read_text())
    # The parameters table, first thing on the page.
    assert "run parameters" in text
    for key, value in journal["parameters"].items():
        assert re.search(rf"{key}\s+{re.escape(str(value))}", text), key
    # The verdict, as the analysis computes it, before the notebook's narrative.
    expected = verdict(load_run(run_dir))._repr_html_()
    # nbconvert re-serialises the page through BeautifulSoup: compare in that form.
    assert str(BeautifulSoup(expected, "html.parser")) in page
    assert text.index("run parameters") < text.index("Verdict") < text.index("S1 — delete the pod")
    assert page.count("data:image/png;base64,") >= 1
    assert "nb.run_or_load" not in page and "nb.parameters(" not in page  # code hidden
    assert (run_dir / "s1.ipynb").exists(), "the executed notebook sits next to its report"
    assert journal["verdict"] is not None and "ok" in journal["verdict"]


def test_failed_run_report_says_where_it_failed(reported) -> None:
    _, _, run_dir = reported
    page = (run_dir / "report.html").read_text()
    journal = json.loads((run_dir / "run.json").read_text())
    text = _visible_text(page)
    assert f"failed at step {journal['step']}" in text
    assert journal["error"] in text
    assert "RunError" in text, "the last cell raises so papermill exits non-zero"
    assert page.count("data:image/png;base64,") >= 1, "partial artifacts still get a timeline"


def test_index_lists_every_run(reported) -> None:
    root, ok, failed = reported
    write_run(root, "S3", "current", stamp="20261201-003000")  # no report yet
    index = render_index(root)
    page = index.read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)[1:]
    assert len(rows) == len(find_runs(root)) == 3
    by_dir = {re.search(r"<code>(.*?)</code>", r).group(1): r for r in rows}
    assert set(by_dir) == {"20261201-002000/S1-improved", "20261201-002100/S1-current",
                           "20261201-003000/S3-current"}
    assert "href='20261201-002000/S1-improved/report.html'" in by_dir["20261201-002000/S1-improved"]
    assert "failed" in by_dir["20261201-002100/S1-current"]
    assert "report.html" not in by_dir["20261201-003000/S3-current"]
    ok_verdict = json.loads((ok / "run.json").read_text())["verdict"]["ok"]
    assert ("holds" if ok_verdict else "does not hold") in by_dir["20261201-002000/S1-improved"]
    # newest first
    assert list(by_dir)[0] == "20261201-003000/S3-current"


def test_render_reports_rejects_a_non_run_dir(tmp_path: Path) -> None:
    from gtnb.errors import ArtifactError

    with pytest.raises(ArtifactError, match="has no run.json"):
        render_reports([tmp_path], artifacts=tmp_path)


def test_an_analysis_step_that_raises_still_gets_its_report(tmp_path: Path) -> None:
    """A failing analysis cell is shown and recorded; finish() renders the report, then raises."""
    from gtnb import notebook as nb
    from gtnb.errors import RunError

    run_dir = write_run(tmp_path, "S1", "improved")
    p = nb.parameters("S1", mode="current", run_dir=str(run_dir))
    outcome = nb.run_or_load(p)

    @nb.guarded("a broken step")
    def broken() -> None:
        raise ValueError("column 'x' is missing")

    assert broken() is None  # the notebook goes on to its last cell
    assert nb.PROBLEMS == ["a broken step: ValueError: column 'x' is missing"]
    with pytest.raises(RunError, match="analysis failed: a broken step: ValueError"):
        nb.finish(outcome, p)
    assert (run_dir / "report.html").exists()
    nb.parameters("S1", mode="current", run_dir=str(run_dir))  # a new notebook run starts clean
    assert nb.PROBLEMS == []
