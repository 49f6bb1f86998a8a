"""agent.policy.engine: compiled policies, their answers, and what is decided once per compile."""

from __future__ import annotations

import functools
import subprocess
from typing import Any

import pytest

pytest.importorskip("regopy")

from agent.errors import InvalidArgument
from agent.policy import check, engine
from agent.policy.engine import Answer, CompiledPolicy, check_size

RULES = """package agent_policy
import future.keywords.if
import future.keywords.in

default Default := true
default Input := false
Input if { input.x == 1 }
OwnData if { policy_data.flag }
ViaFunction if { f(input.x) }
f(v) if { v == 1 }
FunctionReadsInput if { g(1) }
g(v) if { input.y == v }
Clock if { time.now_ns() > 0 }
State := data.pstate.k
WithInput if { x := input with input as {"x": 1}; x.x == 1 }
Prints if { print("hello", 1); true }
PrintsInput if { print("x is", input.x); input.x == 1 }
ConstantFunction if { h(2) }
h(v) if { v == 2 }
Ops := {"allowed": true, "ops": [{"op": "add", "path": "/pstate/k", "value": input.x}]}
Number := 3
Conflict := 1 if { input.a == 1 }
Conflict := 2 if { input.b == 1 }
NoAllowed := {"ops": []}
Denied := {"allowed": false, "ops": [{"op": "add", "path": "/pstate/x", "value": 1}]}
Iterate if { some v in input.list; v == "yes" }
policy_data := {"flag": true}
"""
NAMES = (
    "Default",
    "Input",
    "OwnData",
    "ViaFunction",
    "FunctionReadsInput",
    "Clock",
    "State",
    "WithInput",
    "Prints",
    "PrintsInput",
    "ConstantFunction",
    "Ops",
    "Number",
    "Conflict",
    "NoAllowed",
    "Denied",
    "Iterate",
    "Missing",
)


@pytest.fixture(scope="module")
def policy() -> CompiledPolicy:
    return CompiledPolicy(RULES, {"pstate": {"k": 5}}, NAMES)


@pytest.mark.parametrize(
    ("name", "constant"),
    [
        ("Default", True),
        ("Input", False),
        ("OwnData", True),  # reads only the policy's own rules
        ("ViaFunction", False),
        ("FunctionReadsInput", False),  # input read inside a function called without it
        ("Clock", False),  # no input, but the clock
        ("State", True),  # data: recomputed with each new data document
        ("WithInput", False),
        ("Prints", True),
        ("PrintsInput", False),
        ("ConstantFunction", True),
        ("Ops", False),
        ("Missing", True),  # no such rule: undefined for every input
    ],
)
def test_constant_answers(policy: CompiledPolicy, name: str, constant: bool) -> None:
    assert policy.info(name).constant is constant
    assert (policy.constant(name) is not None) is constant


INPUTS: list[dict[str, Any]] = [
    {},
    {"x": 1},
    {"x": 2, "y": 1},
    {"a": 1},
    {"list": ["no", "yes"]},
    {"x": "1", "y": None},
]


def test_constant_answers_are_what_evaluation_says(policy: CompiledPolicy) -> None:
    """The soundness of deciding once: for every constant entrypoint the stored answer equals a
    real evaluation, whatever the input."""
    always = CompiledPolicy(RULES, {"pstate": {"k": 5}}, NAMES, analysis={})  # evaluate always
    assert all(always.constant(n) is None for n in NAMES)
    for name in NAMES:
        stored = policy.constant(name)
        if stored is None:
            continue
        for value in INPUTS:
            got = always.decide(name, functools.partial(dict, value))
            assert (got.allowed, got.defined, got.ops, got.error, got.prints) == (
                stored.allowed,
                stored.defined,
                stored.ops,
                stored.error,
                stored.prints,
            ), (name, value)


def test_answers(policy: CompiledPolicy) -> None:
    assert policy.decide("Input", lambda: {"x": 1}).allowed
    assert policy.decide("Input", lambda: {"x": 2}) == Answer(False)
    assert policy.decide("Iterate", lambda: {"list": ["yes"]}).allowed
    undefined = policy.decide("Iterate", lambda: {"list": []})
    assert (undefined.allowed, undefined.defined) == (False, False)
    ops = policy.decide("Ops", lambda: {"x": 7})
    assert ops.allowed
    assert ops.ops == ({"op": "add", "path": "/pstate/k", "value": 7},)
    denied = policy.decide("Denied", dict)
    assert (denied.allowed, denied.ops) == (False, ())  # a denial's ops are never applied


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("Conflict", {"a": 1, "b": 1}, "complete rules must not produce multiple outputs"),
        ("Number", {}, "unexpected answer 3"),
        ("State", {}, "unexpected answer 5"),
        ("NoAllowed", {}, "has no boolean 'allowed'"),
    ],
)
def test_failed_evaluations_deny(
    policy: CompiledPolicy, name: str, value: dict[str, Any], error: str
) -> None:
    answer = policy.decide(name, lambda: value)
    assert not answer.allowed
    assert error in answer.error


