"""The public surface DESIGN.md promises: `from gtnb import run, load_run, toggle`, and a light
`import gtnb` (the CLI's start-up must not pay for pandas, httpx or matplotlib)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gtnb


def test_entry_points_resolve_to_their_modules() -> None:
    from gtnb import load_run, run, toggle

    assert (run.__module__, toggle.__module__) == ("gtnb.scenarios", "gtnb.modes")
    assert load_run.__module__.startswith("gtnb.analysis")
    assert {"run", "load_run", "toggle"} <= set(gtnb.__all__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gtnb.nope  # noqa: B018


def test_import_gtnb_and_cli_stay_light() -> None:
    code = (
        "import sys, gtnb, gtnb.cli\n"
        "heavy = sorted(m for m in ('pandas', 'httpx', 'matplotlib', 'kubernetes', 'paramiko')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
