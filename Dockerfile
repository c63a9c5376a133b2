# The ledger service (and, with another command, the anchoring worker): see docs/api.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RLHF_LEDGER_HOME=/data

WORKDIR /app
COPY pyproject.toml setup.py requirements.lock ./
COPY ledger ./ledger
COPY anchoring ./anchoring
COPY api ./api
# The [server] extra (the service, the anchoring worker and the storage layer; pyproject.toml);
# -c pins every package to the lock. Training extras such as torch are not in the service image.
RUN pip install --no-cache-dir -c requirements.lock '.[server]' \
    && useradd --system --uid 10001 --home-dir /data ledger \
    && mkdir -p /data && chown ledger /data && chmod 0700 /data

USER ledger
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"]
CMD ["rlhf-ledger", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "1"]