def test_prints_are_caught_not_written_to_stdout(
    policy: CompiledPolicy, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    assert policy.decide("PrintsInput", lambda: {"x": 1}).prints == "x is 1"
    assert policy.decide("PrintsInput", lambda: {"x": 2}).prints == "x is 2"
    assert policy.constant("Prints") == Answer(True, prints="hello 1", source="constant")
    assert capfd.readouterr().out == ""


def test_integers_beyond_int64_reach_the_policy_exactly() -> None:
    text = "package agent_policy\nimport future.keywords.if\n"
    text += "Big if { input.v == 18446744073709551615 }\n"
    p = CompiledPolicy(text, {}, ["Big"])
    assert p.decide("Big", lambda: {"v": 2**64 - 1}).allowed
    assert not p.decide("Big", lambda: {"v": 2**63}).allowed


def test_deterministic_answers_are_cached_by_request(policy: CompiledPolicy) -> None:
    calls = []

    def make() -> dict[str, Any]:
        calls.append(1)
        return {"x": 1}

    assert policy.decide("Input", make, lambda: b"req-1").source == "eval"
    assert policy.decide("Input", make, lambda: b"req-1").source == "cache"
    assert policy.decide("Input", make, lambda: b"req-2").source == "eval"
    assert len(calls) == 2
    assert policy.decide("Clock", make, lambda: b"req-1").source == "eval"
    assert policy.decide("Clock", make, lambda: b"req-1").source == "eval"  # never cached


def test_new_data_makes_a_new_policy(policy: CompiledPolicy) -> None:
    assert policy.decide("State", dict).error == "unexpected answer 5"
    newer = policy.with_data({"pstate": {"k": True}})
    assert newer.analysis == policy.analysis
    assert newer.constant("State") == Answer(True, source="constant")
    assert newer.constant("OwnData") is policy.constant("OwnData")  # kept: it reads no data
    assert policy.decide("State", dict).error == "unexpected answer 5"  # the old one is unchanged


def test_invalid_policy(capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    with pytest.raises(InvalidArgument, match="invalid policy: this is unclosed"):
        CompiledPolicy("package agent_policy\nX := {", {}, ["X"])
    assert capfd.readouterr().out == ""  # the engine's error report did not reach stdout


@pytest.mark.parametrize(
    ("text", "status", "message"),
    [
        ("package agent_policy\nX := {", 1, "invalid policy: this is unclosed"),
        # the engine crashes on this one (a function with two arities): in the checking child
        (
            "package agent_policy\nf(a) := true\nf(a, b) := true\nX if { f(1, 2) }\n",
            -1,
            "invalid policy: the policy engine crashed compiling it (signal",
        ),
        ("package agent_policy\ndefault X := true\n", 0, ""),
    ],
)
def test_policies_are_first_compiled_apart(text: str, status: int, message: str) -> None:
    done = subprocess.run(check.command(), input=text.encode(), capture_output=True, check=False)
    assert (done.returncode > 0, done.returncode < 0) == (status > 0, status < 0), done
    reason = check.verdict(done.returncode, done.stdout)
    if status == 0:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(message)


def test_size_limits() -> None:
    check_size("package agent_policy\n" + "# x\n" * 1000)
    with pytest.raises(InvalidArgument, match="line 2 has 65537 characters"):
        check_size("package agent_policy\n" + "#" * (engine.MAX_LINE + 1))
    with pytest.raises(InvalidArgument, match="200001 lines"):
        check_size("\n" * engine.MAX_LINES)
    with pytest.raises(InvalidArgument, match="more than the limit of 16777216"):
        check_size(("#" * 1000 + "\n") * (engine.MAX_BYTES // 1000))


NEGATION_IN_EVERY = """package agent_policy
import future.keywords.every
import future.keywords.if
import future.keywords.in
X if {
\tevery d in input.devices {
\t\tnot d == "lo"
\t}
}
"""


def test_the_engine_drops_a_negation_inside_every() -> None:
    """Why check_constructs refuses it: rego-cpp 1.5.2 allows here what Rego denies. Should this
    start failing, the engine was fixed and the refusal can go."""
    p = CompiledPolicy(NEGATION_IN_EVERY, {}, ["X"], trusted=True)
    assert p.decide("X", lambda: {"devices": ["lo"]}).allowed


def test_negation_inside_every_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"line 7: 'not' inside the 'every' of line 6"):
        CompiledPolicy(NEGATION_IN_EVERY, {}, ["X"])


@pytest.mark.parametrize(
    "body",
    [
        'every d in xs { ok(d) }\nok(d) if { not d == "lo" }',  # the way round it
        'every d in xs { d != "not" }  # not',
        "every d in xs { d != `not` }",
        'every d in xs { d == "}" }\nY if { not input.x }',
        "Y if { not input.x }",
    ],
)
def test_negations_outside_every_are_fine(body: str) -> None:
    engine.check_constructs(f"package p\n{body}\n")


@pytest.mark.parametrize(
    "body",
    [
        "every d in xs { { 1 | not d } }",  # nested braces
        "every d in xs {\n  f(d)\n  not g(d)\n}",
        'every d in xs { d != "}" ; not d }',
    ],
)
def test_negations_inside_every_are_found(body: str) -> None:
    with pytest.raises(InvalidArgument, match="'not' inside the 'every'"):
        engine.check_constructs(f"package p\n{body}\n")


@pytest.mark.parametrize(
    ("name", "uses_data"),
    [("State", True), ("OwnData", False), ("Default", False), ("Input", False), ("Ops", False)],
)
def test_data_reads(policy: CompiledPolicy, name: str, uses_data: bool) -> None:
    assert policy.info(name).uses_data is uses_data
