"""Only the optional C speedups live here; everything else is in pyproject.toml.

`optional=True`: where the extension cannot be built (no compiler, no OpenSSL
headers) the install still succeeds and theater_otp.chain.native falls back to
the pure-Python loops, which give the same bytes and answers, slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("theater_otp.chain._native", ["theater_otp/chain/_native.c"],
                             libraries=["crypto"], extra_compile_args=["-O2"], optional=True)])
