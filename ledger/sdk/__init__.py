"""Training-side SDK: record a run's audit events, sign them and deliver them (docs/sdk.md)."""

from .privacy import PrivacyAccountant, PrivacyBudgetExceeded
from .recorder import DatasetManifest, Run, pseudonym
from .sinks import Ack, DeliveryError, HttpSink, LocalSink, PermanentDeliveryError, TransientDeliveryError
from .weights import WeightsDigest, diff_tensors, file_digest, file_manifest, weights_digest

__all__ = [
    "Ack", "DatasetManifest", "DeliveryError", "HttpSink", "LocalSink", "PermanentDeliveryError",
    "PrivacyAccountant", "PrivacyBudgetExceeded", "Run", "TransientDeliveryError", "WeightsDigest",
    "diff_tensors", "file_digest", "file_manifest", "pseudonym", "weights_digest",
]
