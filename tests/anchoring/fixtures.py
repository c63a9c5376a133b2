"""Fixtures shared by the manifest and worker tests: a SQLite ledger with one log and a
registered producer. Imported by the test modules that use them (they shadow the
backend-parametrised `ledger` of tests/conftest.py only there)."""

from __future__ import annotations

import pytest

from rlhf_ledger.store.ledger import Ledger
from tests.ledger.helpers import Producer

LOG = "train"


@pytest.fixture
def ledger(tmp_path):
    led = Ledger.open(tmp_path / "data", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    led.init_log(LOG, checkpoint_every_events=10_000)
    yield led
    led.close()


@pytest.fixture
def producer(ledger):
    p = Producer(LOG)
    ledger.register_producer(LOG, p.signer.public_key)
    return p
