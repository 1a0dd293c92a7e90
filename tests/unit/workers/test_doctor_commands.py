"""dockyard.workers.doctor_commands: the line ``dockyard doctor`` prints of each host record."""

from __future__ import annotations

from dockyard.workers.doctor_commands import build_network_line


def test_a_host_whose_steps_reach_nothing_says_no_with_what_was_probed() -> None:
    record = {"host": "h1", "build_network": {"network": "none", "probed": ["127.0.0.1:6390"], "reached": [], "reaches_farm": False, "error": None}}
    assert build_network_line(record) == "h1: build network none reaches the farm: no (probed 127.0.0.1:6390)"


def test_a_host_whose_steps_reach_the_farm_says_yes_with_the_addresses() -> None:
    probe = {"network": "host", "probed": ["a:1", "b:2"], "reached": ["a:1"], "reaches_farm": True, "error": None, "accepted": True}
    line = build_network_line({"host": "h2", "build_network": probe})
    assert line.startswith("h2: build network host reaches the farm: yes (a:1)") and "accepted" in line


def test_an_unprobed_or_failed_probe_is_unknown() -> None:
    assert "reaches the farm: unknown (not probed" in build_network_line({"host": "h3"})
    failed = {"network": "none", "probed": [], "reached": [], "reaches_farm": None, "error": "no image"}
    assert build_network_line({"host": "h4", "build_network": failed}) == "h4: build network none reaches the farm: unknown (no image)"
