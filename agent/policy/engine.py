"""One compiled Rego policy and its data, evaluated with regopy (Microsoft's rego-cpp).

``CompiledPolicy`` compiles a policy text and the data document ``{"pstate": {...}}`` into a
bundle with one entrypoint per AgentService request type (``agent_policy/<Request>``) plus
``AllowRequestsFailingPolicy``, and answers ``decide(request_name, ...)``. Policy state changes
make a new ``CompiledPolicy`` (``with_data``): rego-cpp bakes the data into the bundle, and an
interpreter cannot be rebuilt in place.

Cost: the compiled plans (``analysis``) tell, per entrypoint, whether the answer can depend on
the input and whether it calls a builtin whose answer changes by itself (clock, randomness,
environment). An entrypoint that reads neither is evaluated once per compile and answered from
that (``source="constant"``: ``default ReadStreamRequest := true``, or a rule reading only the
policy's own data); the others are evaluated per request, with a small cache keyed by the
serialized request for the deterministic ones (a ReadStdout loop asks the same question each
time). Both are sound because the answer is a function of (input, data) and the data only
changes with a new ``CompiledPolicy``.

rego-cpp writes Rego ``print`` output and compile errors to file descriptor 1, which is the
agent's JSON log stream: calls that may write there run inside ``capture_stdout``.

Facts about rego-cpp 1.5.2 this module relies on or guards against: a bundle that failed to build
must never be queried (the process crashes); an interpreter cannot be rebuilt with other data
(entrypoints and data accumulate); ``Input`` wraps integers above 2**63-1 (such inputs go in as
JSON text instead); an answer can be invalid JSON (``sprintf("%s")`` of a computed string keeps
its quotes), which is an evaluation error here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from agent.errors import InvalidArgument, Unimplemented

log = logging.getLogger(__name__)

PACKAGE = "agent_policy"
ALLOW_FAILURES = "AllowRequestsFailingPolicy"
# The Rust agent's regorus limits (src/agent/policy/src/policy.rs): 64 KiB per line, 16 MiB per
# file, 200 000 lines.
MAX_LINE = 64 * 1024
MAX_BYTES = 16 * 1024 * 1024
MAX_LINES = 200_000
CACHE_SIZE = 512
CACHE_KEY_MAX = 2048  # larger requests (CreateContainer) are never asked twice: not cached
# Builtins whose answer is not a function of their arguments.
NONDETERMINISTIC = (
    "?",
    "time.now_ns",
    "rand.",
    "uuid.rfc4122",
    "opa.runtime",
    "http.",
    "net.lookup",
    "io.jwt.decode_verify",
    "crypto.x509.parse_and_verify",
)
PRINT = "internal.print"
_INT64 = (-(2**63), 2**63 - 1)

_regopy: ModuleType | None = None
_regopy_missing = False


def regopy() -> ModuleType:
    """The engine, imported on first use (a large native library: only agents with a policy
    pay for it). Unimplemented when it is not installed."""
    global _regopy, _regopy_missing
    if _regopy is None:
        if _regopy_missing:
            raise _unavailable()
        try:
            import regopy as module
        except ImportError:
            _regopy_missing = True
            raise _unavailable() from None
        _regopy = module
    return _regopy


def _unavailable() -> Unimplemented:
    return Unimplemented(
        "this agent has no policy engine: install kata-agent-py[policy] (regopy) in the guest"
    )


def check_size(text: str) -> None:
    """The Rust agent's limits on a policy text, as INVALID_ARGUMENT."""
    size = len(text.encode())
    if size > MAX_BYTES:
        raise InvalidArgument(f"policy is {size} bytes, more than the limit of {MAX_BYTES}")
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        raise InvalidArgument(f"policy has {len(lines)} lines, more than the limit of {MAX_LINES}")
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE:
            raise InvalidArgument(
                f"policy line {number} has {len(line)} characters, more than the limit of "
                f"{MAX_LINE}"
            )


def check_constructs(text: str) -> None:
    """Refuse what rego-cpp 1.5.2 evaluates wrongly in a way that allows: ``not`` inside an
    ``every`` body (the negated expression is dropped when it uses the loop's variables, so
    ``every d in ["lo"] { not d == "lo" }`` holds). InvalidArgument with the line."""
    tokens = _tokens(text)
    for i, (word, line) in enumerate(tokens):
        following = [w for w, _ in tokens[i + 1 : i + 4]]
        if word != "every" or "in" not in following[1:]:  # not "every x in" / "every k, v in"
            continue
        depth = 0
        for inner, inner_line in tokens[i + 1 :]:
            if inner == "{":
                depth += 1
            elif inner == "}":
                depth -= 1
                if depth == 0:
                    break
            elif inner == "not" and depth > 0:
                raise InvalidArgument(
                    f"invalid policy: line {inner_line}: 'not' inside the 'every' of line {line} "
                    "is evaluated wrongly by this agent's Rego engine (rego-cpp); move the "
                    "negated condition into a helper rule and call that from the 'every' body"
                )


