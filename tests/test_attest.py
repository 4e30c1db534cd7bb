"""Keys, DSSE envelopes and release statements: each way of tampering is rejected with its reason."""

from __future__ import annotations

import base64
import json
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainguard.attest import (AttestationError, PREDICATE_TYPE, check, generate, keyid, load_private, load_public,
                               sign_statement, statement)
from trainguard.attest import dsse
from trainguard.attest.statement import file_sha256
from trainguard.errors import ConfigError


@pytest.fixture()
def signed(tmp_path):
    priv, pub = generate(tmp_path / "keys")
    data = tmp_path / "approved.jsonl"
    data.write_bytes(b'{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    env = sign_statement(statement(data.name, file_sha256(data), {"x": 1}), [load_private(priv)])
    att = tmp_path / "approved.intoto.json"
    att.write_text(json.dumps(env))
    return data, att, pub, priv


def test_keygen_files_and_permissions(tmp_path):
    priv, pub = generate(tmp_path / "k", "ci")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert keyid(load_public(pub)) == keyid(load_private(priv).public_key())
    with pytest.raises(ConfigError, match="exists"):
        generate(tmp_path / "k", "ci")
    generate(tmp_path / "k", "ci", force=True)
    assert keyid(load_public(pub)) == keyid(load_private(priv).public_key())


def test_encrypted_key_needs_passphrase(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINGUARD_KEY_PASSPHRASE", "correct horse")
    priv, _ = generate(tmp_path, "enc", encrypt=True)
    assert b"ENCRYPTED" in priv.read_bytes()
    load_private(priv)
    monkeypatch.delenv("TRAINGUARD_KEY_PASSPHRASE")
    with pytest.raises(ConfigError, match="encrypted"):
        load_private(priv)


def test_pae_matches_the_dsse_spec():
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_valid_attestation_is_accepted(signed):
    data, att, pub, _ = signed
    res = check(data, att, [pub])
    assert res.sha256 == file_sha256(data)
    assert res.statement["predicateType"] == PREDICATE_TYPE
    assert res.statement["_type"] == "https://in-toto.io/Statement/v1"
    assert res.statement["subject"][0]["digest"]["sha256"] == res.sha256


def test_wrong_key_is_rejected(signed, tmp_path):
    data, att, _, _ = signed
    _, other = generate(tmp_path / "other")
    with pytest.raises(AttestationError, match="none of which is trusted"):
        check(data, att, [other])


def test_edited_payload_is_rejected(signed):
    data, att, pub, _ = signed
    env = json.loads(att.read_text())
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["x"] = 2
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    att.write_text(json.dumps(env))
    with pytest.raises(AttestationError, match="modified after signing"):
        check(data, att, [pub])


def test_edited_subject_digest_is_rejected(signed, tmp_path):
    """Pointing the statement at another file also breaks the signature."""
    data, att, pub, _ = signed
    env = json.loads(att.read_text())
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["subject"][0]["digest"]["sha256"] = "0" * 64
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    with pytest.raises(AttestationError, match="modified after signing"):
        check(data, env, [pub])


def test_edited_dataset_is_rejected(signed):
    data, att, pub, _ = signed
    raw = bytearray(data.read_bytes())
    raw[10] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(AttestationError, match="differs from the attested release"):
        check(data, att, [pub])


def test_malformed_envelopes(signed, tmp_path):
    data, att, pub, _ = signed
    env = json.loads(att.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AttestationError, match="not valid JSON"):
        check(data, bad, [pub])
    with pytest.raises(AttestationError, match="not a DSSE envelope"):
        check(data, {"payload": env["payload"]}, [pub])
    with pytest.raises(AttestationError, match="payloadType"):
        check(data, dict(env, payloadType="text/plain"), [pub])
    with pytest.raises(AttestationError, match="no signatures"):
        check(data, dict(env, signatures=[]), [pub])
    with pytest.raises(AttestationError, match="base64"):
        check(data, dict(env, payload="***"), [pub])


def test_min_signatures(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"text": "a"}\n')
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    env = sign_statement(statement(data.name, file_sha256(data), {}), [k1, k2])
    assert len(check(data, env, [k1.public_key(), k2.public_key()], min_signatures=2).keyids) == 2
    with pytest.raises(AttestationError, match="requires 2"):
        check(data, env, [k1.public_key()], min_signatures=2)


def test_wrong_statement_type_is_rejected(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"text": "a"}\n')
    k = Ed25519PrivateKey.generate()
    stmt = statement(data.name, file_sha256(data), {})
    stmt["predicateType"] = "https://slsa.dev/provenance/v1"
    with pytest.raises(AttestationError, match="predicateType"):
        check(data, sign_statement(stmt, [k]), [k.public_key()])


def test_read_unverified_is_the_one_parser_for_showing_an_attestation(signed):
    from trainguard.attest import read_unverified

    data, att, pub, _ = signed
    env, stmt = read_unverified(att.read_bytes())
    assert env.keyids == [keyid(load_public(pub))] and env.payload_type == dsse.INTOTO_PAYLOAD_TYPE
    assert stmt["predicate"] == {"x": 1} and stmt["subject"][0]["name"] == data.name
    for bad, why in ((b"[1]", "not a DSSE envelope"), (b"{", "not valid JSON"),
                     (json.dumps({"payloadType": dsse.INTOTO_PAYLOAD_TYPE, "payload": "!!", "signatures": [{}]}).encode(),
                      "not valid base64")):
        with pytest.raises(AttestationError, match=why):
            read_unverified(bad)
