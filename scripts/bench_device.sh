#!/usr/bin/env bash
# The artfs benchmark on a lent GPU host (../shared/notes/device.md): no network, no Python
# 3.11, no pyfuse3, no fusermount3 there, so everything comes in .device-bundle/, built here:
#
#     scripts/device_bundle.sh                                   # here, once
#     device tool: run  command="bash scripts/bench_device.sh"  carry=[".device-bundle"]
#                       timeout_s=560
#
# Builds nothing there. Runs, each under `timeout` within a budget for the whole script:
#   1. scripts/bench.py --size-mib $SIZE_MIB (passthrough as the mount decides)
#   2. scripts/bench_device_gpu.py with the machine's own python3: a safetensors checkpoint
#      of $SIZE_MIB loaded onto cuda:0 from the mount (cold, warm, hot; passthrough on and
#      off) vs from local disk; one "skipped" row where there is no torch or GPU
#   3. scripts/bench.py --no-passthrough, if the budget still holds a run as long as 1.
# then prints one table (rows of 3 marked "[passthrough off]"), and leaves it with the logs
# in $OUT when the device tool sets it.
# Knobs (environment): SIZE_MIB (2048), FILES (2000), BUDGET_S (480, the whole script),
# WORKDIR (/var/tmp: where data goes), GPU_MODES (on,off), SKIP_OFF=1 (no step 3),
# GPU_PYTHON (python3), GPU_DEVICE (cuda:0).
# Runs here too, for a check: SIZE_MIB=256 bash scripts/bench_device.sh (GPU_DEVICE=cpu with
# GPU_PYTHON pointing at a Python with CPU torch exercises step 2 without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
B=$REPO/.device-bundle
SIZE_MIB=${SIZE_MIB:-2048}
FILES=${FILES:-2000}
BUDGET=${BUDGET_S:-480}
WORKDIR=${WORKDIR:-/var/tmp}
GPU_MODES=${GPU_MODES:-on,off}
GPU_PYTHON=${GPU_PYTHON:-python3}
GPU_DEVICE=${GPU_DEVICE:-cuda:0}
RESULTS=${OUT:-$(mktemp -d /tmp/artfs-bench-device.XXXXXX)}
export PYTHONUNBUFFERED=1
T0=$SECONDS
left() { echo $((BUDGET - (SECONDS - T0))); }
say() { echo "bench_device: $*" >&2; }

if [ ! -f "$B/bin/python3.11" ]; then
    say "no $B: run scripts/device_bundle.sh here and carry .device-bundle"
    exit 2
