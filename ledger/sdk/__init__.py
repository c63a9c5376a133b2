"""Training-side SDK: record a run's audit events, sign them and deliver them (docs/sdk.md).

The Trainer callback lives in ``rlhf_ledger.sdk.hf_callback`` (imported on demand: it needs transformers).
"""

# The modules the [sdk] extra brings (pyproject.toml; ledger/cli/extras.py has the same table for
# the CLI, which the SDK may not import): without them, one line naming the extra.
_SDK_EXTRA_MODULES = frozenset({"httpx", "yaml"})  # httpx: imported by HttpSink() only

try:
    from rlhf_ledger.sdk.distributed import RankInfo
    from rlhf_ledger.sdk.modelcard import model_card, model_card_for_run, verify_command
    from rlhf_ledger.sdk.privacy import PrivacyAccountant, PrivacyBudgetExceeded
    from rlhf_ledger.sdk.recorder import DatasetManifest, RankRecorder, Run, RunEndedError, pseudonym
    from rlhf_ledger.sdk.sinks import (
        Ack,
        ChainConflictError,
        DeliveryAuthError,
        DeliveryError,
        HttpSink,
        LocalSink,
        PermanentDeliveryError,
        RunEndedDeliveryError,
        TransientDeliveryError,
    )
    from rlhf_ledger.sdk.spool import SpoolError, SpoolLockedError
    from rlhf_ledger.sdk.weights import WeightsDigest, diff_tensors, file_digest, file_manifest, weights_digest
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] not in _SDK_EXTRA_MODULES:
        raise
    raise ModuleNotFoundError(f"rlhf_ledger.sdk needs the [sdk] extra ({e.name!r} is not installed): "
                              "pip install 'rlhf-ledger[sdk]'", name=e.name) from None

__all__ = [
    "Ack", "ChainConflictError", "DatasetManifest", "DeliveryAuthError", "DeliveryError", "HttpSink", "LocalSink",
    "PermanentDeliveryError", "PrivacyAccountant", "PrivacyBudgetExceeded", "RankInfo", "RankRecorder", "Run",
    "RunEndedDeliveryError", "RunEndedError", "SpoolError", "SpoolLockedError", "TransientDeliveryError",
    "WeightsDigest", "diff_tensors", "file_digest", "file_manifest", "model_card", "model_card_for_run",
    "pseudonym", "verify_command", "weights_digest",
]
