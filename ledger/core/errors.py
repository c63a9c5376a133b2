"""Errors that carry what failed and where, so the CLI and the API can show one clear line."""

from __future__ import annotations


class LedgerError(Exception):
    """Base class: `code` is a stable machine-readable reason, `where` points at the input."""

    code = "ledger_error"

    def __init__(self, message: str, *, where: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        if code:
            self.code = code

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message

    def __reduce__(self):  # keep code and where when crossing a process boundary
        return (_rebuild, (type(self), self.message, self.where, self.code))


def _rebuild(cls: type[LedgerError], message: str, where: str | None, code: str) -> LedgerError:
    err = cls.__new__(cls)
    LedgerError.__init__(err, message, where=where, code=code)
    return err


class CanonicalError(LedgerError):
    code = "not_canonicalizable"


class EventError(LedgerError):
    """The event itself is malformed (schema, types, sizes)."""

    code = "invalid_event"


class SignatureError(LedgerError):
    code = "bad_signature"


class UnknownKeyError(LedgerError):
    code = "unknown_key"


class RevokedKeyError(LedgerError):
    code = "revoked_key"


class SequenceError(LedgerError):
    """Per-producer sequence number or hash chain does not continue the producer's last event."""

    code = "sequence_error"


class ConflictError(LedgerError):
    """A different event already holds this producer/run/sequence position (a fork or replay)."""

    code = "conflict"


class NotFoundError(LedgerError):
    code = "not_found"


class KeyFileError(LedgerError):
    code = "key_file_error"


class ProofError(LedgerError):
    code = "proof_error"


class RunEndedError(LedgerError):
    """The run was closed by its run.end: the log accepts no later event of that run."""

    code = "run_ended"


class ReservedRunError(LedgerError):
    """The run id is reserved for the log's own records (docs/keys.md)."""

    code = "reserved_run"


class NotCoveredYetError(LedgerError):
    """The entry exists but no signed (code `not_checkpointed`) or no confirmed anchored (code
    `not_anchored`) checkpoint covers it yet: asked too early, not malformed."""

    code = "not_checkpointed"


class NoPassphraseError(LedgerError):
    """The ledger's keys are encrypted and the process was given no passphrase: the server's
    configuration, not the request."""

    code = "no_passphrase"
