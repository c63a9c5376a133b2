"""DP accounting: values from dp-accounting's RDP accountant, composition, enforcement, recording."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting import rdp

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import LocalSink, PrivacyAccountant, PrivacyBudgetExceeded, Run
from rlhf_ledger.sdk.privacy import Spend, replay_epsilon

from .helpers import RecordingAppendForTests


def direct_epsilon(parts, delta):
    acc = rdp.RdpAccountant()
    for sigma, q, steps in parts:
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return acc.get_epsilon(delta)


def test_epsilon_values_and_composition():
    a = PrivacyAccountant(10.0, 1e-5)
    e1 = a.spend(1.1, 0.01, 400)["epsilon"]
    e2 = a.spend(1.1, 0.01, 600)["epsilon"]
    assert e1 == direct_epsilon([(1.1, 0.01, 400)], 1e-5)
    assert math.isclose(e2, direct_epsilon([(1.1, 0.01, 1000)], 1e-5), rel_tol=1e-12)
    assert 1.6 < e2 < 1.8  # q=0.01, sigma=1.1, 1000 steps, delta=1e-5: about 1.71 with RDP
    assert e1 < e2
    assert math.isclose(replay_epsilon(a.spends, 1e-5), e2, rel_tol=1e-12)
    assert a.spends == [Spend(1.1, 0.01, 400), Spend(1.1, 0.01, 600)]
    more_noise = PrivacyAccountant(None, 1e-5).spend(2.0, 0.01, 1000)["epsilon"]
    assert more_noise < e2


def test_enforcement_refuses_and_spends_nothing():
    a = PrivacyAccountant(1.0, 1e-5)
    a.spend(1.1, 0.01, 100)
    before = a.epsilon
    with pytest.raises(PrivacyBudgetExceeded, match="declared budget 1.0") as ei:
        a.spend(1.1, 0.01, 10_000)
    assert a.epsilon == before and len(a.spends) == 1
    assert ei.value.attempted["epsilon"] > 1.0 and ei.value.attempted["declared_epsilon"] == 1.0
    off = PrivacyAccountant(1.0, 1e-5, enforce=False)
    assert off.spend(1.1, 0.01, 10_000)["epsilon"] > 1.0
    with pytest.raises(ValueError):
        a.spend(1.1, 1.5, 1)
    with pytest.raises(ValueError):
        a.spend(0.0, 0.1, 1)


def test_run_records_spends_and_refused_attempt(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    run = Run(log_id="l", run_id="dp", signer=s, sink=LocalSink(app), method="dpo", hyperparameters={"lr": 1},
              base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64}, spool_dir=tmp_path / "sp",
              declared={"privacy_budget": {"epsilon": 2.0, "delta": 1e-5}})
    with pytest.raises(PrivacyBudgetExceeded):
        with run:
            run.privacy_spend(1.1, 0.01, 500)
            run.privacy_spend(1.1, 0.01, 500)
            run.privacy_spend(1.1, 0.01, 5000)
    types = [e["type"] for e in app.events()]
    assert types == ["run.start", "privacy.spend", "privacy.spend", "privacy.budget_exceeded", "run.end"]
    spends = [e["body"] for e in app.events() if e["type"] == "privacy.spend"]
    assert spends[0]["library"] == "dp-accounting" and spends[0]["library_version"] == "0.6.0"
    assert spends[0]["mechanism"] == "poisson_subsampled_gaussian" and spends[0]["accountant"] == "rdp"
    # the verifier's replay: compose every recorded spend from scratch at the declared delta
    replayed = replay_epsilon([Spend(b["noise_multiplier"], b["sample_rate"], b["steps"]) for b in spends], 1e-5)
    assert math.isclose(replayed, spends[-1]["epsilon"], rel_tol=1e-12) and replayed <= 2.0
    assert app.events()[-1]["body"]["status"] == "failed"
