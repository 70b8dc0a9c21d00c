"""`gtnb run`'s flags reach gtnb.scenarios.run: bad values are refused before any lab starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gtnb.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # S3's `path` is validated by run(): the flag was passed through.
        (["run", "S3", "--mode", "current", "--path", "fast"], "path='fast' must start with '/'"),
        # S1 takes no `path`: run() names the parameters it does take.
        (["run", "S1", "--mode", "current", "--path", "/fast"], "path is not a parameter of S1"),
        (["run", "S3", "--mode", "current", "--workers", "0"], "workers=0 must be a whole number"),
    ],
)
def test_run_flags_reach_the_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      argv: list[str], message: str) -> None:
    code = main([*argv, "--state-dir", str(tmp_path / "no-lab"), "--artifacts", str(tmp_path / "arts")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written, no lab started
