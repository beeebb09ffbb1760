"""SLA definitions: the example file, and bad input that must name the file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fibreflow.config import load_settings
from fibreflow.errors import ConfigError
from fibreflow.sla.checks import CHECK_TYPES
from fibreflow.sla.config import SLAConfig, load_sla_config, sla_config_from_dict

EXAMPLE = Path(__file__).resolve().parents[2] / "data" / "slas.example.yaml"

GOOD = """\
slas:
  orders_fresh: 300
  images_fresh: 600
checks:
  orders_fresh:
    type: sql_freshness
    url: "${ORDERS_DB}"
    query: "SELECT max(updated_at) FROM orders"
    warn_after: 200
  images_fresh: {type: file_age, path: /srv/images, glob: "*.jpg", timeout: 3}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "slas.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_sla_config(path)
    assert str(path) in str(info.value)
    return info.value


def test_example_file_has_the_twelve_slas_each_with_a_check(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NEON_DATABASE_URL", "CONVEX_URL", "VLM_IMAGE_DIR"):
        monkeypatch.delenv(var, raising=False)  # variables are not needed to load
    config = load_sla_config(EXAMPLE)
    assert len(config.slas) == 12 and list(config.checks) == list(config.slas)
    assert {c.type for c in config.checks.values()} == set(CHECK_TYPES)
    assert config.slas["neon_to_convex_max_delay"] == 300
    assert config.slas["whatsapp_session_max_age"] == 86400
    assert config.checks["neon_to_convex_max_delay"].params["source"]["url"] == "${NEON_DATABASE_URL}"
    assert len(config.alerts) >= 3 and config.monitoring.retention_days == 30
    assert config.checks["convex_query_max_latency"].timeout == 5
    assert config.monitoring.maintenance_windows[0].days == ["sun"]


def test_good_file_defaults_and_overrides(tmp_path: Path) -> None:
    config = load_sla_config(write(tmp_path, GOOD), settings=load_settings())
    orders, images = config.checks["orders_fresh"], config.checks["images_fresh"]
    assert orders.threshold == 300 and orders.warn_after == 200 and orders.violation_above == 300
    assert orders.params == {"url": "${ORDERS_DB}", "query": "SELECT max(updated_at) FROM orders"}
    assert orders.timeout == load_settings().sla.check_timeout_s  # monitoring sets none
    assert images.timeout == 3
    assert config.alerts == [] and config.path == tmp_path / "slas.yaml"


def test_settings_timeout_applies_when_monitoring_sets_none(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "fibreflow.yaml"
    settings_file.write_text("sla:\n  check_timeout_s: 4\n")
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(settings_file))
    config = load_sla_config(write(tmp_path, GOOD))
    assert config.checks["orders_fresh"].timeout == 4
    config = load_sla_config(write(tmp_path, GOOD + "monitoring: {timeout: 7}\n"))
    assert config.checks["orders_fresh"].timeout == 7 and config.checks["images_fresh"].timeout == 3


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, """\
        slas:
          orders_fresh: 300
        checks:
          orders_fresh: {type: file_age, path: /x
          other: 1
        """)
    assert "malformed YAML" in str(err) and err.line in (4, 5)


def test_unknown_check_type_lists_the_known_ones(tmp_path: Path) -> None:
    err = load_error(tmp_path, """\
        slas:
          orders_fresh: 300
        checks:
          orders_fresh:
            type: sql_freshnes
            url: x
        """)
    assert err.line == 5 and "unknown check type 'sql_freshnes'" in str(err)
    for name in CHECK_TYPES:
        assert name in str(err)


def test_sla_with_no_check(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD.replace("  images_fresh: 600\n", "  images_fresh: 600\n  lonely: 60\n"))
    assert err.line == 4 and "SLA 'lonely' has no check" in str(err)


def test_check_with_no_sla(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD + "  stray: {type: file_age, path: /x}\n")
    assert err.line == 11 and "check 'stray' has no SLA" in str(err)


def test_unknown_keys_name_key_and_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD.replace("    warn_after: 200\n", "    warn_afterr: 200\n"))
    assert err.line == 9 and "unknown key 'warn_afterr' in check 'orders_fresh'" in str(err)
    assert "known: url, query" in str(err)
    err = load_error(tmp_path, GOOD + "alert:\n  - condition: orders_fresh > 1\n")
    assert err.line == 11 and "unknown key 'alert'" in str(err)


def test_nested_source_errors(tmp_path: Path) -> None:
    base = """\
        slas:
          lag: 60
        checks:
          lag:
            type: sync_lag
            source:
              type: sql
              url: "${DB}"
              querry: "SELECT 1"
            target: {type: file, path: /x}
        """
    err = load_error(tmp_path, base)
    assert err.line == 9 and "unknown key 'source.querry'" in str(err)
    err = load_error(tmp_path, base.replace("type: sql", "type: kafka"))
    assert err.line == 6 and "'sql', 'http_json', 'file'" in str(err)


def test_missing_required_parameter(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD.replace('    query: "SELECT max(updated_at) FROM orders"\n', ""))
    assert "check 'orders_fresh' (sql_freshness) needs 'query'" in str(err)


