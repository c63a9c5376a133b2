"""Training-side SDK: record a run's audit events, sign them and deliver them (docs/sdk.md).

The Trainer callback lives in ``ledger.sdk.hf_callback`` (imported on demand: it needs transformers).
"""

from .modelcard import model_card, model_card_for_run, verify_command
from .privacy import PrivacyAccountant, PrivacyBudgetExceeded
from .distributed import RankInfo
from .recorder import DatasetManifest, RankRecorder, Run, RunEndedError, pseudonym
from .sinks import (Ack, ChainConflictError, DeliveryAuthError, DeliveryError, HttpSink, LocalSink, PermanentDeliveryError,
                    RunEndedDeliveryError, TransientDeliveryError)
from .spool import SpoolError, SpoolLockedError
from .weights import WeightsDigest, diff_tensors, file_digest, file_manifest, weights_digest

__all__ = [
    "Ack", "ChainConflictError", "DatasetManifest", "DeliveryAuthError", "DeliveryError", "HttpSink", "LocalSink",
    "PermanentDeliveryError", "PrivacyAccountant", "PrivacyBudgetExceeded", "RankInfo", "RankRecorder", "Run",
    "RunEndedDeliveryError", "RunEndedError", "SpoolError", "SpoolLockedError", "TransientDeliveryError",
    "WeightsDigest", "diff_tensors", "file_digest", "file_manifest", "model_card", "model_card_for_run",
    "pseudonym", "verify_command", "weights_digest",
]
