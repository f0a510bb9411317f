"""PII: the recognizers (exact spans, checksums), the three redaction modes, and planted values that
never reach any table in clear under `mask`, through ingest and through the prompt/answer log."""

from __future__ import annotations

import base64
import os

import pytest
import sqlalchemy as sa
from generation_support import ingest_corpus

PLANTED = {
    "email": "jane.roe@example.org",
    "phone": "+44 20 7946 0958",
    "card": "4539 1488 0343 6467",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ip": "203.0.113.42",
    "national_id": "078-05-1121",
}


def test_each_recognizer_finds_its_type_at_the_exact_span():
    from genloom.pii import detect

    for kind, value in PLANTED.items():
        text = f"before {value} after"
        assert [(f.type, text[f.start:f.end]) for f in detect(text)] == [(kind, value)], kind


@pytest.mark.parametrize("text", [
    "card 4539 1488 0343 6468 fails Luhn",
    "IBAN DE89 3704 0044 0532 0130 01 fails mod-97",
    "not an address: 999.1.1.1",
    "a date 2026-01-31, a time 10:30:00, an order 12345678",
    "SSN-shaped but reserved: 666-12-3456 and 000-12-3456",
    "all zeros 0000 0000 0000 0000",
    "C++ std::vector and a::b",
])
def test_near_misses_are_not_findings(text):
    from genloom.pii import detect

    assert detect(text) == []