def _tokens(text: str) -> list[tuple[str, int]]:
    """Words and braces of a Rego text with their line numbers; strings and comments skipped."""
    tokens: list[tuple[str, int]] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "`":
            end = text.find("`", i + 1)
            end = n if end < 0 else end
            line += text.count("\n", i, end)
            i = end
        elif c in "{}":
            tokens.append((c, line))
        elif c.isalnum() or c == "_":
            start = i
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            tokens.append((text[start:i], line))
            continue
        i += 1
    return tokens


# -- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What the policy said about one request."""

    allowed: bool  # the policy's own verdict (AllowRequestsFailingPolicy is applied by the caller)
    defined: bool = True  # False: the rule is undefined for this input (a denial)
    ops: tuple[Mapping[str, Any], ...] = ()  # JSON patch of the data, with an allowing answer
    prints: str = ""  # the policy's print() output, one line per print, joined by " "
    error: str = ""  # the evaluation failed (a denial)
    source: str = "eval"  # "eval", "cache" or "constant"


def _answer_from(value: object, prints: str) -> Answer:
    if isinstance(value, bool):
        return Answer(value, prints=prints)
    if isinstance(value, dict):
        allowed = value.get("allowed")
        ops = value.get("ops")
        if not isinstance(allowed, bool):
            return Answer(
                False, prints=prints, error=f"answer {_short(value)} has no boolean 'allowed'"
            )
        if ops is None or not allowed:
            return Answer(allowed, prints=prints)
        if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
            return Answer(
                False,
                prints=prints,
                error=f"answer's 'ops' {_short(ops)} is not a list of JSON patch operations",
            )
        return Answer(True, ops=tuple(ops), prints=prints)
    return Answer(False, prints=prints, error=f"unexpected answer {_short(value)}")


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."


# -- plan analysis -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What the compiled plan of one entrypoint may read or call."""

    uses_input: bool
    uses_data: bool  # the data document (the policy state): re-decided when it changes
    builtins: frozenset[str]

    @property
    def deterministic(self) -> bool:
        return not any(b.startswith(NONDETERMINISTIC) for b in self.builtins)

    @property
    def constant(self) -> bool:
        """The answer is the same for every input (given the data)."""
        return not self.uses_input and self.deterministic

    @property
    def prints(self) -> bool:
        return PRINT in self.builtins or UNKNOWN_BUILTIN in self.builtins


UNKNOWN_BUILTIN = "?"
# Nothing known: evaluated each time, never cached, printing.
UNKNOWN = EntryInfo(uses_input=True, uses_data=True, builtins=frozenset({UNKNOWN_BUILTIN}))


class IRNode:
    """One node of a compiled bundle (``Bundle.node()``: rego-cpp's typed IR, the plans and
    functions of OPA's IR): its kind (``callstmt``, ``localindex``, ...), value and children.
    Read through regopy's node accessors; ``rego_node_value`` is the only one that gives the
    value of an IR node (a local's number, a function's name)."""

    __slots__ = ("children", "kind", "value")

    def __init__(self, kind: str, value: str, children: list[IRNode]) -> None:
        self.kind = kind
        self.value = value
        self.children = children

    @classmethod
    def read(cls, node: Any) -> IRNode:
        from regopy.rego_shared import (
            rego_node_get,
            rego_node_json,
            rego_node_size,
            rego_node_value,
        )

        def build(impl: Any) -> IRNode:
            text = rego_node_json(impl)
            kind = text[5 : text.find("(")] if text.startswith("rego-") else ""
            value = rego_node_value(impl) if kind in _VALUED else ""
            return cls(
                kind, value, [build(rego_node_get(impl, i)) for i in range(rego_node_size(impl))]
            )

        return build(node._impl)

    def child(self, kind: str) -> IRNode:
        for c in self.children:
            if c.kind == kind:
                return c
        raise KeyError(f"{self.kind} has no {kind}")


_VALUED = frozenset({"irstring", "localindex"})