def test_bad_numbers(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD.replace("orders_fresh: 300", "orders_fresh: five minutes"))
    assert err.line == 2 and "slas.orders_fresh must be a number" in str(err)
    err = load_error(tmp_path, GOOD.replace("warn_after: 200", "warn_after: 300"))
    assert err.line == 9 and "warn_after (300) must be below the threshold slas.orders_fresh (300)" in str(err)
    err = load_error(tmp_path, GOOD.replace("timeout: 3", "timeout: 0"))
    assert err.line == 10 and "timeout must be above 0" in str(err)


def test_alert_condition_syntax_is_checked_at_load(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD + "alerts:\n  - condition: orders_fresh ** 2 > 300\n")
    assert err.line == 12 and "alerts[0].condition" in str(err) and "'**'" in str(err)
    err = load_error(tmp_path, GOOD + "alerts:\n  - condition: __import__('os').system('x') > 1\n")
    assert err.line == 12 and "only status(NAME) may be called" in str(err)


def test_alert_condition_naming_unknown_sla(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD + "alerts:\n  - {condition: orders_fresh > 300}\n"
                                      "  - {condition: order_fresh > 300, severity: critical}\n")
    assert err.line == 13 and "unknown SLA 'order_fresh'" in str(err) and "known: orders_fresh" in str(err)


def test_alert_rule_fields(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD + "alerts:\n  - condition: orders_fresh > 1\n    chanel: '#x'\n")
    assert err.line == 13 and "unknown key 'chanel' in alerts[0]" in str(err)
    err = load_error(tmp_path, GOOD + "alerts:\n  - condition: orders_fresh > 1\n    message: '{nme} late'\n")
    assert err.line == 13 and "{nme}" in str(err)
    err = load_error(tmp_path, GOOD + "alerts:\n  - {condition: orders_fresh > 1, action: webhook}\n")
    assert "action webhook needs a 'url'" in str(err)


def test_maintenance_window_names_unknown_sla(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD + "monitoring:\n  maintenance_windows:\n"
                                      "    - {start: '01:00', end: '02:00', slas: [nope]}\n")
    assert err.line == 13 and "unknown SLA 'nope'" in str(err)


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert "empty SLA file" in str(load_error(tmp_path, ""))
    assert "top level must be a mapping" in str(load_error(tmp_path, "- a\n- b\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_sla_config(tmp_path / "nope.yaml")


def test_config_from_dict_and_select(tmp_path: Path) -> None:
    config = sla_config_from_dict({"slas": {"a": 10, "b": 20},
                                   "checks": {"a": {"type": "file_age", "path": "/x"},
                                              "b": {"type": "command", "command": "echo 1"}}})
    assert isinstance(config, SLAConfig) and config.path is None
    assert [c.name for c in config.select(["b"])] == ["b"]
    with pytest.raises(ConfigError, match="unknown SLA 'c'; known: a, b"):
        config.select(["c"])


@pytest.mark.parametrize("setting, key, problem", [
    ("retention_days: -1", "retention_days", "greater than or equal to 1"),
    ("retention_days: 1000000", "retention_days", "less than or equal to 36500"),
    ("check_interval: 0", "check_interval", "greater than or equal to 1"),
    ("check_interval: .nan", "check_interval", "finite number"),
    ("timeout: .inf", "timeout", "finite number"),
    ("cooldown: -5", "cooldown", "greater than or equal to 0"),
    ("compliance_window_days: 0", "compliance_window_days", "greater than or equal to 1"),
    ("compliance_target: 1.5", "compliance_target", "less than 1"),
])
def test_monitoring_numbers_have_ranges(tmp_path: Path, setting: str, key: str, problem: str) -> None:
    err = load_error(tmp_path, GOOD + f"monitoring:\n  cooldown: 60\n  {setting}\n")
    assert err.line == 13 and err.key == f"monitoring.{key}"
    assert f"monitoring: {key}: " in str(err) and problem in str(err)


@pytest.mark.parametrize("old, new, line, problem", [
    ("orders_fresh: 300", "orders_fresh: .inf", 2, "slas.orders_fresh must be a finite number"),
    ("warn_after: 200", "warn_after: .nan", 9, "warn_after must be a finite number"),
    ("timeout: 3", "timeout: 5000", 10, "timeout must be at most 3600"),
    ("timeout: 3", "timeout: " + "9" * 400, 10, "timeout must be a finite number"),
])
def test_check_numbers_are_finite_and_in_range(tmp_path: Path, old: str, new: str, line: int, problem: str) -> None:
    err = load_error(tmp_path, GOOD.replace(old, new))
    assert err.line == line and problem in str(err)


@pytest.mark.parametrize("field, template, problem", [
    ("message", "'{name!r:>99999999}'", "asks for a width or precision above 100"),
    ("message", "'{value:.500f}'", "asks for a width or precision above 100"),
    ("resolved_message", "'{name:0>{threshold}}'", "may not contain fields"),
    ("message", "'" + "x" * 5000 + "'", "at most 4000 are allowed"),
])
def test_alert_templates_are_bounded_at_load(tmp_path: Path, field: str, template: str, problem: str) -> None:
    err = load_error(tmp_path, GOOD + f"alerts:\n  - condition: orders_fresh > 1\n    {field}: {template}\n")
    assert err.line == 13 and err.key == f"alerts.0.{field}" and problem in str(err)
    ok = load_sla_config(write(tmp_path, GOOD + "alerts:\n  - condition: orders_fresh > 1\n"
                                                "    message: '{name:>20} {value:8.2f} {threshold:,.1f}'\n"))
    assert ok.alerts[0].message.startswith("{name:>20}")
