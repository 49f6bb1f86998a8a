from agent.rpc.pb import health_pb2
from tests.support.agent import AgentProcess


async def test_check(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        resp = await client.health.Check(health_pb2.CheckRequest(), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
