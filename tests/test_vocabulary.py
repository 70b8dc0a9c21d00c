"""gtnb.vocabulary: one set of names, and every module that re-exports them uses that set."""

from __future__ import annotations

import importlib

import pytest

from gtnb import vocabulary
from gtnb.errors import ConfigError
from gtnb.scenarios import SCENARIOS as SCENARIO_DATA


@pytest.mark.parametrize(
    "module",
    ["gtnb.manifests", "gtnb.scenarios", "gtnb.modes", "gtnb.haproxy_config", "gtnb.analysis.verdict",
     "gtnb.notebook_params", "gtnb.notebook", "gtnb.targets.local.deployment"],
)
def test_modules_reexport_the_one_modes_tuple(module: str) -> None:
    assert importlib.import_module(module).MODES is vocabulary.MODES


def test_targets_and_scenario_names_are_the_vocabulary_ones() -> None:
    import gtnb.notebook_params
    import gtnb.targets

    assert gtnb.targets.TARGETS is vocabulary.TARGETS is gtnb.notebook_params.TARGETS
    # The scenario data (scenarios.py) must cover exactly the names every check accepts.
    assert tuple(SCENARIO_DATA) == vocabulary.SCENARIOS


def test_ensure_one_of_names_value_choices_fix_and_where() -> None:
    with pytest.raises(ConfigError) as info:
        vocabulary.ensure_mode("fast", sep=" | ", fix="set it", where="run.json")
    assert str(info.value) == "run.json: mode 'fast' is not one of current | improved: set it"
    assert vocabulary.ensure_target("homelab") == "homelab"


def test_scenario_names_are_case_and_space_insensitive_but_quoted_as_given() -> None:
    assert vocabulary.ensure_scenario_name(" s3 ") == "S3"
    with pytest.raises(ConfigError, match="scenario 's5' is not one of S1, S2, S3, S4: pick one of those"):
        vocabulary.ensure_scenario_name("s5")
    with pytest.raises(ConfigError, match="scenario None is not one of"):
        vocabulary.ensure_scenario_name(None)


def test_other_mode_swaps_and_refuses_unknown() -> None:
    assert [vocabulary.other_mode(m) for m in vocabulary.MODES] == ["improved", "current"]
    with pytest.raises(ConfigError, match="'fast' is not one of current, improved"):
        vocabulary.other_mode("fast")
