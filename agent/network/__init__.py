"""Guest networking: links, addresses, routes, neighbours (rtnetlink via pyroute2, imported lazily
by `agent.network.netlink` only), iptables, the guest resolv.conf."""
