"""kata-agent-ctl: a ttrpc client of the agent for people and tests (host or guest side).

Usage::

    kata-agent-ctl --addr unix:///run/x.sock check
    kata-agent-ctl --addr hvsock:///run/vc/vm/ID/clh.sock:1024 version
    kata-agent-ctl --addr vsock://3:1024 guest-details
    kata-agent-ctl --addr unix:///run/x.sock call GetGuestDetails --json '{"mem_block_size": true}'

Adding a subcommand: drop a module into ``agent/ctl/commands/`` that defines

    def register(sub) -> None:                 # sub: argparse sub-parsers
        p = add_parser(sub, "name", help="...")  # agent.ctl.context.add_parser
        p.add_argument(...)
        p.set_defaults(run=run)

    async def run(ctx: Context, args: argparse.Namespace) -> int: ...

``Context`` (``agent.ctl.context``) connects on first use (``await ctx.client()``) and prints
messages as JSON (``ctx.print_message(msg)``). Modules are discovered automatically, in name order.
"""
