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
