"""Named clients: a tokens file, read again when it changes (a client added or revoked without a restart)."""

import os

import pytest
import torch
from fastapi.testclient import TestClient

from marketplace import Market
from marketplace.errors import MarketplaceError
from marketplace.models import mlp
from marketplace.serving import ServerConfig, create_app, engine_from_market
from marketplace.serving import auth

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"


def write(path, text: str, bump: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(bump, bump))  # a new modification time even within the same clock tick


def test_a_tokens_file_names_clients_and_revocation_needs_no_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "RECHECK_SECONDS", 0.0)
    tokens = tmp_path / "tokens"
    write(tokens, f"# clients\nalice {ALICE}\nbob {BOB}  # the second one\n", 10**18)
    torch.manual_seed(0)
    config = ServerConfig(records=4, store=str(tmp_path / "store"), tokens_file=str(tokens))
    with TestClient(create_app(engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), config, (6,)))) as client:
        market = lambda token: client.get("/v1/market", headers={"Authorization": f"Bearer {token}"}).status_code
        assert market(ALICE) == 200 and market(BOB) == 200 and market("nobody-0123456789") == 401
        write(tokens, f"alice {ALICE}\n", 2 * 10**18)  # bob revoked
        assert market(BOB) == 401 and market(ALICE) == 200
        write(tokens, f"alice {ALICE}\nbob", 3 * 10**18)  # a half-written edit keeps the last good clients
        assert market(ALICE) == 200 and market(BOB) == 401


def test_tokens_file_mistakes_are_one_line_errors(tmp_path):
    bad = tmp_path / "tokens"
    bad.write_text("alice short\n")
    with pytest.raises(MarketplaceError, match="line 1: expected 'NAME TOKEN'"):
        auth.read_tokens(bad)
    bad.write_text(f"alice {ALICE}\nmallory {ALICE}\n")
    with pytest.raises(MarketplaceError, match="already 'alice'"):
        auth.read_tokens(bad)
    with pytest.raises(MarketplaceError, match="no tokens file"):
        auth.Tokens(path=tmp_path / "missing")
    with pytest.raises(MarketplaceError, match="needs a secret"):
        ServerConfig().validate()


def test_a_client_may_send_at_most_its_share_of_records_per_step(tmp_path):
    from marketplace.errors import RequestError

    torch.manual_seed(0)
    config = ServerConfig(records=4, store=str(tmp_path / "store"), token="t", client_records=2)
    engine = engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), config, (6,))
    report = lambda client, n: engine.report([engine.step] * n, torch.zeros(n, 2, dtype=torch.int64),
                                             torch.arange(n, dtype=torch.float32), client=client)
    report("alice", 2)
    with pytest.raises(RequestError) as refused:
        report("alice", 1)
    assert refused.value.status == 429 and "'alice' has sent 2 records in step 0" in str(refused.value)
    assert engine.status()["stored_records"] == 2  # the refused record was not stored
    assert report("bob", 2)["updates"] == 1  # K = 4 records: an update, and a new step
    assert report("alice", 2)["step"] == 1  # a new step: a new share
    engine.close()


def test_status_counts_records_per_client_for_token_holders_only(tmp_path):
    tokens = tmp_path / "tokens"
    write(tokens, f"alice {ALICE}\nbob {BOB}\n", 10**18)
    torch.manual_seed(0)
    config = ServerConfig(records=8, store=str(tmp_path / "store"), tokens_file=str(tokens))
    with TestClient(create_app(engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), config, (6,)))) as client:
        as_ = lambda token: {"Authorization": f"Bearer {token}"}
        ids = [p["id"] for p in client.post("/v1/predict", json={"inputs": [[0.0] * 6] * 3}).json()["predictions"]]
        labels = [{"id": i, "label": 1} for i in ids]
        assert client.post("/v1/feedback", json=labels, headers=as_(ALICE)).status_code == 200
        report = [{"step": 0, "path": [0, 1], "loss": 1.0}] * 2
        assert client.post("/v1/report", json=report, headers=as_(BOB)).status_code == 200
        for headers in ({}, as_("nobody-0123456789")):  # public: the counters, never a client's name
            public = client.get("/v1/status", headers=headers)
            assert public.status_code == 200 and "records_by_client" not in public.json()
            assert "alice" not in public.text and "bob" not in public.text
        mine = client.get("/v1/status", headers=as_(BOB)).json()
        assert mine["stored_records"] == 5
        assert mine["records_by_client"] == {"clients": {"alice": {"feedback": 3, "report": 0},
                                                         "bob": {"feedback": 0, "report": 2}},
                                             "unattributed": {"feedback": 0, "report": 0}}


def test_each_client_has_its_own_rate_and_anonymous_predicts_share_one(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "RECHECK_SECONDS", 0.0)
    tokens = tmp_path / "tokens"
    write(tokens, f"alice {ALICE}\nbob {BOB}\n", 10**18)
    torch.manual_seed(0)
    config = ServerConfig(records=4, store=str(tmp_path / "store"), tokens_file=str(tokens), client_rate=0.01,
                          client_burst=2)  # 2 requests, then one per 100 s: the test never sees a refill
    with TestClient(create_app(engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), config, (6,)))) as client:
        market = lambda token: client.get("/v1/market", headers={"Authorization": f"Bearer {token}"})
        assert [market(ALICE).status_code for _ in range(2)] == [200, 200]
        refused = market(ALICE)
        assert refused.status_code == 429 and 90 <= int(refused.headers["retry-after"]) <= 100
        assert "'alice'" in refused.json()["error"] and "\n" not in refused.json()["error"]
        assert market(BOB).status_code == 200  # alice's rate is hers alone
        assert market("nobody-0123456789").status_code == 401  # no token: refused before any bucket is touched
        predict = lambda headers: client.post("/v1/predict", json={"inputs": [[0.0] * 6]}, headers=headers)
        assert predict({}).status_code == 200
        assert predict({"Authorization": "Bearer made-up-0123456789"}).status_code == 200  # unknown: anonymous
        refused = predict({})
        assert refused.status_code == 429 and "retry-after" in refused.headers
        assert "anonymous" in refused.json()["error"]
        assert predict({"Authorization": f"Bearer {BOB}"}).status_code == 200  # bob's second request
        assert predict({"Authorization": f"Bearer {BOB}"}).status_code == 429
        assert client.get("/v1/status").status_code == 200  # status and metrics are never limited
        write(tokens, f"alice {ALICE}\n", 2 * 10**18)  # bob revoked: 401, not 429, without a restart
        assert market(BOB).status_code == 401