def test_modes_mask_hash_and_encrypt(monkeypatch):
    from genloom import crypto
    from genloom.errors import BadInput
    from genloom.pii import check_mode, redact

    text = f"mail {PLANTED['email']} and {PLANTED['email']}"
    masked, findings = redact(text, "mask")
    assert masked == "mail <EMAIL> and <EMAIL>" and [f.start for f in findings] == [5, 30]
    monkeypatch.setenv("GENLOOM_PII_HASH_KEY", "k1")
    hashed, _ = redact(text, "hash")
    token = hashed.split()[1]
    assert token.startswith("<EMAIL:") and hashed.split()[3] == token  # equal values stay joinable
    monkeypatch.setenv("GENLOOM_PII_HASH_KEY", "k2")
    assert redact(text, "hash")[0].split()[1] != token  # keyed: not a plain sha256 of the address
    monkeypatch.delenv(crypto.KEY_ENV, raising=False)
    with pytest.raises(BadInput, match="GENLOOM_ENCRYPTION_KEY"):
        check_mode("encrypt")
    monkeypatch.setenv(crypto.KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    sealed, _ = redact(text, "encrypt")
    inner = sealed.split()[1][len("<EMAIL:"):-1]
    assert PLANTED["email"] not in sealed and crypto.decrypt(inner, context=b"email") == PLANTED["email"]
    with pytest.raises(BadInput, match="unknown --pii mode"):
        check_mode("scramble")


def _tables_containing(engine, values) -> dict[str, list[str]]:
    """Every table's rows rendered as text, searched for each value."""
    found: dict[str, list[str]] = {}
    with engine.connect() as conn:
        tables = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        for table in tables:
            dump = "\n".join(conn.execute(sa.text(f'SELECT t::text FROM "{table}" t')).scalars())
            hits = [v for v in values if v in dump or v.replace(" ", "") in dump]
            if hits:
                found[table] = hits
    return found


def test_planted_pii_never_reaches_a_table_in_clear_under_mask(cli, engine, tmp_path, monkeypatch):
    doc = tmp_path / "customer.txt"
    doc.write_text("Customer record. " + ". ".join(f"Their {k} is {v}" for k, v in PLANTED.items()) + ".",
                   encoding="utf-8")
    r = cli("ingest", doc, "-c", "crm", "--pii", "mask", "--json")
    assert r.exit_code == 0, r.stderr
    ingest_corpus("kb")  # no default: generation below falls back to the server's mode
    monkeypatch.setenv("GENLOOM_PII", "mask")
    question = f"Is {PLANTED['email']} with card {PLANTED['card']} on file? Call {PLANTED['phone']}."
    assert cli("ask", question, "-c", "crm").exit_code == 0
    assert cli("ask", question, "-c", "kb").exit_code == 0
    assert _tables_containing(engine, list(PLANTED.values())) == {}
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT object_kind, field, pii_type, count FROM pii_findings ORDER BY 1, 2, 3")).all()
        chunk = conn.execute(sa.text("SELECT text FROM chunks c JOIN documents d ON d.id = c.document_id "
                                     "WHERE d.external_id LIKE '%customer.txt'")).scalar()
        mode = conn.execute(sa.text("SELECT pii_mode FROM collections WHERE name = 'crm'")).scalar()
    assert ("document", "text", "iban", 1) in rows and ("document", "text", "national_id", 1) in rows
    assert {(k, f, t) for k, f, t, _ in rows if k == "prompt"} == {("prompt", "text", "card"), ("prompt", "text", "email"),
                                                                   ("prompt", "text", "phone")}
    assert "Their email is <EMAIL>" in chunk and "<CARD>" in chunk and mode == "mask"
    # The collection remembers its mode: a re-ingest without --pii masks too.
    doc.write_text(f"Updated: write to {PLANTED['email']}", encoding="utf-8")
    assert cli("ingest", doc, "-c", "crm").exit_code == 0
    assert _tables_containing(engine, [PLANTED["email"]]) == {}


def test_pii_option_errors_are_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("GENLOOM_ENCRYPTION_KEY", raising=False)
    doc = tmp_path / "a.txt"
    doc.write_text("x", encoding="utf-8")
    for args, message in [(["ingest", doc, "-c", "kb", "--pii", "blur"], "unknown --pii mode 'blur'"),
                          (["ingest", doc, "-c", "kb", "--pii", "encrypt"], "--pii encrypt needs GENLOOM_ENCRYPTION_KEY")]:
        r = cli(*args)
        assert r.exit_code == 1 and message in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


def test_field_encryption_seals_the_log_reads_back_and_rotates(cli, engine, monkeypatch):
    from genloom.crypto import KEY_ENV, OLD_KEY_ENV, key_id

    first, second = os.urandom(32), os.urandom(32)
    monkeypatch.setenv(KEY_ENV, base64.b64encode(first).decode())
    ingest_corpus("kb")
    out = cli("ask", "What is BM25, for my secret project Nightjar?", "-c", "kb", "--json")
    assert out.exit_code == 0, out.stderr
    gen_id = out.json()["generation_id"]
    assert cli("feedback", gen_id, "--score", "4", "--comment", "Nightjar liked it").exit_code == 0
    assert _tables_containing(engine, ["Nightjar"]) == {}  # nothing in clear, not even the session title
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT text FROM prompts")).scalar()
    assert stored.startswith(f"gle1:{key_id(first)}:")
    shown = cli("generations", "show", gen_id, "--json").json()
    assert "Nightjar" in shown["prompt"] and shown["feedback"][0]["comment"] == "Nightjar liked it"

    monkeypatch.setenv(KEY_ENV, base64.b64encode(second).decode())
    monkeypatch.setenv(OLD_KEY_ENV, base64.b64encode(first).decode())
    r = cli("keys", "rotate-data-key", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["resealed"]["prompts.text"] == 1 and r.json()["resealed"]["feedback.comment"] == 1
    monkeypatch.delenv(OLD_KEY_ENV)
    assert "Nightjar" in cli("generations", "show", gen_id, "--json").json()["prompt"]  # the new key alone reads it
    with engine.connect() as conn:
        kids = conn.execute(sa.text("SELECT DISTINCT split_part(output, ':', 2) FROM generations")).scalars().all()
    assert kids == [key_id(second)]
    with engine.begin() as conn:  # a ciphertext moved to another column does not decrypt there
        conn.execute(sa.text("UPDATE feedback SET comment = (SELECT text FROM prompts LIMIT 1)"))
    r = cli("generations", "show", gen_id, "--json")
    assert r.exit_code == 1 and "failed authentication" in r.stderr


SECRETS = {
    "openai": "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2",
    "anthropic": "sk-ant-" + "api03-" + "x" * 40,
    "github": "ghp_" + "Z" * 36,
    "github-pat": "github_pat_" + "1" * 22 + "_" + "y" * 59,
    "aws-id": "AKIA" + "IOSFODNN7EXAMPLE",
    "aws-secret": "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


@pytest.mark.parametrize("mode", ["mask", "hash", "encrypt"])
@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secrets_that_look_like_api_keys_are_redacted(monkeypatch, name, mode):
    """Audit 2, finding 6: API keys in a document (sk-…, ghp_…, AWS keys) were not recognised."""
    import base64

    from genloom.pii import detect, redact

    monkeypatch.setenv("GENLOOM_ENCRYPTION_KEY", base64.b64encode(b"k" * 32).decode())
    monkeypatch.setenv("GENLOOM_PII_HASH_KEY", "a-test-hash-key")
    secret = SECRETS[name]
    text = f"config: {secret} (do not share)"
    assert [(f.type, text[f.start:f.end]) for f in detect(text)] == [("secret", secret)]
    redacted, findings = redact(text, mode)
    assert secret not in redacted and "<SECRET" in redacted and [f.type for f in findings] == ["secret"]


def test_database_errors_do_not_log_the_statements_values(engine, caplog):
    """Audit 2, finding 6: every 500 logged SQLAlchemy's `[parameters: {'query': '…email… card …'}]`."""
    import logging

    import sqlalchemy as sa

    with caplog.at_level(logging.ERROR), pytest.raises(sa.exc.DBAPIError) as raised, engine.connect() as conn:
        conn.execute(sa.text("SELECT CAST(:q AS text), 1 / 0"), {"q": "jane@example.com card 4716 4444 3333 2222"})
    assert "division by zero" in str(raised.value)
    assert "jane@example.com" not in str(raised.value) and "4716" not in str(raised.value), str(raised.value)


USER, LABEL = "jane.roe.customer-7731", "refund-dispute-jane"


@pytest.mark.parametrize("mode", ["off", "mask", "hash", "encrypt"])
def test_user_ids_and_feedback_labels_are_keyed_hashes_under_every_pii_mode(cli, engine, monkeypatch, mode):
    """Issue 25, finding 6 (rest): sessions.user_id, prompts.user_id, feedback.user_id and
    feedback.label were stored in clear under --pii. Read back raw: clear only when off; else an
    HMAC under the install's hash key, equal for equal users (analytics still group them)."""
    from genloom.db.engine import session_scope
    from genloom.generation.log import list_generations
    from genloom.pii import pseudonym

    monkeypatch.setenv("GENLOOM_PII_HASH_KEY", "test-key")
    monkeypatch.setenv("GENLOOM_ENCRYPTION_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("GENLOOM_PII", mode)
    ingest_corpus("kb")
    generation_ids = []
    for question in ("What is BM25?", "What is HNSW?"):
        out = cli("ask", question, "-c", "kb", "--user", USER, "--json")
        assert out.exit_code == 0, out.stderr
        generation_ids.append(out.json()["generation_id"])
    r = cli("feedback", generation_ids[0], "--score", "2", "--label", LABEL, "--user", USER)
    assert r.exit_code == 0, r.stderr
    with engine.connect() as conn:
        stored = {
            field: conn.execute(sa.text(f"SELECT DISTINCT {column} FROM {table}")).scalars().all()
            for field, (table, column) in {
                "sessions.user_id": ("sessions", "user_id"),
                "prompts.user_id": ("prompts", "user_id"),
                "feedback.user_id": ("feedback", "user_id"),
                "feedback.label": ("feedback", "label"),
            }.items()
        }
    if mode == "off":
        assert stored == {"sessions.user_id": [USER], "prompts.user_id": [USER], "feedback.user_id": [USER],
                          "feedback.label": [LABEL]}
        return
    hashed_user, hashed_label = pseudonym(USER, mode), pseudonym(LABEL, mode)
    assert hashed_user.startswith("hmac:") and USER not in hashed_user
    assert stored == {"sessions.user_id": [hashed_user], "prompts.user_id": [hashed_user],  # one user, grouped
                      "feedback.user_id": [hashed_user], "feedback.label": [hashed_label]}
    assert _tables_containing(engine, [USER, LABEL]) == {}
    with session_scope() as s:  # the log's user filter still finds them by the clear id
        assert sorted(g["id"] for g in list_generations(s, user=USER)) == sorted(generation_ids)
