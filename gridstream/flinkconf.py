"""The project's `flink-conf.yaml`, flattened and overlaid for one environment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gridstream.config import PROJECT_ROOT, ConfigError

PROJECT_FLINK_CONF = PROJECT_ROOT / "flink-conf.yaml"


def flink_home() -> Path:
    """The Flink distribution shipped inside the `apache-flink` wheel."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested YAML keys to Flink's dotted keys, values as Flink reads them."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, bool):
            flat[name] = str(value).lower()
        elif isinstance(value, list):
            flat[name] = ";".join(str(v) for v in value)
        else:
            flat[name] = str(value)
    return flat


def read(path: Path) -> dict[str, str]:
    """One YAML configuration file, flattened; ConfigError if it is not a mapping of keys."""
    tree = yaml.safe_load(path.read_text()) or {}
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{path} is not a mapping of Flink keys")
    return flatten(tree)


def with_conf_file(conf_file: str, owned: Mapping[str, str]) -> dict[str, str]:
    """The keys of `conf_file` (`stack.flink_conf_file`; none when empty) under `owned`, the keys
    a cluster sets for its environment, which the file may not set."""
    if not conf_file:
        return dict(owned)
    path = Path(conf_file)
    try:
        keys = read(path)
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(
            f"stack.flink_conf_file: cannot read {path}: {err}; write it or clear the setting"
        ) from err
    except ConfigError as err:
        raise ConfigError(f"stack.flink_conf_file: {err}") from err
    clash = sorted(set(keys) & set(owned))
    if clash:
        raise ConfigError(
            f"stack.flink_conf_file: {path} sets {', '.join(clash)}, which the local stack sets "
            "from its own settings (ports, paths): remove it"
        )
    return {**keys, **owned}


def effective(overlay: Mapping[str, str] | None = None) -> dict[str, str]:
    """Distribution defaults (JVM flags Java 17 needs), then the project file, then `overlay`."""
    merged = read(flink_home() / "conf" / "config.yaml")
    merged.update(read(PROJECT_FLINK_CONF))
    merged.update(overlay or {})
    return merged


def write_conf_dir(conf_dir: Path, overlay: Mapping[str, str], workers: str = "localhost") -> Path:
    """A Flink conf dir: `config.yaml` plus the distribution's logging files."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
        source = flink_home() / "conf" / name
        (conf_dir / name).write_bytes(source.read_bytes())
    (conf_dir / "workers").write_text(f"{workers}\n")
    (conf_dir / "masters").write_text(f"localhost:{overlay.get('rest.port', '8081')}\n")
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(effective(overlay), sort_keys=True))
    return conf_dir
