#!/usr/bin/env bash
# One command for a newcomer: set up, start a local registry with a sample project, mount it.
#   scripts/demo.sh         set up, serve on 127.0.0.1:8765, publish samples, mount at ./demo/mnt
#   scripts/demo.sh stop    unmount and stop the server
# Everything the demo writes is under ./demo (registry, cache, drafts, logs), besides .venv
# (scripts/setup.sh) and the mount's small record under $XDG_RUNTIME_DIR or /tmp/artfs-UID
# (removed on unmount), which is how `artfs commit` and `artfs info` find the mount.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
demo=$top/demo
artfs=$top/.venv/bin/artfs
export ARTFS_REGISTRY=http://127.0.0.1:8765
export ARTFS_CACHE_DIR=$demo/cache

stop() {
    [ -x "$artfs" ] && mountpoint -q "$demo/mnt" 2>/dev/null && "$artfs" umount "$demo/mnt" || true
    if [ -f "$demo/server.pid" ]; then
        kill "$(cat "$demo/server.pid")" 2>/dev/null || true
        rm -f "$demo/server.pid"
    fi
}
if [ "${1:-}" = stop ]; then stop; echo "demo stopped"; exit 0; fi

./scripts/setup.sh
stop
mkdir -p "$demo/mnt"
"$artfs" serve --data "$demo/registry" --port 8765 >"$demo/server.log" 2>&1 &
echo $! >"$demo/server.pid"
for _ in $(seq 100); do
    curl -sf "$ARTFS_REGISTRY/v1" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "$ARTFS_REGISTRY/v1" >/dev/null || { echo "server did not start; see $demo/server.log" >&2; exit 1; }

if ! "$artfs" ls demo/mnist-mini >/dev/null 2>&1; then
    .venv/bin/python scripts/make_sample.py "$demo/sample"
    "$artfs" put "$demo/sample/dataset-v0" demo/mnist-mini --description "first cut"
    "$artfs" put "$demo/sample/dataset-v1" demo/mnist-mini --alias best --metadata '{"rows": 1200}'
    "$artfs" put "$demo/sample/model" demo/resnet-tiny --type model --alias production \
        --input demo/mnist-mini:best   # lineage: the model was trained on that dataset
fi
"$artfs" mount "$demo/mnt" --xattrs --state-dir "$demo/state" --log "$demo/mount.log"

cat <<EOT

artfs is running: registry $ARTFS_REGISTRY (data in demo/registry), mounted at demo/mnt
(cache demo/cache, drafts demo/state, mount log demo/mount.log, server log demo/server.log).
Try:
  ls -l demo/mnt/demo/mnist-mini/                 # v0 v1 and alias links: latest -> v1, best -> v1
  cat demo/mnt/demo/mnist-mini/latest/README.md
  cp -r demo/mnt/demo/mnist-mini/v0 demo/mnist-v0   # bytes fetched lazily into demo/cache
  getfattr -d demo/mnt/demo/mnist-mini/latest       # registry facts as xattrs
  .venv/bin/artfs ls demo/mnist-mini
  .venv/bin/artfs alias set demo/mnist-mini:v0 best # now: ls -l demo/mnt/demo/mnist-mini shows best -> v0
  .venv/bin/artfs cache stats --cache-dir demo/cache  # what the cp above fetched
  .venv/bin/artfs info demo/mnt                   # the mount: "mode": "passthrough" (cached files read by the kernel)
  .venv/bin/artfs info demo/resnet-tiny           # lineage: inputs [demo/mnist-mini:v1]
  .venv/bin/artfs info demo/mnist-mini:v1         # ... and used_by [demo/resnet-tiny:v0]
Publish a version from the shell:
  mkdir demo/mnt/demo/mnist-mini/try1 && cp demo/sample/dataset-v0/*.csv demo/mnt/demo/mnist-mini/try1/
  .venv/bin/artfs commit demo/mnt/demo/mnist-mini/try1 --alias candidate   # prints demo/mnist-mini:vN
  ln -sfn v1 demo/mnt/demo/mnist-mini/best                                 # move best back to v1 from the shell
Stop with: scripts/demo.sh stop
EOT
