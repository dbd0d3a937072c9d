#!/usr/bin/env bash
# Fuzz the channel-program translator (and the sim running what it builds)
# for SECONDS seconds: scripts/fuzz.sh SECONDS
#
# Starts from the seed corpus fuzz/corpus/translate (regenerate it with
# fuzz/make_corpus.py); what the fuzzer finds goes to fuzz/corpus-work, so
# the committed seeds stay as they are. A crash leaves its input in
# fuzz/artifacts/translate and fails the script.
#
# cargo-fuzz is installed from crates.io when missing. It needs a nightly
# compiler (sanitizer flags): the rustup "nightly" toolchain when there is
# one, else the stable one with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:?usage: scripts/fuzz.sh SECONDS}"

if ! cargo fuzz --help >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
fi

mkdir -p fuzz/corpus-work
# -timeout: an input running longer than 10 s is a hang, reported as a crash.
cargo "${toolchain[@]}" fuzz run translate fuzz/corpus-work fuzz/corpus/translate -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
