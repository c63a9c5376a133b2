"""The service's routes, one APIRouter per area; api/app.py includes them in this order:
access, logs, submission, proofs, checkpoints, anchors, bundles, payloads, tokens, runs, ops
(the order of the published OpenAPI paths)."""
