"""The agent's policy enforcement point: a decision before each AgentService request.

As the Rust agent (``src/agent/src/policy.rs``, ``src/agent/policy/src/policy.rs``):

* the policy comes from the image's default policy file (``/etc/kata-opa/default-policy.rego``)
  and is replaced by SetPolicy, which is itself first checked against the current policy
  (``SetPolicyRequest``); with neither, there is no policy and no engine at all;
* each request is decided by ``data.agent_policy.<RequestType>`` on the request as the Rust agent
  serialises it (``agent.policy.serialize``): ``true`` allows; ``false``, undefined or a failed
  evaluation denies with PERMISSION_DENIED "<RequestType> is blocked by policy: <prints>"; an
  object answer ``{"allowed": bool, "ops": [...]}`` also patches the policy data (``pstate``);
* ``AllowRequestsFailingPolicy`` (true in the policy) turns denials into warnings; evaluation
  errors still deny;
* CreateContainer, CreateSandbox, ExecProcess and RemoveContainer (the requests whose rules read
  and write ``pstate``) are decided one at a time: the state lock is held from the decision until
  the request's ``ops`` are committed after the handler succeeded (nothing is committed when it
  fails). Other requests are decided without it; should one of them answer with ``ops``, it is
  decided again under the lock and committed the same way.

A default policy file that exists but cannot be loaded (no engine, unreadable, invalid) closes
the agent: every AgentService request is denied with the reason, SetPolicy included, rather than
run a confidential guest unchecked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from agent.errors import Internal, InvalidArgument, PermissionDenied, Unimplemented
from agent.policy import engine
from agent.policy.engine import Answer, CompiledPolicy
from agent.policy.serialize import COPY_FILE_REQUEST, request_input

log = logging.getLogger(__name__)

DEFAULT_POLICY_FILE = Path("/etc/kata-opa/default-policy.rego")
SET_POLICY = "SetPolicyRequest"
STATEFUL = frozenset(
    {
        "CreateContainerRequest",
        "CreateSandboxRequest",
        "ExecProcessRequest",
        "RemoveContainerRequest",
    }
)
INITIAL_DATA: Mapping[str, Any] = {"pstate": {}}
# Requests never asked twice, or large (file data, a policy): not worth serialising for a cache key.
UNCACHED = frozenset(
    {
        "CopyFileRequest",
        "CreateContainerRequest",
        "CreateSandboxRequest",
        "SetPolicyRequest",
        "WriteStreamRequest",
    }
)


def request_types() -> tuple[str, ...]:
    """The entrypoints of every policy: each AgentService request type, and
    AllowRequestsFailingPolicy."""
    from agent.rpc.dispatch import AGENT_SERVICE, service_methods

    names = {m.request_type.DESCRIPTOR.name for m in service_methods(AGENT_SERVICE).values()}
    return (*sorted(names), engine.ALLOW_FAILURES)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    answer: Answer
    message: str  # why it is denied: the PERMISSION_DENIED message


class Admission:
    """An allowed request whose answer patches the policy data: the state lock is held until
    ``commit`` (after the handler succeeded) or ``release`` (it failed)."""

    def __init__(self, point: PolicyPoint, name: str, data: Mapping[str, Any]) -> None:
        self._point = point
        self._name = name
        self._data = data

    async def commit(self) -> None:
        try:
            await self._point._commit(self._name, self._data)
        finally:
            self._point._state_lock().release()

    def release(self) -> None:
        self._point._state_lock().release()


class PolicyPoint:
    """Holds the current policy (None: no policy, nothing is checked) and decides requests."""

    def __init__(self, *, on_active: Callable[[], None] | None = None) -> None:
        """``on_active``: called (on the loop) when the agent goes from no policy to checking
        requests, to start guarding the AgentService methods."""
        self.policy: CompiledPolicy | None = None
        self.allow_failures = False
        self._closed: str | None = None  # the default policy could not be loaded: deny all
        self._on_active = on_active
        self._entrypoints: tuple[str, ...] | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def active(self) -> bool:
        return self.policy is not None or self._closed is not None

    def entrypoints(self) -> tuple[str, ...]:
        if self._entrypoints is None:
            self._entrypoints = request_types()
        return self._entrypoints

    def _state_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # -- sources of policy ---------------------------------------------------------------------

    async def load_default(self, path: Path = DEFAULT_POLICY_FILE) -> None:
        """At start-up, before AgentService serves: the image's default policy, if there is one.
        Compiled in a worker thread."""
        try:
            text = await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            log.debug("no default policy", extra={"path": str(path)})
            return
        except (OSError, ValueError) as err:
            self._close(path, err)
            return
        try:
            engine.check_size(text)
            policy = await asyncio.to_thread(CompiledPolicy, text, INITIAL_DATA, self.entrypoints())
        except (InvalidArgument, Unimplemented) as err:
            self._close(path, err)
            return
        self.install(policy, source=str(path))

    def _close(self, path: Path, err: Exception) -> None:
        self._closed = f"the default policy {path} could not be loaded: {err}"
        log.error(
            "default policy not loaded: every request is denied",
            extra={"path": str(path), "error": str(err)},
        )
        self._activated()

    async def set_policy(self, text: str) -> None:
        """SetPolicy: checked against the current policy, then compiled and installed with an
        empty ``pstate``. Unimplemented without the engine; InvalidArgument (the previous policy
        stays) for a text that is too large or does not compile."""
        engine.regopy()
        async with self._state_lock():
            if self.active:
                from agent.rpc.pb import agent_pb2

                self._check(SET_POLICY, agent_pb2.SetPolicyRequest(policy=text))
            engine.check_size(text)
            await _compiles_apart(text)
            policy = await asyncio.to_thread(CompiledPolicy, text, INITIAL_DATA, self.entrypoints())
            self.install(policy, source="SetPolicy")

    def install(self, policy: CompiledPolicy, *, source: str) -> None:
        """Make ``policy`` the one in force (``source``: where it came from, for the log)."""
        was_active = self.active
        answer = policy.decide(engine.ALLOW_FAILURES, dict)
        self.allow_failures = answer.allowed and answer.defined and not answer.error
        self.policy = policy
        self._closed = None
        constant = sorted(n for n in policy.entrypoints if policy.constant(n) is not None)
        log.info(
            "policy loaded",
            extra={
                "origin": source,
                "bytes": len(policy.text.encode()),
                "constant_answers": len(constant),
                "evaluated": len(policy.entrypoints) - len(constant),
            },
        )
        if self.allow_failures:
            log.warning("policy: AllowRequestsFailingPolicy is set: denials are only logged")
        if not was_active:
            self._activated()

    def _activated(self) -> None:
        if self._on_active is not None:
            self._on_active()

    # -- decisions -----------------------------------------------------------------------------

    def decide(self, name: str, req: Message) -> Decision:
        """The decision about ``req`` (request type ``name``) with the current policy, as the
        agent takes it: AllowRequestsFailingPolicy applied, logged. Its ``ops`` are not
        applied. InvalidArgument for a request the policy input cannot be made of."""
        policy = self.policy
        if policy is None:
            return Decision(False, Answer(False), f"{name} is blocked by policy: {self._closed}")
        started = time.perf_counter()
        key = None if name in UNCACHED else req.SerializeToString
        if name == COPY_FILE_REQUEST:  # translated first, as the Rust agent: bad input fails
            value = request_input(req)
            answer = policy.decide(name, lambda: value, key)
        else:
            answer = policy.decide(name, lambda: request_input(req), key)
        allowed = answer.allowed and answer.defined and not answer.error
        if answer.error:
            log.error(
                "policy evaluation failed",
                extra={"request": name, "error": answer.error, "prints": answer.prints},
            )
        elif not allowed and self.allow_failures:
            log.warning(
                "policy: allowing a request the policy denies (AllowRequestsFailingPolicy)",
                extra={"request": name, "prints": answer.prints},
            )
            allowed, answer = True, Answer(True, prints=answer.prints, source=answer.source)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "policy decision",
                extra={
                    "request": name,
                    "allowed": allowed,
                    "defined": answer.defined,
                    "answer_from": answer.source,
                    "ops": len(answer.ops),
                    "duration_us": int((time.perf_counter() - started) * 1e6),
                },
            )
        if allowed:
            return Decision(True, answer, "")
        reason = f"policy evaluation failed: {answer.error}" if answer.error else ""
        detail = " ".join(p for p in (reason, answer.prints) if p)
        return Decision(False, answer, f"{name} is blocked by policy: {detail}")

    def _check(self, name: str, req: Message) -> Answer:
        decision = self.decide(name, req)
        if not decision.allowed:
            raise PermissionDenied(decision.message)
        return decision.answer

    def admit_now(self, name: str, req: Message) -> bool:
        """The synchronous decision (the ttrpc server's answer-at-once path): True allowed,
        PermissionDenied denied, False when the request has to take the async path (a
        stateful request, or an answer that patches the policy data)."""
        if name in STATEFUL:
            return False
        return not self._check(name, req).ops

    async def admit(self, name: str, req: Message) -> Admission | None:
        """Decide before the handler runs. None: allowed, nothing to commit. An Admission:
        allowed, its ``ops`` to commit once the handler succeeded (the state lock is held)."""
        if name not in STATEFUL and not self._check(name, req).ops:
            return None
        lock = self._state_lock()
        await lock.acquire()
        try:
            answer = self._check(name, req)
            if not answer.ops:
                lock.release()
                return None
            data = self._patched(name, answer)
        except BaseException:
            lock.release()
            raise
        return Admission(self, name, data)

    def _patched(self, name: str, answer: Answer) -> Mapping[str, Any]:
        """The policy data with the answer's JSON patch applied (checked now, so a patch that
        does not apply denies the request before it runs)."""
        import jsonpatch
        import jsonpointer

        assert self.policy is not None
        try:
            data: Mapping[str, Any] = jsonpatch.apply_patch(self.policy.data, list(answer.ops))
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as err:
            log.error(
                "policy: the answer's ops do not apply to the policy data",
                extra={"request": name, "error": str(err)},
            )
            raise PermissionDenied(
                f"{name} is blocked by policy: its ops do not apply to the policy data: {err}"
            ) from None
        if not isinstance(data, dict):
            raise PermissionDenied(f"{name} is blocked by policy: its ops replace the data")
        return data

    async def _commit(self, name: str, data: Mapping[str, Any]) -> None:
        policy = self.policy
        assert policy is not None
        try:
            self.policy = await asyncio.to_thread(policy.with_data, data)
        except InvalidArgument as err:  # the data does not load (the text compiled before)
            log.error("policy state not updated", extra={"request": name, "error": str(err)})
            raise Internal(f"{name}: the policy state could not be updated: {err}") from None
        log.debug("policy state updated", extra={"request": name})


async def _compiles_apart(text: str) -> None:
    """Compile ``text`` in a child process first (``agent.policy.check``): the engine can crash
    on some invalid policies, and it must not crash the agent. InvalidArgument if it fails."""
    from agent import spawn
    from agent.policy import check

    done = await spawn.run(check.command(), input=text.encode(), timeout=check.TIMEOUT)
    reason = check.verdict(done.returncode, done.stdout)
    if reason is not None:
        raise InvalidArgument(reason)
