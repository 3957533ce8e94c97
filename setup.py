"""Only the optional C speedups live here; everything else is in pyproject.toml.

`optional=True`: where an extension cannot be built (no compiler, no OpenSSL
headers) the install still succeeds and its Python module falls back to the
pure-Python loops, which give the same bytes and answers, slower:
theater_otp.chain.native for `_native`, theater_otp.worker.fastabi for
`_valconv`.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("theater_otp.chain._native", ["theater_otp/chain/_native.c"],
                             libraries=["crypto"], extra_compile_args=["-O2"], optional=True),
                   Extension("theater_otp.worker._valconv", ["theater_otp/worker/_valconv.c"],
                             extra_compile_args=["-O2"], optional=True)])
