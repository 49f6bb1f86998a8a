"""kata-agent-py: the Kata Containers in-guest agent as an asyncio service."""

__version__ = "0.1.0"
# The agent API version reported by Health.Version (the Rust agent's API_VERSION).
API_VERSION = "0.0.1"
