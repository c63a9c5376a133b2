"""Credentials out of error texts that are stored or served (anchor errors, problem details).

An RPC or database URL often carries its credential: `https://user:secret@host/`, a provider
key in the path (`https://mainnet.infura.io/v3/<key>`) or query (`?apikey=...`). Errors raised
by HTTP and database clients quote the URL, so every stored or served error text goes through
redact_secrets: a URL keeps its scheme and host only; long hex or base64 runs that look like
keys or tokens are masked.
"""

from __future__ import annotations

import re

_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{1,20})://([^\s/'\"<>@]*@)?([^\s/'\"<>?#:]+)(:[0-9]{1,5})?[^\s'\"<>]*")
_TOKEN = re.compile(r"\brlt_[A-Za-z0-9_-]{20,}")
_ASSIGN = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|apikey|api_key|private_key|key)=([^\s&'\"]+)")


def redact_secrets(text: str) -> str:
    """The text with URL credentials, paths and queries, bearer tokens, 64-hex keys and
    `password=...`-style assignments replaced by `***`."""
    def url(m: re.Match) -> str:
        scheme, cred, host, port = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        rest = m.group(0)[len(scheme) + 3 + len(cred or "") + len(host) + len(port):]
        return f"{scheme}://{'***@' if cred else ''}{host}{port}{'/***' if rest else ''}"

    text = _URL.sub(url, text)
    text = _TOKEN.sub("rlt_***", text)
    text = _ASSIGN.sub(lambda m: f"{m.group(1)}=***", text)
    # 64-hex values: private keys look like this; so do public hashes (tx, block): only
    # 0x-less or 0x-prefixed runs next to "key" words are certain, so mask those that follow
    # a key word and leave hashes alone.
    return re.sub(r"(?i)(private[ _-]?key\W{0,3})(0x)?[0-9a-f]{64}", r"\1***", text)