fi
chmod +x "$B"/bin/* 2>/dev/null || true
mkdir -p "$WORKDIR" "$RESULTS"

# The bundled system libraries (libssl, libsqlite3, ...) only where the machine lacks them:
# the machine's own are newer and programs the bench starts (curl, dd) must keep using them.
LIBS=$(mktemp -d /tmp/artfs-bundle-libs.XXXXXX)
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
have=$("$LDCONFIG" -p 2>/dev/null | awk 'NR > 1 {print $1}')
for lib in "$B"/syslib/*; do
    name=$(basename "$lib")
    grep -qxF "$name" <<<"$have" || ln -s "$lib" "$LIBS/$name"
done
export ARTFS_BUNDLE_LIBS=$LIBS
ARTFS_PY=$B/bin/artfs-python

cleanup() {
    # mounts a killed run left behind (their daemons run in their own sessions)
    awk '$3 ~ /^fuse/ {print $2}' /proc/mounts | grep -E "^$WORKDIR/artfs-(bench|gpu)-" |
        while read -r m; do "$B/bin/fusermount3" -u -z "$m" 2>/dev/null; done
    rm -rf "$LIBS"
}
trap cleanup EXIT

{
    echo "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r)," \
        "$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo 'no nvidia-smi')"
    echo "workdir: $WORKDIR ($(df -PT "$WORKDIR" | awk 'NR == 2 {print $2}'))," \
        "/dev/fuse: $([ -c /dev/fuse ] && echo yes || echo MISSING)," \
        "curl: $(command -v curl >/dev/null && echo yes || echo 'no (httpx baseline)')"
    echo "bundle: $(head -1 "$B/MANIFEST"); machine's libraries lacking: $(ls "$LIBS" | tr '\n' ' ')"
    echo "artfs: $("$ARTFS_PY" -c 'import artfs, pyfuse3; print(artfs.__file__, "/ pyfuse3", pyfuse3.__version__)' 2>&1)"
    echo "$GPU_PYTHON (torch): $("$GPU_PYTHON" -c 'import torch, safetensors; print(torch.__version__, "cuda", torch.cuda.is_available(), "/ safetensors", safetensors.__version__)' 2>&1 | tail -1)"
} | tee "$RESULTS/host.txt" >&2

run_bench() { # NAME LIMIT [ARGS...]: scripts/bench.py with the bundle's Python
    local name=$1 limit=$2
    shift 2
    say "$name: scripts/bench.py --size-mib $SIZE_MIB --files $FILES $* (limit ${limit}s)"
    timeout -k 20 "$limit" "$ARTFS_PY" scripts/bench.py --size-mib "$SIZE_MIB" \
        --files "$FILES" --workdir "$WORKDIR" "$@" >"$RESULTS/$name.md" \
        2> >(tee "$RESULTS/$name.log" >&2)
    local rc=$?
    [ $rc = 0 ] || say "$name: exit status $rc (124: over its limit)"
    return $rc
}

# 1. the bench, passthrough as the mount decides (leave the GPU step 120 s)
t=$SECONDS
run_bench bench-on $(($(left) - 120))
took_on=$((SECONDS - t))

# 2. the checkpoint onto the GPU, with the machine's python3 (not the bundle's)
if command -v "$GPU_PYTHON" >/dev/null; then
    limit=$(($(left) - 10))
    [ "$limit" -gt 330 ] && limit=330
    say "gpu: scripts/bench_device_gpu.py --size-mib $SIZE_MIB --modes $GPU_MODES (limit ${limit}s)"
    timeout -k 20 "$limit" "$GPU_PYTHON" scripts/bench_device_gpu.py \
        --artfs "$B/bin/artfs" --size-mib "$SIZE_MIB" --modes "$GPU_MODES" --device "$GPU_DEVICE" \
        --workdir "$WORKDIR" --rows-only >"$RESULTS/gpu.md" 2> >(tee "$RESULTS/gpu.log" >&2) ||
        say "gpu: exit status $?"
fi
grep -q '^| ' "$RESULTS/gpu.md" 2>/dev/null ||
    echo "| safetensors $SIZE_MIB MiB -> $GPU_DEVICE | no result (no $GPU_PYTHON? see gpu.log) | - | - | - |" >"$RESULTS/gpu.md"

# 3. the bench again with passthrough off, if a run as long as the first still fits
if [ "${SKIP_OFF:-0}" != 1 ] && [ "$(left)" -gt $((took_on + 20)) ]; then
    run_bench bench-off $(($(left) - 5)) --no-passthrough
else
    say "no --no-passthrough run (SKIP_OFF=${SKIP_OFF:-0}, ${took_on}s needed, $(left)s left)"
fi

# one table
{
    echo
    grep -m1 '^artfs bench' "$RESULTS/bench-on.md" || echo "artfs bench: no result (see bench-on.log)"
    cat "$RESULTS/host.txt"
    grep -h '^passthrough asked' "$RESULTS/bench-on.md" "$RESULTS/bench-off.md" 2>/dev/null
    echo
    echo "| workload | artfs | baseline | ratio (higher is better) | target |"
    echo "|---|---|---|---|---|"
    rows() { grep -h '^| ' "$@" 2>/dev/null | grep -v '^| workload |'; }
    rows "$RESULTS/bench-on.md"
    rows "$RESULTS/gpu.md"
    rows "$RESULTS/bench-off.md" | sed 's/^| \([^|]*[^ |]\) |/| \1 [passthrough off] |/'
} | tee "$RESULTS/bench_device.md"
say "done in $((SECONDS - T0)) s; table and logs in $RESULTS"
