#!/usr/bin/env bash
# Portability by execution (issue 30): the embedded server's pgvector self-check (HNSW inserts and
# searches, `genloom db status --json`) with the server itself running under qemu-user emulating an
# AVX2-only CPU (Haswell: AVX2, no AVX-512). A server built to assume AVX-512 dies there with SIGILL.
#
#   bash .ci/avx2_vector_check.sh        # needs qemu-x86_64 (Debian: apt-get install qemu-user) and gcc
#
# The cluster is created natively (`genloom db status --start`, then stopped); the postmaster is then
# started by the wheel's pg_ctl with `-p` naming a wrapper that execs the wheel's postgres under
# `qemu-x86_64 -cpu Haswell`, with the options genloom uses; backends are forks, so they run emulated too.
set -euo pipefail
cd "$(dirname "$0")/.."
QEMU_CPU="${QEMU_CPU:-Haswell}"

fail() { echo "avx2_vector_check: FAILED: $*" >&2; exit 1; }
command -v qemu-x86_64 >/dev/null || fail "qemu-x86_64 is missing (Debian: apt-get install -y qemu-user)"
command -v gcc >/dev/null || fail "gcc is missing (it builds the probe that proves the emulated CPU lacks AVX-512)"

work="$(mktemp -d)"
chmod 711 "$work"  # root mode: the server's user must traverse it
cleanup() {
  GENLOOM_HOME="$work/home" genloom db stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. The emulation is real: an AVX-512 instruction dies with SIGILL under this CPU model, and an
#    AVX2 one runs (so a pass below means "runs without AVX-512", not "qemu ignores -cpu").
cat > "$work/probe.c" <<'C'
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
__attribute__((target("avx2"))) static int avx2(void) {
  volatile int in[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  __m256i v = _mm256_loadu_si256((const __m256i *)in);
  v = _mm256_add_epi32(v, v);
  int out[8]; _mm256_storeu_si256((__m256i *)out, v); return out[7];
}
__attribute__((target("avx512f"))) static int avx512(void) {
  volatile int in[16] = {1};
  __m512i v = _mm512_loadu_si512((const void *)in);
  v = _mm512_add_epi32(v, v);
  int out[16]; _mm512_storeu_si512((void *)out, v); return out[0];
}
int main(int argc, char **argv) { printf("%d\n", argc > 1 && !strcmp(argv[1], "avx512") ? avx512() : avx2()); return 0; }
C
gcc -O1 -o "$work/probe" "$work/probe.c"
[ "$(qemu-x86_64 -cpu "$QEMU_CPU" "$work/probe" avx2)" = "16" ] || fail "AVX2 code does not run under qemu -cpu $QEMU_CPU"
if qemu-x86_64 -cpu "$QEMU_CPU" "$work/probe" avx512 >/dev/null 2>&1; then
  fail "AVX-512 code ran under qemu -cpu $QEMU_CPU: the emulated CPU is not AVX2-only"
fi

# 2. A cluster made natively, then stopped.
export GENLOOM_HOME="$work/home"
genloom db status --start --json >/dev/null
genloom db stop >/dev/null
pgdata="$GENLOOM_HOME/pg"
bin="$(python -c 'from genloom.db.embedded import bin_dir; print(bin_dir())')"

# 3. The same server under emulation.
cat > "$work/postgres" <<SH
#!/bin/sh
exec qemu-x86_64 -cpu $QEMU_CPU "$bin/postgres" "\$@"
SH
chmod 755 "$work/postgres"
as_server=()
if [ "$(id -u)" = 0 ]; then as_server=(runuser -u embedded_postgres --); fi
"${as_server[@]}" "$bin/pg_ctl" -D "$pgdata" -w -t 600 -l "$pgdata/log" -p "$work/postgres" \
  -o "-c listen_addresses='' -c unix_socket_directories='$pgdata' -c unix_socket_permissions=0700 -c log_timezone=UTC" \
  start >/dev/null || { tail -20 "$pgdata/log" >&2; fail "the emulated server did not start"; }
postmaster="$(head -1 "$pgdata/postmaster.pid")"
exe="$(readlink "/proc/$postmaster/exe")"
[[ "$exe" == *qemu-x86_64* ]] || fail "the postmaster ($exe) is not running under qemu"

# 4. genloom's own self-check against it (HNSW index, inserts, an index search, distances), in a
#    fresh backend. Why fresh: qemu-user 7.2 builds x86-64 signal frames that break the stack's
#    alignment, so a backend that gets SIGALRM (PostgreSQL's timeouts, e.g. the idle stats flush a
#    backend arms after earlier work) while inside vector code dies in its own handler (`movaps` to
#    the stack in schedule_alarm, seen in a core dump) -- an emulator fault, not the CPU's. A
#    backend that only runs the check is never interrupted. (Step 2 already migrated the database.)
result="$(python - <<'PY'
import sqlalchemy as sa
from genloom.db.engine import libpq_url, sqlalchemy_url
from genloom.db.status import vector_check
engine = sa.create_engine(sqlalchemy_url(libpq_url()), poolclass=sa.pool.NullPool)
with engine.connect() as conn:
    print(conn.execute(sa.text("SELECT 'PostgreSQL ' || current_setting('server_version') || ', pgvector ' || extversion FROM pg_extension WHERE extname = 'vector'")).scalar())
print("vector_check:", vector_check(engine))
PY
)" || { tail -20 "$pgdata/log" >&2; fail "the self-check could not run"; }
echo "$result"
[[ "$result" == *"vector_check: ok"* ]] || { tail -20 "$pgdata/log" >&2; fail "the pgvector self-check failed under qemu -cpu $QEMU_CPU"; }
echo "avx2_vector_check: ok (server under qemu-x86_64 -cpu $QEMU_CPU, pid $postmaster)"
