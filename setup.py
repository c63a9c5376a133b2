"""Only the optional C loop for signature checks lives here; the rest of the package metadata
is in pyproject.toml. `optional=True`: without a C compiler the package still installs and
checks each signature through PyNaCl (rlhf_ledger.core.sigverify.engine() says which)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("rlhf_ledger.core._sigloop", sources=["ledger/core/_sigloop.c"], extra_compile_args=["-O2"], optional=True),
    ]
)
