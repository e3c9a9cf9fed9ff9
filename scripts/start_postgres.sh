#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1:5432 for the prediction-log tests (Debian's package).
# Loopback connections are trusted in this test cluster, so no password exists anywhere.
# Prints the URL the tests read from TEST_DATABASE_URL.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  { apt-get update -q && apt-get install -y -q --no-install-recommends postgresql; } >/dev/null
fi
version=$(pg_lsclusters --no-header | awk 'NR==1 {print $1}')
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $2}')
hba=/etc/postgresql/$version/$cluster/pg_hba.conf
if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
  sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
fi
# Everything but the URL goes to stderr: the caller captures stdout.
{ pg_ctlcluster "$version" "$cluster" start || pg_ctlcluster "$version" "$cluster" reload; } >&2
for _ in $(seq 1 30); do
  pg_isready -h 127.0.0.1 -p 5432 -q && break
  sleep 0.5
done
echo "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
