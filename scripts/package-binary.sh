#!/usr/bin/env bash
# Packs one built hfsky binary as a release asset: NAME.tar.gz (NAME.zip for a Windows .exe)
# holding NAME/hfsky[.exe] and NAME/README.md, and NAME.<ext>.sha256 in `sha256sum -c` format.
#
#   scripts/package-binary.sh target/release/hfsky hfsky-x86_64-unknown-linux-gnu dist/
#   scripts/package-binary.sh target-cuda-sm80/release/hfsky hfsky-x86_64-linux-cuda-sm80 dist/
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 BINARY NAME OUT_DIR" >&2; exit 2; }
BIN="$1"; NAME="$2"; OUT="$3"
[ -f "$BIN" ] || { echo "package-binary: no binary at $BIN (build it first)" >&2; exit 2; }
case "$NAME" in *[!A-Za-z0-9._-]*|"") echo "package-binary: NAME may hold only letters, digits, . _ -" >&2; exit 2 ;; esac
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir "$STAGE/$NAME"
cp "$BIN" "$STAGE/$NAME/"
cp "$ROOT/README.md" "$STAGE/$NAME/"
case "$BIN" in
  *.exe) ASSET="$NAME.zip"; PY="$(command -v python3 || command -v python)"; (cd "$STAGE" && "$PY" -m zipfile -c "$OUT/$ASSET" "$NAME") ;;
  *) ASSET="$NAME.tar.gz"; tar -C "$STAGE" -czf "$OUT/$ASSET" "$NAME" ;;
esac
# sha256sum on Linux/Windows runners, shasum on macOS; the same "<hash>  <file>" line either way.
if command -v sha256sum >/dev/null; then SUM=(sha256sum); else SUM=(shasum -a 256); fi
(cd "$OUT" && "${SUM[@]}" "$ASSET" > "$ASSET.sha256")
echo "$OUT/$ASSET"
