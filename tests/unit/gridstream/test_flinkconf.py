"""Flink configuration: nested YAML to dotted keys, layered distribution < file < overlay;
the local stack's extra file (`stack.flink_conf_file`) under the keys the stack sets itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gridstream import config, flinkconf
from gridstream.config import ConfigError, StackSettings
from gridstream.stack.components import Flink

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


def cluster_with_conf_file(tmp_path: Path, keys: object) -> Flink:
    """The local stack's Flink cluster, its settings file naming a `stack.flink_conf_file`
    that holds `keys`."""
    conf_file = tmp_path / "extra.yaml"
    conf_file.write_text(yaml.safe_dump(keys))
    settings_file = tmp_path / "gridstream.yaml"
    stack = {"home": str(tmp_path / "stack"), "flink_conf_file": str(conf_file)}
    settings_file.write_text(yaml.safe_dump({"stack": stack}))
    return Flink(config.load(settings_file, env={}))


def test_the_stacks_conf_file_wins_over_the_project_file(tmp_path: Path) -> None:
    """`stack.flink_conf_file`'s keys, nested or dotted, reach the cluster's `config.yaml` over
    flink-conf.yaml's, beside the keys the stack sets itself."""
    keys = {
        "state.backend.rocksdb.compression.per.level": "NO_COMPRESSION",
        "gridstream": {"rocksdb": {"max-manifest-file-size": "128kb"}},
    }
    cluster = cluster_with_conf_file(tmp_path, keys)

    conf = flinkconf.write_conf_dir(tmp_path / "conf", cluster.overlay())

    written = yaml.safe_load((conf / "config.yaml").read_text())
    assert written["state.backend.rocksdb.compression.per.level"] == "NO_COMPRESSION"
    assert written["gridstream.rocksdb.max-manifest-file-size"] == "128kb"
    assert written["rest.port"] == str(cluster.settings.stack.flink_rest_port)


@pytest.mark.parametrize("key", ["rest.port", "io.tmp.dirs", "high-availability.storageDir"])
def test_the_stacks_conf_file_may_not_set_what_the_stack_sets(tmp_path: Path, key: str) -> None:
    """A key the stack sets from its own settings (a port, a path) is refused, named."""
    cluster = cluster_with_conf_file(tmp_path, {key: "elsewhere"})

    with pytest.raises(ConfigError, match=re.escape(key)):
        cluster.overlay()


def test_a_missing_stack_conf_file_says_what_to_do(tmp_path: Path) -> None:
    """A `stack.flink_conf_file` that cannot be read names the setting, the path and the fix."""
    missing = tmp_path / "missing.yaml"
    cluster = Flink(config.Settings(StackSettings(home=tmp_path, flink_conf_file=str(missing))))

    with pytest.raises(ConfigError, match=r"stack\.flink_conf_file") as raised:
        cluster.overlay()
    assert str(missing) in str(raised.value)
    assert "clear the setting" in str(raised.value)


def test_a_stack_conf_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    """A file of something other than keys says so."""
    cluster = cluster_with_conf_file(tmp_path, ["NO_COMPRESSION"])

    with pytest.raises(ConfigError, match="not a mapping"):
        cluster.overlay()
