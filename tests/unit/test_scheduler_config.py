"""Scheduler profiles from a KubeSchedulerConfiguration file: merging with the defaults, and errors
that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from podling.scheduler.config import DEFAULT_FILTERS, DEFAULT_SCORES, ConfigError, load_config

HEADER = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scheduler.yaml"
    path.write_text(text)
    return path


def test_no_file_is_one_default_profile() -> None:
    config = load_config(None)
    (profile,) = config.profiles
    assert profile.scheduler_name == "default-scheduler"
    assert profile.filters == DEFAULT_FILTERS and profile.scores == DEFAULT_SCORES
    assert (config.percentage_of_nodes_to_score, config.pod_initial_backoff, config.pod_max_backoff) == (0, 1.0, 10.0)


def test_a_file_without_profiles_is_the_default_profile_with_its_settings(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HEADER + "percentageOfNodesToScore: 30\npodMaxBackoffSeconds: 20\n"))
    assert config.profiles[0].filters == DEFAULT_FILTERS
    assert (config.percentage_of_nodes_to_score, config.pod_max_backoff) == (30, 20.0)


def test_plugins_merge_with_the_defaults_as_kube_scheduler_merges_them(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HEADER + """\
profiles:
- schedulerName: default-scheduler
- schedulerName: packer
  percentageOfNodesToScore: 100
  plugins:
    filter:
      disabled: [{name: NodePorts}, {name: VolumeRestrictions}]
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
      enabled:
      - {name: SelectorSpread, weight: 7}
- schedulerName: minimal
  plugins:
    filter:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit}, {name: NodeUnschedulable}]
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeAffinity}]
"""))
    default, packer, minimal = config.profiles
    assert default.filters == DEFAULT_FILTERS
    assert packer.filters == ("NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity", "NodeResourcesFit")
    assert packer.scores == (("TaintToleration", 3), ("NodeAffinity", 2), ("NodeResourcesFit", 1),
                             ("SelectorSpread", 7))  # re-enabled in the default's place, with the new weight
    assert config.percentage(packer) == 100 and config.percentage(default) == 0
    assert minimal.filters == ("NodeResourcesFit", "NodeUnschedulable")
    assert minimal.scores == (("NodeAffinity", 1),)  # no weight is 1


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    ("apiVersion: v1\nkind: KubeSchedulerConfiguration\n", 1, "apiVersion", "must be kubescheduler.config.k8s.io/v1"),
    (HEADER + "profile: []\n", 3, "profile", "unknown field"),
    (HEADER + "percentageOfNodesToScore: 101\n", 3, "percentageOfNodesToScore", "between 0 and 100"),
    (HEADER + "podInitialBackoffSeconds: 5\npodMaxBackoffSeconds: 2\n", 4, "podMaxBackoffSeconds", "at least"),
    (HEADER + "profiles: []\n", 3, "profiles", "non-empty list"),
    (HEADER + "profiles:\n- schedulerName: a\n- schedulerName: a\n", 5, "profiles[1].schedulerName",
     "'a' is the name of profiles[0] too"),
    (HEADER + "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: Nope\n", 7,
     "profiles[0].plugins.filter.enabled[0].name", "'Nope' is not a filter plugin"),
    (HEADER + "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: SelectorSpread\n", 7,
     "profiles[0].plugins.filter.enabled[0].name", "not a filter plugin"),
    (HEADER + "profiles:\n- plugins:\n    score:\n      enabled:\n      - {name: NodeAffinity, weight: 500}\n", 7,
     "profiles[0].plugins.score.enabled[0].weight", "between 0 and 100"),
    (HEADER + "profiles:\n- plugins:\n    filter:\n      enabled:\n      - {name: NodeName, weight: 2}\n", 7,
     "profiles[0].plugins.filter.enabled[0].weight", "unknown field"),
    (HEADER + "profiles:\n- plugins:\n    preBind: {}\n", 5, "profiles[0].plugins.preBind", "unknown field"),
    (HEADER + "profiles:\n- plugins:\n    score:\n      enabled: NodeAffinity\n", 6,
     "profiles[0].plugins.score.enabled", "must be a list"),
])
def test_bad_configuration_names_file_line_and_field(tmp_path: Path, text: str, line: int, field: str,
                                                     message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.source_file, error.line, error.field) == (str(path), line, field)
    assert message in error.message
    assert str(error).startswith(f"{path}:{line}: {field}: ")


def test_yaml_errors_and_missing_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scheduler\.yaml:5: expected .,. or .\]."):
        load_config(write(tmp_path, HEADER + "profiles:\n  - [unclosed\n"))
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: .*No such file"):
        load_config(tmp_path / "nowhere.yaml")
    with pytest.raises(ConfigError, match="want one KubeSchedulerConfiguration document, found 2"):
        load_config(write(tmp_path, HEADER + "---\n" + HEADER))
