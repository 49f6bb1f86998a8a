"""Write `.proto` sources from a kata-protocol `contract.json`.

This is the bootstrap (and re-sync) tool for `proto/`: the contract is a JSON rendering of the
upstream descriptors, so rendering it back to proto3 text gives files that are wire-identical by
construction. The `.proto` files it writes are committed and are the source of truth for the
generated code (`python -m proto.generate`); `tests/unit/test_proto_contract.py` re-checks the
compiled descriptors against the contract field by field.

Usage: python -m proto.from_contract ../shared/kata-protocol/contract.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Where each contract file lands below proto/ and under which name it is imported.
HEADER = (
    "// Generated from kata-protocol contract.json by proto/from_contract.py; edit with care.\n"
)


def _type(field: dict[str, Any]) -> str:
    if field["type"] in ("message", "enum"):
        return str(field["type_name"])
    return str(field["type"])


def _map_value(field: dict[str, Any]) -> str:
    m = field["map"]
    if m["value_type"] in ("message", "enum"):
        return str(m["value_type_name"])
    return str(m["value_type"])


def _render_enum(enum: dict[str, Any], indent: str) -> list[str]:
    out = [f"{indent}enum {enum['name']} {{"]
    for v in enum["values"]:
        out.append(f"{indent}    {v['name']} = {v['number']};")
    out.append(f"{indent}}}")
    return out


def _render_field(field: dict[str, Any], indent: str) -> str:
    opts = []
    if field.get("json_name") and field["json_name"] != _default_json_name(field["name"]):
        opts.append(f'json_name = "{field["json_name"]}"')
    suffix = f" [{', '.join(opts)}]" if opts else ""
    if "map" in field:
        return (
            f"{indent}map<{field['map']['key_type']}, {_map_value(field)}> "
            f"{field['name']} = {field['number']}{suffix};"
        )
    label = ""
    if field["label"] == "repeated":
        label = "repeated "
    elif field.get("proto3_optional"):
        label = "optional "
    return f"{indent}{label}{_type(field)} {field['name']} = {field['number']}{suffix};"


def _default_json_name(name: str) -> str:
    out, upper = [], False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


def _render_message(msg: dict[str, Any], indent: str) -> list[str]:
    out = [f"{indent}message {msg['name']} {{"]
    inner = indent + "    "
    for enum in msg.get("nested_enums", []):
        out += _render_enum(enum, inner)
    for nested in msg.get("nested_messages", []):
        if nested.get("map_entry"):
            continue
        out += _render_message(nested, inner)
    real_oneofs = {o["index"]: o for o in msg.get("oneofs", []) if not o.get("synthetic")}
    emitted: set[int] = set()
    for field in msg["fields"]:
        idx = field.get("oneof_index")
        if idx is not None and idx in real_oneofs:
            if idx in emitted:
                continue
            emitted.add(idx)
            out.append(f"{inner}oneof {real_oneofs[idx]['name']} {{")
            for member in msg["fields"]:
                if member.get("oneof_index") == idx:
                    out.append(_render_field(member, inner + "    "))
            out.append(f"{inner}}}")
            continue
        out.append(_render_field(field, inner))
    out.append(f"{indent}}}")
    return out


def render(file: dict[str, Any]) -> str:
    lines = [HEADER.rstrip("\n"), f'syntax = "{file["syntax"]}";', ""]
    lines.append(f"package {file['package']};")
    lines.append("")
    for dep in file["dependencies"]:
        lines.append(f'import "{dep}";')
    if file["dependencies"]:
        lines.append("")
    for key, value in sorted(file.get("options", {}).items()):
        lines.append(f'option {key} = "{value}";')
    lines.append("")
    for enum in file["enums"]:
        lines += _render_enum(enum, "")
        lines.append("")
    for msg in file["messages"]:
        lines += _render_message(msg, "")
        lines.append("")
    for svc in file["services"]:
        lines.append(f"service {svc['name']} {{")
        for m in svc["methods"]:
            lines.append(f"    rpc {m['name']}({m['input_type']}) returns ({m['output_type']});")
        lines.append("}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# Well-known types ship with protobuf; we do not write our own copy of them.
SKIP = {"google/protobuf/empty.proto", "google/protobuf/any.proto"}


def main(argv: list[str]) -> int:
    contract = json.loads(Path(argv[1]).read_text())
    for file in contract["files"] + contract["envelope_files"]:
        if file["name"] in SKIP:
            continue
        target = HERE / file["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(file))
        print(f"wrote {target.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
