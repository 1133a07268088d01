"""The real `nilauth-credit-middleware` 0.1.3 client against a real Reckon.

Each test starts its own `reckon serve` on port 0 with a fresh database,
provisions an account through Reckon's native API, then talks to it only
through the Python client, exactly as a FastAPI service using the
middleware would.
"""

import asyncio
import json
import os
import subprocess
import tempfile
import urllib.request

import pytest
from fastapi import FastAPI, HTTPException, Request
from httpx import ASGITransport, AsyncClient

from nilauth_credit_middleware import CreditClientSingleton, MeteringConfig, metered
from nilauth_credit_middleware.credit_locking_client import CreditLockingClient

ADMIN = "interop-admin-key"
SERVICE = "interop-service-key"
SECRET = "sk_interop_0123456789abcdef"


class Reckon:
    """A reckon server process on an ephemeral port."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        env = dict(os.environ, RECKON_ADMIN_KEY=ADMIN, RECKON_API_KEY=SERVICE, RECKON_LOG="warn")
        self.proc = subprocess.Popen(
            [os.environ["RECKON_BIN"], "serve", "--listen", "127.0.0.1:0",
             "--database", f"sqlite:{self.dir.name}/reckon.db"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("reckon listening on "), line
        self.url = line.strip().rsplit(" ", 1)[1]

    def admin(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"X-Admin-Key": ADMIN, "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"null")

    def provision(self, user, amount):
        self.admin("POST", "/v1/accounts", {"id": user})
        self.admin("POST", f"/v1/accounts/{user}/grants", {"amount": amount})
        self.admin("POST", f"/v1/accounts/{user}/credentials", {"key": SECRET})

    def available(self, user):
        return self.admin("GET", f"/v1/accounts/{user}")["balance"]["available"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.dir.cleanup()


@pytest.fixture
def reckon():
    server = Reckon()
    yield server
    server.stop()


def run(coro):
    return asyncio.run(coro)


def test_health_lock_summary_unlock(reckon):
    reckon.provision("user-1", 10)

    async def scenario():
        client = CreditLockingClient(base_url=reckon.url, api_token=SERVICE)
        try:
            assert await client.health()
            lock = await client.lock_funds(credential=SECRET, amount=5.0)
            summary = await client.summary()
            assert [(u.user_id, u.balance) for u in summary.users] == [("user-1", 5.0)]
            assert [l.lock_id for l in summary.locks] == [lock.lock_id]
            await client.unlock_funds(lock.lock_id, 1.25)
            summary = await client.summary()
            assert summary.users[0].balance == 8.75
            assert summary.locks == []
        finally:
            await client.close()

    run(scenario())
    assert reckon.available("user-1") == "8.75"


def test_insufficient_balance_is_402(reckon):
    reckon.provision("user-1", 1)

    async def scenario():
        client = CreditLockingClient(base_url=reckon.url, api_token=SERVICE)
        try:
            with pytest.raises(HTTPException) as err:
                await client.lock_funds(credential=SECRET, amount=5.0)
            assert err.value.status_code == 402
            assert "Insufficient balance" in err.value.detail
        finally:
            await client.close()

    run(scenario())
    assert reckon.available("user-1") == "1"


def test_unknown_lock_is_404_and_unknown_credential_is_404(reckon):
    reckon.provision("user-1", 1)

    async def scenario():
        client = CreditLockingClient(base_url=reckon.url, api_token=SERVICE)
        try:
            with pytest.raises(HTTPException) as err:
                await client.unlock_funds("00000000-0000-4000-8000-000000000000", 1.0)
            assert err.value.status_code == 404
            with pytest.raises(HTTPException) as err:
                await client.lock_funds(credential="sk_nobody_0123456789abcdef", amount=1.0)
            assert err.value.status_code == 404
        finally:
            await client.close()

    run(scenario())


def test_validate_credential(reckon):
    reckon.provision("user-1", 1)

    async def scenario():
        client = CreditLockingClient(base_url=reckon.url, api_token=SERVICE)
        try:
            v = await client.validate_credential(SECRET, is_public=False)
            assert (v.user_id, v.is_valid, v.is_public) == ("user-1", True, False)
        finally:
            await client.close()

    run(scenario())


def test_metered_decorator_charges_and_refunds(reckon):
    """The middleware's own @metered decorator on a FastAPI app, end to end."""
    reckon.provision("user-1", 10)
    CreditClientSingleton._credit_client = None
    CreditClientSingleton.configure(base_url=reckon.url, api_token=SERVICE)

    async def credential(request: Request) -> str:
        return request.headers["x-credential"]

    async def cost(request, response) -> float:
        return 1.5

    app = FastAPI()

    @app.get("/work")
    @metered(MeteringConfig(credential_extractor=credential, estimated_cost=5.0, cost_calculator=cost))
    async def work(request: Request):
        return {"ok": True}

    @app.get("/fail")
    @metered(MeteringConfig(credential_extractor=credential, estimated_cost=5.0))
    async def fail(request: Request):
        raise RuntimeError("handler failed")

    async def scenario():
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://app") as http:
            r = await http.get("/work", headers={"x-credential": SECRET})
            assert r.status_code == 200
            r = await http.get("/fail", headers={"x-credential": SECRET})
            assert r.status_code == 500
        await CreditClientSingleton.get_client().close()

    run(scenario())
    # 10 - 1.5 charged; the failed call was refunded in full.
    assert reckon.available("user-1") == "8.5"
    CreditClientSingleton._credit_client = None
