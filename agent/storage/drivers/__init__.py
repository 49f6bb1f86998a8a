"""One module per family of storage drivers; `agent.storage.manager.default_drivers` lists them."""
