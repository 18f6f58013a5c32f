"""Flink configuration: nested YAML to dotted keys, layered distribution < file < overlay."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gridstream import flinkconf

pytestmark = pytest.mark.unit


def test_flatten_joins_nested_keys_with_dots() -> None:
    """Nested mappings become Flink's dotted keys, at any depth and mixed with dotted names."""
    tree = {"jobmanager": {"rpc.address": "localhost", "memory": {"process": {"size": "1g"}}}}

    assert flinkconf.flatten(tree) == {
        "jobmanager.rpc.address": "localhost",
        "jobmanager.memory.process.size": "1g",
    }


def test_flatten_writes_values_as_flink_reads_them() -> None:
    """Booleans are lower case, numbers are strings, lists are `;`-separated."""
    tree = {"a": True, "b": False, "n": 4, "paths": ["x", "y"]}

    assert flinkconf.flatten(tree) == {"a": "true", "b": "false", "n": "4", "paths": "x;y"}


def test_effective_keeps_the_distributions_jvm_options() -> None:
    """The distribution's `env.java.opts.all` (flags Java 17 needs) survives the layering."""
    distribution = flinkconf.read(flinkconf.flink_home() / "conf" / "config.yaml")

    merged = flinkconf.effective()

    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in merged["env.java.opts.all"]
    assert merged["env.java.opts.all"] == distribution["env.java.opts.all"]


def test_effective_applies_the_project_file_then_the_overlay() -> None:
    """The project file overrides the distribution, and the overlay overrides both."""
    distribution = flinkconf.read(flinkconf.flink_home() / "conf" / "config.yaml")
    project = flinkconf.read(flinkconf.PROJECT_FLINK_CONF)
    key = "taskmanager.numberOfTaskSlots"
    assert distribution[key] != project[key]  # the precondition that makes the order visible

    assert flinkconf.effective()[key] == project[key]
    assert flinkconf.effective({key: "9"})[key] == "9"
    assert flinkconf.effective({"rest.port": "28082"})["rest.port"] == "28082"
    assert flinkconf.effective()["state.backend.type"] == "rocksdb"


def test_write_conf_dir_writes_the_effective_config_and_logging_files(tmp_path: Path) -> None:
    """A conf dir holds the effective `config.yaml`, the log4j files, workers and masters."""
    conf = flinkconf.write_conf_dir(tmp_path / "conf", {"rest.port": "28082"})

    assert yaml.safe_load((conf / "config.yaml").read_text()) == flinkconf.effective(
        {"rest.port": "28082"}
    )
    assert (conf / "log4j.properties").is_file()
    assert (conf / "masters").read_text() == "localhost:28082\n"
    assert (conf / "workers").read_text() == "localhost\n"
