"""Training-side SDK: record a run's audit events, sign them and deliver them (docs/sdk.md).

The Trainer callback lives in ``ledger.sdk.hf_callback`` (imported on demand: it needs transformers).
"""

from .modelcard import model_card, model_card_for_run, verify_command
from .privacy import PrivacyAccountant, PrivacyBudgetExceeded
from .recorder import DatasetManifest, Run, pseudonym
from .sinks import Ack, DeliveryError, HttpSink, LocalSink, PermanentDeliveryError, TransientDeliveryError
from .weights import WeightsDigest, diff_tensors, file_digest, file_manifest, weights_digest

__all__ = [
    "Ack", "DatasetManifest", "DeliveryError", "HttpSink", "LocalSink", "PermanentDeliveryError",
    "PrivacyAccountant", "PrivacyBudgetExceeded", "Run", "TransientDeliveryError", "WeightsDigest",
    "diff_tensors", "file_digest", "file_manifest", "model_card", "model_card_for_run", "pseudonym",
    "verify_command", "weights_digest",
]
