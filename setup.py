"""Only the optional C loop for signature checks lives here; the rest of the package metadata
is in pyproject.toml. `optional=True`: without a C compiler the package still installs and
checks each signature through PyNaCl (ledger.sigverify.engine() says which)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("ledger._sigloop", sources=["ledger/_sigloop.c"], extra_compile_args=["-O2"], optional=True),
    ]
)
