"""Training-side SDK: record a run's audit events, sign them and deliver them (docs/sdk.md).

The Trainer callback lives in ``rlhf_ledger.sdk.hf_callback`` (imported on demand: it needs transformers).
"""

from rlhf_ledger.core.extras import OPTIONAL_MODULES, needs_extra

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
except ModuleNotFoundError as e:  # without the [sdk] extra: one line naming it
    missing = (e.name or "").split(".")[0]
    if OPTIONAL_MODULES.get(missing, ("", ""))[1] != "sdk":
        raise
    raise ModuleNotFoundError(needs_extra("rlhf_ledger.sdk", missing, "sdk"), name=e.name) from None

__all__ = [
    "Ack", "ChainConflictError", "DatasetManifest", "DeliveryAuthError", "DeliveryError", "HttpSink", "LocalSink",
    "PermanentDeliveryError", "PrivacyAccountant", "PrivacyBudgetExceeded", "RankInfo", "RankRecorder", "Run",
    "RunEndedDeliveryError", "RunEndedError", "SpoolError", "SpoolLockedError", "TransientDeliveryError",
    "WeightsDigest", "diff_tensors", "file_digest", "file_manifest", "model_card", "model_card_for_run",
    "pseudonym", "verify_command", "weights_digest",
]
