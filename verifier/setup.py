"""Only the optional C core of batch signature verification lives here; the rest of the
package metadata is in pyproject.toml. `optional=True`: without a C compiler the package
still installs and verifies every signature with libsodium (rlhf_verifier.ed25519.engine())."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rlhf_verifier._ed25519_batch",
            sources=["rlhf_verifier/_ed25519_batch.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
