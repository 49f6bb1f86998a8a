"""What a kata-agent-ctl subcommand gets: the connection and the output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from google.protobuf import json_format
from google.protobuf.message import Message

from agent.rpc.client import TtrpcClient


class UsageError(Exception):
    """Bad command-line input discovered by a subcommand (exit status 2)."""


@dataclass
class Context:
    addr: str
    timeout: float
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    _client: TtrpcClient | None = None

    async def client(self) -> TtrpcClient:
        if self._client is None:
            self._client = await TtrpcClient.connect(self.addr, timeout=self.timeout)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def print_message(self, message: Message) -> None:
        text = json_format.MessageToJson(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            indent=2,
        )
        print(text, file=self.out)

    def print_json(self, value: Any) -> None:
        print(json.dumps(value, indent=2), file=self.out)


def add_parser(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    return parser
