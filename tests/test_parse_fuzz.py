"""No input crashes a parser: random text, random bytes, and mangled real lines."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gtnb.analysis import (parse_chunks, parse_client, parse_curl_out, parse_curl_stream, parse_curl_tsv,
                           parse_envoy, parse_haproxy, parse_hc, parse_stat)

FIX = Path(__file__).parent / "fixtures" / "analysis"
PARSERS = [parse_hc, parse_envoy, parse_haproxy, parse_stat, parse_client, parse_chunks,
           parse_curl_out, parse_curl_tsv, lambda lines: parse_curl_stream(lines, err_file=lines)[0]]
REAL = [ln for f in ("hc.log", "envoy.log", "envoy-forms.log", "haproxy.log", "stat.csv", "client.csv")
        for ln in (FIX / f).read_text().splitlines()]

lines_text = st.lists(st.text(max_size=200), max_size=30)
lines_bytes = st.lists(st.binary(max_size=200), max_size=30)


@st.composite
def mangled(draw: st.DrawFn) -> list[str]:
    """Real lines cut, spliced and sprinkled with quotes, tabs and brackets."""
    out = []
    for _ in range(draw(st.integers(1, 20))):
        line = draw(st.sampled_from(REAL))
        cut = draw(st.integers(0, len(line)))
        junk = draw(st.text(alphabet='"[]{}\t =/:,-0123456789Z', max_size=10))
        out.append(line[:cut] + junk + line[cut:] if draw(st.booleans()) else line[:cut])
    return out


def _check(lines: list) -> None:
    for parser in PARSERS:
        result = parser(lines)
        rows, skipped = result
        # Whatever came in, the frame keeps its types and every skip names a line.
        assert str(rows["ts"].dtype) == "datetime64[ns, UTC]"
        assert rows["ts"].notna().all() or parser not in PARSERS[:6]  # seed files may lack times
        assert all(s.line_no >= 1 and s.reason for s in skipped)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines_text)
def test_random_text_never_crashes(lines: list[str]) -> None:
    _check(lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines_bytes)
def test_random_bytes_never_crash(lines: list[bytes]) -> None:
    _check(lines)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled())
def test_mangled_real_lines_never_crash(lines: list[str]) -> None:
    _check(lines)
