"""The agent's start-up, one module per step, in the order they run.

``args``        BootArgs: argv, the environment and the kernel command line, read and parsed once
                by the entry point (``kata-agent``: ``agent.cli``; the guest's ``/init``: ``init``)
``init``        the guest's ``/init`` (PID 1): for a virtio-serial channel its early steps
                (``pid1_early``) first, the port opened and answering Check
``phase0``      Health.Check answered on the bound listener (or, in the guest, on the port opened
                by ``init``) while a worker thread runs the rest: PID 1's set-up (``pid1``), the
                configuration (``configure``: BootArgs -> AgentConfig) and phase 1's imports
``phase1``      the asyncio ttrpc server takes the listener or the port over; grpc.Health answers
``phase2``      the AgentService stack, imported in a worker thread and built (``agent.app``, the
                composition root); gRPC listener and debug console when configured

Cold modules (``args``, ``init``, ``pid1_early``, ``phase0``, with ``agent.cli`` and the phase-0
servers ``agent.rpc.early``, ``early_serial`` and ``early_wire``) run before anything answers, so
they import little and defer the rest to the step that needs it;
``tests/unit/boot/test_import_budget.py`` names what they may load. Everything from ``pid1``,
``configure`` and ``phase1`` on is ordinary Python.
"""
