"""Shareable reports: one self-contained HTML file per run, and artifacts/index.html.

How the report reaches the run directory. papermill may be called with an output path anywhere
(`papermill s1.ipynb out.ipynb`) or with none at all (then it prints the executed notebook to
stdout), and the kernel is never told either path. So the notebook's last cell does not try to
find "its" executed notebook: it re-executes the same scenario notebook with papermill in
analysis-only mode (`run_dir` set, `report=False`) into `<run_dir>/<scenario>.ipynb` and renders
that to `<run_dir>/report.html`. Analysis-only execution needs no lab and takes seconds, the
report is the same whatever papermill's output path was, and `gtnb report RUN_DIR` uses the very
same path for runs made from the CLI. A failed run re-executes just as well: its notebook raises
in the last cell, papermill still writes the notebook, and the report shows where it failed.
The price: one more kernel start (a few seconds), and the report shows the notebook file as
saved (unsaved edits in JupyterLab do not reach it). Rejected: `--inject-output-path` (the
notebook on stdout has no path, and users would have to remember the flag), and rebuilding the
notebook from the kernel's history (display outputs such as figures are not kept there).

The HTML hides code cells, starts with the run's parameters table and its verdict, and carries
figures inline as base64 PNGs; the template drops nbconvert's CDN scripts (require.js, MathJax,
mermaid) so the file opens offline.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbformat
from jinja2 import DictLoader

from .artifacts import artifacts_root, read_journal
from .errors import ArtifactError

__all__ = [
    "execute_notebook",
    "notebook_html",
    "report_header",
    "render_report",
    "render_compare_report",
    "render_index",
    "render_reports",
    "find_runs",
]

log = logging.getLogger("gtnb.report")

# The lab template minus every external <script src=...>: a report must open offline.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

_CSS = """<style>
.gtnb-header table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 13px; }
.gtnb-header th, .gtnb-header td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.gtnb-header caption { text-align: left; font-weight: bold; padding: 4px 0; }
</style>"""


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, Any]) -> bool:
    """Execute `notebook` with papermill into `output`.

    Parameters:
        notebook: the source notebook (notebooks/sN.ipynb or compare.ipynb).
        output: where the executed notebook goes.
        parameters: papermill parameters (e.g. `run_dir`, `report=False`).

    Returns:
        True when every cell ran; False when a cell raised (the notebook is written anyway:
        a failed run's notebook raises in its last cell by design).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    log.info("executing %s on %s -> %s", notebook.name, parameters.get("run_dir"), output)
    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters=parameters, progress_bar=False,
            cwd=str(notebook.parent), kernel_name="python3",
        )
    except PapermillExecutionError as exc:
        log.info("%s raised in cell %s: %s", notebook.name, exc.exec_count, exc.ename)
        return False
    return True


def _verdict_for(run_dir: Path) -> Any:
    """The run's Verdict, or None when the artifacts cannot be judged."""
    from .analysis import load_run, verdict

    try:
        return verdict(load_run(run_dir))
    except Exception as exc:  # noqa: BLE001 - the report must render even when analysis fails
        log.warning("no verdict for %s: %s: %s", run_dir, type(exc).__name__, exc)
        return None