def analyze(policy: IRNode) -> dict[str, EntryInfo]:
    """Per plan name (``agent_policy/X``) of a compiled bundle's ``policy`` node: does anything
    reachable from it read the input (local 0 of a plan, parameter 0 of a function) or the data
    (local and parameter 1), and which builtins does it call. Conservative: any appearance of
    such a local that is not handing it on, in the same position, to a function that provably
    ignores it counts as reading it."""
    funcs: dict[str, IRNode] = {}
    for f in policy.child("functionseq").children:
        funcs[f.children[0].value] = f
    done: dict[str, EntryInfo] = {}
    busy: set[str] = set()

    def func_info(name: str) -> EntryInfo:
        info = done.get(name)
        if info is not None:
            return info
        if name in busy:  # recursion (Rego has none): give up on it
            return UNKNOWN
        busy.add(name)
        f = funcs[name]
        params = f.child("parameterseq").children
        builtins: set[str] = set()
        body = f.child("blockseq")
        uses_input = walk(body, params[0].value, 0, builtins)
        uses_data = walk(body, params[1].value, 1, builtins)
        busy.discard(name)
        done[name] = info = EntryInfo(uses_input, uses_data, frozenset(builtins))
        return info

    def walk(node: IRNode, local: str, position: int, builtins: set[str]) -> bool:
        """Is ``local`` (parameter ``position``: 0 input, 1 data) read below ``node``?"""
        if node.kind == "localindex":
            return node.value == local
        if node.kind == "callstmt":
            name = node.children[0].value
            args = node.child("operandseq").children
            if name not in funcs:
                builtins.add(name)
                return any(walk(a, local, position, builtins) for a in args)
            callee = func_info(name)
            builtins.update(callee.builtins)
            reads = (callee.uses_input, callee.uses_data)[position]
            return any(
                (i != position or reads) and walk(a, local, position, builtins)
                for i, a in enumerate(args)
            )
        uses = False
        for c in node.children:
            uses |= walk(c, local, position, builtins)
        return uses

    entries: dict[str, EntryInfo] = {}
    for plan in policy.child("planseq").children:
        builtins: set[str] = set()
        body = plan.child("blockseq")
        uses_input = walk(body, "0", 0, builtins)
        uses_data = walk(body, "1", 1, builtins)
        entries[plan.children[0].value] = EntryInfo(uses_input, uses_data, frozenset(builtins))
    return entries


# -- stdout ----------------------------------------------------------------------------------------


class StdoutCapture:
    """Catches what rego-cpp writes to file descriptor 1 (print output, compile errors) in a memfd,
    so it never lands in the agent's log stream (stdout). The logging handlers' locks are held
    meanwhile, so no log line written by another thread is caught instead."""

    def __init__(self) -> None:
        self._fd = os.memfd_create("kata-agent-policy-stdout", os.MFD_CLOEXEC)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[list[str]]:
        """Yields a list that holds the captured lines once the block is left."""
        lines: list[str] = []
        handlers = list(logging.getLogger().handlers)
        with self._lock, contextlib.ExitStack() as stack:
            for handler in handlers:
                handler.acquire()
                stack.callback(handler.release)
            saved = os.dup(1)
            try:
                os.dup2(self._fd, 1)
                yield lines
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                size = os.lseek(self._fd, 0, os.SEEK_END)
                data = os.pread(self._fd, size, 0) if size else b""
                os.ftruncate(self._fd, 0)
                os.lseek(self._fd, 0, os.SEEK_SET)  # fd 1 wrote through this file offset
                lines.extend(data.decode(errors="replace").splitlines())

    def close(self) -> None:
        os.close(self._fd)


_capture: StdoutCapture | None = None


def capture_stdout() -> StdoutCapture:
    global _capture
    if _capture is None:
        _capture = StdoutCapture()
    return _capture


# -- the compiled policy -------------------------------------------------------------------------


