"""The ledger HTTP service (FastAPI): submission, proofs, anchor status, bundles, auth.

See docs/api.md. Entry points: `api.app.create_app` (an ASGI app factory) and the click group
`api.cli.api_group` (`serve`, `token create|list|revoke`).
"""
