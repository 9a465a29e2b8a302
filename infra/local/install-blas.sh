#!/usr/bin/env bash
# Make sure a native BLAS/LAPACK exists for Spark MLlib (ALS). Without libblas.so.3 / liblapack.so.3,
# dev.ludovic.netlib logs `dlopen(libblas.so.3) failed` and MLlib runs its pure-Java kernels.
# The serial OpenBLAS build: Spark already runs one task per core, and a threaded BLAS inside each
# task would oversubscribe the cores (Spark's MLlib guide recommends single-threaded BLAS).
set -euo pipefail
has_lib() { /sbin/ldconfig -p 2>/dev/null | grep "$1" >/dev/null; }  # not grep -q: an early exit SIGPIPEs ldconfig, and pipefail reads that as missing
if has_lib 'libblas\.so\.3 ' && has_lib 'liblapack\.so\.3 '; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "Installing OpenBLAS (libblas.so.3, liblapack.so.3) from Debian's packages..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-serial libblas3 liblapack3 >/dev/null
  has_lib 'libblas\.so\.3 ' && has_lib 'liblapack\.so\.3 ' && exit 0
fi
cat >&2 <<'MSG'
No native BLAS/LAPACK (libblas.so.3, liblapack.so.3) and it could not be installed automatically
(needs apt-get as root). Install OpenBLAS yourself (e.g. `sudo apt-get install libopenblas0-serial
libblas3 liblapack3`); until then Spark MLlib runs its slower pure-Java kernels.
MSG
exit 1
