"""dockyard.tasks.engine.network_probe: the farm's addresses, the probe step's script, and reading its output."""

from __future__ import annotations

from dockyard.tasks.engine.network_probe import (
    DONE_EXIT, MARK, farm_addresses, parse_probe_output, probe_dockerfile, url_addresses,
)
from tests.unit.support import make_settings

PROBED = ["127.0.0.1:6390", "127.0.0.1:6391", "127.0.0.1:9808"]


def test_the_farm_addresses_are_its_redis_context_store_and_metrics_each_once() -> None:
    settings = make_settings(
        redis_url="redis://u:p@127.0.0.1:6390/0", cache_url="redis://127.0.0.1:6390/3",
        context_store_url="redis://u:p@10.1.2.3:6391/0",
    )
    assert farm_addresses(settings, ("0.0.0.0", 9808)) == ["127.0.0.1:6390", "10.1.2.3:6391", "127.0.0.1:9808"]
    assert farm_addresses(settings, None) == ["127.0.0.1:6390", "10.1.2.3:6391"]


def test_sentinel_urls_give_their_sentinels_and_unix_sockets_nothing() -> None:
    assert url_addresses("sentinel://127.0.0.1:26379/0;sentinel://127.0.0.1:26380/0") == ["127.0.0.1:26379", "127.0.0.1:26380"]
    assert url_addresses("unix:///run/redis.sock") == []
    assert url_addresses("rediss://redis.example:6380/0") == ["redis.example:6380"]
    assert url_addresses("redis://redis.example/0") == ["redis.example:6379"]


def test_the_probe_dockerfile_tries_every_address_and_always_fails() -> None:
    text = probe_dockerfile("base:1", PROBED)
    assert text.startswith("FROM base:1\nLABEL dockyard.probe=build-network\nRUN ")
    for address in PROBED:
        host, port = address.split(":")
        assert f"try {host} {port} &" in text
    assert text.rstrip().endswith(f"exit {DONE_EXIT}")


def test_reached_addresses_are_read_from_the_steps_lines() -> None:
    lines = ["Step 2/2 : RUN ...", f"{MARK} missed 127.0.0.1:6390", f"{MARK} reached 127.0.0.1:9808",
             f"{MARK} reached 127.0.0.1:6391", "noise"]
    found = parse_probe_output(lines, PROBED, "host")
    assert found.reached == ["127.0.0.1:6391", "127.0.0.1:9808"] and found.reaches_farm is True and found.error is None
    assert found.record()["network"] == "host"


def test_none_reached_is_a_no() -> None:
    found = parse_probe_output([f"{MARK} missed {address}" for address in PROBED], PROBED, "none")
    assert found.reaches_farm is False and found.reached == []


def test_an_image_without_a_tool_or_a_silent_step_is_unknown_never_a_no() -> None:
    no_tool = parse_probe_output([f"{MARK} no-tool"] + [f"{MARK} missed {a}" for a in PROBED], PROBED, "none")
    assert no_tool.reaches_farm is None and "nc nor python3" in (no_tool.error or "")
    silent = parse_probe_output([f"{MARK} missed 127.0.0.1:6390"], PROBED, "none")
    assert silent.reaches_farm is None and "127.0.0.1:6391" in (silent.error or "")