def _record_verdict(run_dir: Path, result: Any) -> None:
    """Keep the verdict in run.json (the contract's `verdict` key) so the index needs no analysis."""
    path = run_dir / "run.json"
    journal = read_journal(run_dir)
    journal["verdict"] = None if result is None else {
        "ok": bool(getattr(result, "ok", False)), "text": str(result)}
    tmp = path.with_name(".run.json.report.tmp")
    tmp.write_text(json.dumps(journal, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def report_header(run_dir: Path, result: Any = None) -> str:
    """The HTML the report starts with: parameters table, then the verdict.

    Parameters:
        run_dir: the run directory.
        result: its Verdict (computed when None).
    """
    from .notebook import Params, _outcome_from_journal, outcome_html

    journal = read_journal(run_dir)
    params = Params(scenario=str(journal.get("scenario")), mode=str(journal.get("mode")),
                    target=str(journal.get("target")))
    outcome = _outcome_from_journal(params, run_dir, analysed_only=True)
    result = result if result is not None else _verdict_for(run_dir)
    verdict_html = (result._repr_html_() if hasattr(result, "_repr_html_")
                    else f"<pre>{html.escape(str(result))}</pre>") if result is not None else (
        "<p><b>no verdict</b>: the artifacts could not be judged</p>")
    title = f"{journal.get('scenario')} · {journal.get('mode')} mode · {journal.get('target')}"
    return (f"{_CSS}<div class='gtnb-header'><h1>{html.escape(title)}</h1>"
            f"{outcome_html(outcome)}<h2>Verdict</h2>{verdict_html}</div>")


def notebook_html(executed: Path, header: str, output: Path, title: str = "gtnb report") -> Path:
    """Render an executed notebook to one self-contained HTML file, code hidden, `header` first.

    Parameters:
        executed: the executed notebook.
        header: HTML placed before the first cell.
        output: the HTML file to write.
        title: the page title.

    Returns:
        `output`.
    """
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    # papermill's "An Exception was encountered" banner links to a cell the header already names.
    nb.cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    # The header travels as the first cell's display output: it renders as plain HTML, and the
    # hidden-input setting below leaves no code around it.
    head = nbformat.v4.new_code_cell(source="")
    head.outputs = [nbformat.v4.new_output("display_data", data={"text/html": header})]
    nb.cells.insert(0, head)
    exporter = HTMLExporter(
        template_name="lab", template_file="gtnb_report.html.j2",
        extra_loaders=[DictLoader({"gtnb_report.html.j2": _TEMPLATE})],
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    output.write_text(body, encoding="utf-8")
    return output


def render_report(run_dir: str | os.PathLike[str], *, execute: bool = True) -> Path:
    """Write `<run_dir>/<scenario>.ipynb` (executed in analysis-only mode) and `report.html`.

    Parameters:
        run_dir: a run directory.
        execute: re-execute the scenario notebook even when an executed one is already there.

    Returns:
        The path of report.html.
    """
    from .notebook import notebook_for

    run_dir = Path(run_dir).resolve()
    journal = read_journal(run_dir)
    scenario = str(journal.get("scenario", ""))
    source = notebook_for(scenario)
    executed = run_dir / source.name
    if execute or not executed.exists():
        execute_notebook(source, executed, {"mode": journal.get("mode", "current"),
                                            "run_dir": str(run_dir), "report": False})
    result = _verdict_for(run_dir)
    _record_verdict(run_dir, result)
    title = f"{scenario} {journal.get('mode')} — gtnb report"
    out = notebook_html(executed, report_header(run_dir, result), run_dir / "report.html", title)
    log.info("report: %s", out)
    return out


def render_compare_report(run_dir_current: Path, run_dir_improved: Path) -> Path:
    """Execute compare.ipynb on two runs and write `compare.html` into the improved run's dir.

    Returns:
        The path of compare.html.
    """
    from .notebook import NOTEBOOKS_DIR

    cur, imp = Path(run_dir_current).resolve(), Path(run_dir_improved).resolve()
    executed = imp / "compare.ipynb"
    execute_notebook(NOTEBOOKS_DIR / "compare.ipynb", executed,
                     {"run_dir_current": str(cur), "run_dir_improved": str(imp), "report": False})
    journal = read_journal(imp)
    try:
        from .analysis import compare, load_run

        result = compare(load_run(cur), load_run(imp))
        verdict_html = (result._repr_html_() if hasattr(result, "_repr_html_")
                        else f"<pre>{html.escape(str(result))}</pre>")
    except Exception as exc:  # noqa: BLE001 - the report renders even when analysis fails
        verdict_html = f"<p><b>no comparison verdict</b>: {html.escape(f'{type(exc).__name__}: {exc}')}</p>"
    header = (f"{_CSS}<div class='gtnb-header'><h1>{html.escape(str(journal.get('scenario')))}: "
              f"current vs improved</h1><p>current: {html.escape(str(cur))}<br>improved: "
              f"{html.escape(str(imp))}</p><h2>Comparison verdict</h2>{verdict_html}</div>")
    return notebook_html(executed, header, imp / "compare.html",
                         f"{journal.get('scenario')} current vs improved — gtnb report")


def find_runs(artifacts: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every run directory under the artifacts root, newest first."""
    root = artifacts_root(artifacts)
    return sorted((p.parent for p in root.glob("*/*/run.json")), reverse=True)


def _index_row(root: Path, run_dir: Path) -> str:
    try:
        j = read_journal(run_dir)
    except ArtifactError as exc:
        return f"<tr><td colspan='8'>{html.escape(str(run_dir))}: {html.escape(str(exc))}</td></tr>"
    v = j.get("verdict")
    if isinstance(v, dict):
        verdict = ("<span class='ok'>holds</span>" if v.get("ok")
                   else "<span class='bad'>does not hold</span>")
        # The verdict's first line says what the client saw ("S1 current: cut: http_5xx ...").
        first = str(v.get("text", "")).splitlines()[0] if v.get("text") else ""
        verdict = (f"<span title='{html.escape(str(v.get('text', '')))}'>{verdict}</span>"
                   f"<br><small>{html.escape(first.partition(': ')[2] or first)}</small>")
    else:
        verdict = "—"
    status = str(j.get("status"))
    if status != "completed":
        status = f"<span class='bad'>{html.escape(status)}</span> at {html.escape(str(j.get('step')))}"
    links = [f"<a href='{html.escape((run_dir / name).relative_to(root).as_posix())}'>{label}</a>"
             for name, label in (("report.html", "report"), ("compare.html", "compare"))
             if (run_dir / name).exists()]
    cells = [str(j.get("started_at") or "")[:19].replace("T", " "), j.get("scenario"),
             j.get("mode"), j.get("target")]
    return ("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
            + f"<td>{status}</td><td>{verdict}</td><td>{' · '.join(links) or '—'}</td>"
            + f"<td><code>{html.escape(run_dir.relative_to(root).as_posix())}</code></td></tr>")


def render_index(artifacts: str | os.PathLike[str] | None = None) -> Path:
    """Write `<artifacts>/index.html` listing every run (newest first).

    Returns:
        The path of index.html.
    """
    root = artifacts_root(artifacts)
    root.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(_index_row(root, d) for d in find_runs(root))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>gtnb runs</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
th {{ background: #f5f5f5; }}
.ok {{ color: #2e7d32; font-weight: bold; }} .bad {{ color: #c62828; font-weight: bold; }}
</style></head><body>
<h1>gtnb runs</h1>
<p>Every run under <code>{html.escape(str(root))}</code>, newest first. The verdict says whether
the run's expectations for its mode held.</p>
<table><thead><tr><th>date (UTC)</th><th>scenario</th><th>mode</th><th>target</th><th>status</th>
<th>verdict</th><th>report</th><th>run directory</th></tr></thead>
<tbody>
{rows or '<tr><td colspan="8">no runs yet</td></tr>'}
</tbody></table></body></html>
"""
    out = root / "index.html"
    out.write_text(page, encoding="utf-8")
    return out


def render_reports(
    run_dirs: Iterable[str | os.PathLike[str]], artifacts: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Render report.html for each run (all runs under the root when none given) and the index.

    Parameters:
        run_dirs: run directories; empty = every run under the artifacts root.
        artifacts: the artifacts root (default `artifacts/` or `$GTNB_ARTIFACTS`).

    Returns:
        The reports' paths, then the index's path last.
    """
    dirs = [Path(d) for d in run_dirs] or find_runs(artifacts)
    reports = []
    for d in dirs:
        if not (d / "run.json").exists():
            raise ArtifactError(f"{d} has no run.json: give run directories such as "
                                "artifacts/<YYYYmmdd-HHMMSS>/S1-current")
        reports.append(render_report(d))
    return [*reports, render_index(artifacts)]
