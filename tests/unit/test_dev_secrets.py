"""`make run`'s local secrets: generated once, and a secret added later is appended to an older file."""

import os

import pytest

from tools import suite


@pytest.fixture
def dev_env(tmp_path, monkeypatch):
    path = tmp_path / "dev.env"
    monkeypatch.setattr(suite, "VAR", str(tmp_path))
    monkeypatch.setattr(suite, "DEV_ENV", str(path))
    for key in suite.DEV_SECRETS:
        monkeypatch.delenv(key, raising=False)
    return path


def read(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_every_secret_is_generated_once(dev_env):
    suite.load_dev_secrets()
    first = read(dev_env)
    assert set(first) == set(suite.DEV_SECRETS)
    assert all(len(value) >= 32 for value in first.values())
    assert {key: os.environ[key] for key in suite.DEV_SECRETS} == first
    suite.load_dev_secrets()
    assert read(dev_env) == first
    assert oct(dev_env.stat().st_mode & 0o777) == "0o600"


def test_an_older_file_keeps_its_values_and_gains_the_missing_ones(dev_env):
    dev_env.write_text("GRASSROOTS_JWT_SECRET=kept-signing-secret-of-old\nGRASSROOTS_PII_KEY=kept-pii-key-of-old-run\n")
    suite.load_dev_secrets()
    now = read(dev_env)
    assert now["GRASSROOTS_JWT_SECRET"] == "kept-signing-secret-of-old"
    assert now["GRASSROOTS_PII_KEY"] == "kept-pii-key-of-old-run"
    assert now["NOTICES_VOICE_INBOUND_SECRET"] and now["NOTICES_SMS_INBOUND_SECRET"]
    assert os.environ["NOTICES_VOICE_INBOUND_SECRET"] == now["NOTICES_VOICE_INBOUND_SECRET"]


def test_the_environment_wins_over_the_file(dev_env, monkeypatch):
    monkeypatch.setenv("NOTICES_SMS_INBOUND_SECRET", "from-the-environment-0123")
    suite.load_dev_secrets()
    assert os.environ["NOTICES_SMS_INBOUND_SECRET"] == "from-the-environment-0123"
