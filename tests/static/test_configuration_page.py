"""The configuration page (docs/configuration.md) matches the settings object: every setting, its variable, its default."""

from __future__ import annotations

import re
from pathlib import Path

from dockyard.config.settings import Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def table_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[1].startswith("`DOCKYARD_"):
            rows[cells[0]] = cells
    return rows


def test_every_setting_is_documented_with_its_variable_and_default() -> None:
    rows = table_rows()
    assert rows, "docs/configuration.md has no settings table"
    for name, field in Settings.model_fields.items():
        assert name in rows, f"docs/configuration.md has no row for {name}"
        assert rows[name][1] == f"`DOCKYARD_{name.upper()}`"
        default = field.default
        if isinstance(default, (int, float, str)) and not isinstance(default, bool):
            shown = re.sub(r"[`]", "", rows[name][2])
            assert shown.startswith(str(default).rstrip("0").rstrip(".") if isinstance(default, float) else str(default)), (name, shown)
    assert set(rows) <= set(Settings.model_fields), f"docs/configuration.md documents unknown settings: {set(rows) - set(Settings.model_fields)}"
