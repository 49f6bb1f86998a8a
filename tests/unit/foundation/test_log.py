"""agent.log: one JSON object per line with Kata's field names."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from agent import log as agent_log


@pytest.fixture
def capture() -> tuple[logging.Logger, agent_log.LogSink, io.StringIO]:
    stream = io.StringIO()
    sink = agent_log.LogSink(stream)
    sink.setFormatter(agent_log.JsonFormatter())
    logger = logging.getLogger("agent.rpc.server.test")
    logger.handlers[:] = [sink]
    logger.propagate = False
    logger.setLevel(agent_log.TRACE)
    return logger, sink, stream


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_kata_fields(capture: tuple[logging.Logger, agent_log.LogSink, io.StringIO]) -> None:
    logger, _, stream = capture
    logger.info("ttrpc server listening", extra={"address": "unix:///x"})
    (rec,) = _records(stream)
    assert rec["msg"] == "ttrpc server listening"
    assert rec["level"] == "INFO"
    assert rec["name"] == "kata-agent"
    assert rec["source"] == "agent"
    assert rec["subsystem"] == "rpc"
    assert rec["pid"] == str(os.getpid())
    assert rec["address"] == "unix:///x"
    assert isinstance(rec["ts"], str)
    assert rec["ts"].endswith("Z")


@pytest.mark.parametrize(
    ("level", "short"),
    [
        (agent_log.TRACE, "TRCE"),
        (10, "DEBG"),
        (20, "INFO"),
        (30, "WARN"),
        (40, "ERRO"),
        (50, "CRIT"),
    ],
)
def test_level_names(
    capture: tuple[logging.Logger, agent_log.LogSink, io.StringIO], level: int, short: str
) -> None:
    logger, _, stream = capture
    logger.log(level, "m")
    assert _records(stream)[0]["level"] == short


def test_context_and_exceptions(
    capture: tuple[logging.Logger, agent_log.LogSink, io.StringIO],
) -> None:
    logger, _, stream = capture
    token = agent_log.rpc_method.set("CreateContainer")
    try:
        with agent_log.bind(sandbox="sb", container="c1", exec_="e1"):
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed", extra={"step": "mount"})
        logger.info("after")
    finally:
        agent_log.rpc_method.reset(token)
    first, second = _records(stream)
    assert first["method"] == "CreateContainer"
    assert (first["sandbox"], first["container"], first["exec"]) == ("sb", "c1", "e1")
    assert first["step"] == "mount"
    assert "ValueError: boom" in str(first["error"])
    assert "container" not in second


def test_sink_buffers_until_attached() -> None:
    sink = agent_log.LogSink(None, backlog=3)
    sink.setFormatter(agent_log.JsonFormatter())
    logger = logging.getLogger("agent.test.sink")
    logger.handlers[:] = [sink]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for i in range(5):
        logger.info(f"m{i}")
    stream = io.StringIO()
    sink.attach(stream)
    assert [r["msg"] for r in _records(stream)] == ["m2", "m3", "m4"]  # bounded backlog
    logger.info("live")
    assert _records(stream)[-1]["msg"] == "live"


@pytest.mark.parametrize(
    ("logger_name", "subsystem"),
    [
        ("agent.rpc.server", "rpc"),
        ("agent.network.routes", "network"),
        ("agent", "root"),
        ("oci.engine.init", "engine"),
        ("asyncio", "asyncio"),
        ("agent.reaper", "reaper"),
    ],
)
def test_subsystem_from_logger_name(logger_name: str, subsystem: str) -> None:
    assert agent_log.subsystem_of(logger_name) == subsystem


def test_setup_sets_level() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        agent_log.setup("warn", stream=stream)
        logging.getLogger("agent.x").info("hidden")
        logging.getLogger("agent.x").warning("shown")
        assert [r["msg"] for r in _records(stream)] == ["shown"]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