class CompiledPolicy:
    """A policy text compiled with one data document. Not thread-safe: one caller at a time
    (the agent's event loop); building another one in a thread meanwhile is fine."""

    def __init__(
        self,
        text: str,
        data: Mapping[str, Any],
        entrypoints: Sequence[str],
        *,
        analysis: Mapping[str, EntryInfo] | None = None,
        trusted: bool = False,
        previous: CompiledPolicy | None = None,
    ) -> None:
        """Compile. ``trusted``: this text compiled before (a state change), so it cannot fail
        and nothing is written to stdout. InvalidArgument with the engine's message otherwise.
        ``previous``: the same text with other data, whose constant answers that do not read
        the data are kept."""
        rego = regopy()
        self.text = text
        self.data = data
        self.entrypoints = tuple(entrypoints)
        self._interp = rego.Interpreter()
        paths = [f"{PACKAGE}/{e}" for e in self.entrypoints]
        if not trusted:
            check_constructs(text)
        capture: contextlib.AbstractContextManager[list[str]] = (
            contextlib.nullcontext([]) if trusted else capture_stdout()()
        )
        try:
            with capture:
                self._interp.add_module(PACKAGE, text)
                self._interp.add_data_json(json.dumps(data))
                self._bundle = self._interp.build(None, paths)
        except rego.RegoError as err:
            raise InvalidArgument(f"invalid policy: {_engine_message(str(err))}") from None
        if not self._bundle.ok():  # querying it would crash the process
            raise InvalidArgument(f"invalid policy: {_bundle_error(self._bundle)}")
        self.analysis = dict(analysis) if analysis is not None else self._analyze(paths)
        self._cache: OrderedDict[tuple[str, bytes], Answer] = OrderedDict()
        self._constants: dict[str, Answer] = {}
        for name in self.entrypoints:
            info = self.info(name)
            if not info.constant:
                continue
            kept = None if previous is None or info.uses_data else previous.constant(name)
            if kept is None:
                answer = self._evaluate(name, {})
                kept = Answer(
                    answer.allowed, answer.defined, answer.ops, answer.prints, answer.error,
                    "constant",
                )  # fmt: skip
            self._constants[name] = kept

    def _analyze(self, paths: Sequence[str]) -> dict[str, EntryInfo]:
        try:
            entries = analyze(IRNode.read(self._bundle.node()).child("policy"))
        except (KeyError, IndexError, ValueError, regopy().RegoError) as err:
            log.warning("policy: cannot read the compiled plans", extra={"error": str(err)})
            entries = {}
        return {p.split("/", 1)[1]: entries.get(p, UNKNOWN) for p in paths}

    def info(self, name: str) -> EntryInfo:
        return self.analysis.get(name, UNKNOWN)

    def constant(self, name: str) -> Answer | None:
        """The answer for every input, when the policy's answer does not depend on it."""
        return self._constants.get(name)

    def with_data(self, data: Mapping[str, Any]) -> CompiledPolicy:
        """The same policy with another data document (no re-analysis; safe in a thread)."""
        return CompiledPolicy(
            self.text, data, self.entrypoints, analysis=self.analysis, trusted=True, previous=self
        )

    def decide(
        self,
        name: str,
        make_input: Callable[[], Mapping[str, Any]],
        make_key: Callable[[], bytes] | None = None,
    ) -> Answer:
        """The answer for request type ``name``; ``make_input`` builds the policy input when it
        has to be evaluated; ``make_key`` (the serialized request) lets deterministic answers be
        cached."""
        answer = self._constants.get(name)
        if answer is not None:
            return answer
        info = self.info(name)
        key = make_key() if make_key is not None and info.deterministic else None
        if key is None or len(key) > CACHE_KEY_MAX:
            return self._evaluate(name, make_input())
        cached = self._cache.get((name, key))
        if cached is not None:
            self._cache.move_to_end((name, key))
            return cached
        answer = self._evaluate(name, make_input())
        self._cache[(name, key)] = Answer(
            answer.allowed, answer.defined, answer.ops, answer.prints, answer.error, "cache"
        )
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return answer

    def _evaluate(self, name: str, value: Mapping[str, Any]) -> Answer:
        rego = regopy()
        capture: contextlib.AbstractContextManager[list[str]] = (
            capture_stdout()() if self.info(name).prints else contextlib.nullcontext([])
        )
        try:
            with capture as lines:
                self._set_input(value)
                out = self._interp.query_bundle_entrypoint(self._bundle, f"{PACKAGE}/{name}")
        except (rego.RegoError, ValueError, TypeError) as err:  # invalid JSON answer, ...
            return Answer(False, prints=" ".join(lines), error=_engine_message(str(err)))
        prints = " ".join(lines)
        if not out.ok():
            return Answer(False, prints=prints, error=_output_error(out))
        expressions = out.results[0].expressions if out.results else []
        if not expressions:
            return Answer(False, defined=False, prints=prints)
        return _answer_from(expressions[0], prints)

    def _set_input(self, value: Mapping[str, Any]) -> None:
        if _has_big_int(value):
            self._interp.set_input_term(json.dumps(value))
        else:
            self._interp.set_input(regopy().Input(value))


def _has_big_int(value: object) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return not _INT64[0] <= value <= _INT64[1]
    if isinstance(value, dict):
        return any(_has_big_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_big_int(v) for v in value)
    return False


def _engine_message(text: str) -> str:
    """The messages of an engine error (its s-expression ``(errormsg N:text)`` parts)."""
    messages = []
    start = 0
    while (i := text.find("(errormsg ", start)) >= 0:
        j = text.find(":", i)
        try:
            n = int(text[i + len("(errormsg ") : j])
        except ValueError:
            break
        messages.append(text[j + 1 : j + 1 + n])
        start = j + 1 + n
    return "; ".join(messages) if messages else text.strip()


def _node_text(node: Any) -> str:
    try:
        return " ".join(node.at(i).json() for i in range(len(node)))
    except Exception:  # the error tree has no other public accessor
        return ""


def _output_error(out: Any) -> str:
    return _engine_message(_node_text(out.node())) or "evaluation failed"


def _bundle_error(bundle: Any) -> str:
    return _engine_message(_node_text(bundle.node())) or "the policy does not compile"
