#!/usr/bin/env bash
# `make demo`: Keybroker end to end on one machine. A development broker (SoftHSM2 token,
# swtpm, development CA) in a fresh temporary directory; an admin makes keys, a workload
# signs, encrypts and decrypts, the admin rotates, and the policy refuses the workload
# what it was not granted. Everything is removed on exit.
#
# Environment: CARGO_TARGET_DIR (where cargo builds), DEMO_PORT (default: a free port).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/keybroker-demo.XXXXXX")
broker_pid=""

stop_broker() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  broker_pid=""
}
cleanup() {
  stop_broker
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
# Shows a command, then runs it.
run() {
  printf '$ %s\n' "$*"
  "$@"
}
# Shows a command that must be refused with exit code $1, runs it, and checks.
expect_exit() {
  local want=$1
  shift
  printf '$ %s\n' "$*"
  local code=0
  "$@" || code=$?
  if [ "$code" -ne "$want" ]; then
    echo "demo: expected exit code $want, got $code" >&2
    exit 1
  fi
  local meaning="refused"
  [ "$code" -eq 5 ] && meaning="PERMISSION_DENIED"
  echo "-> exit code $code ($meaning), as expected"
}

# A port nothing listens on, so the demo runs beside `make run`.
free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "demo: no free port found" >&2
  exit 1
}

step "Build keybroker"
run cargo build --locked -q --manifest-path "$repo/Cargo.toml" -p broker --bin keybroker
run cargo build --locked -q --manifest-path "$repo/Cargo.toml" -p enclave --bin keybroker-agent
export PATH="$target/debug:$PATH"
cd "$work"
port=${DEMO_PORT:-$(free_port)}

step "Start a development broker in $work (log: broker.log)"
printf '$ %s\n' "keybroker serve --dev --state-dir broker --listen 127.0.0.1:$port &"
keybroker serve --dev --state-dir broker --listen "127.0.0.1:$port" >broker.log 2>&1 &
broker_pid=$!
# "ready" follows "listening on" once the attestation token keys are found.
for _ in $(seq 600); do
  grep -q '^keybroker: ready' broker.log && break
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "demo: the broker exited; its log:" >&2
    cat broker.log >&2
    exit 1
  fi
  sleep 0.1
done
if ! grep '^keybroker: ready' broker.log; then
  echo "demo: the broker was not ready within 60 s; its log:" >&2
  cat broker.log >&2
  exit 1
fi
admin=(keybroker keys --client-config broker/admin.toml)
workload=(keybroker keys --client-config broker/workload.toml)

step "Admin: create an EC P-256 signing key for team demo"
run "${admin[@]}" create demo-signing --algorithm ec-p256 --purpose sign --tag team=demo

step "Admin: create an AES-256 encryption key for team demo"
run "${admin[@]}" create demo-encryption --algorithm aes-256 --purpose encrypt --tag team=demo

step "Workload: sign a file (hashed locally, the digest signed in the HSM)"
printf 'Keybroker demo release, built %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >release.txt
run "${workload[@]}" sign demo-signing --in release.txt --out release.sig

step "Workload: fetch the public key, and let OpenSSL check the signature"
run "${workload[@]}" public-key demo-signing --out demo-signing.pem
run openssl dgst -sha256 -verify demo-signing.pem -signature release.sig release.txt

step "Workload: encrypt a file, decrypt it, compare"
printf 'database password: correct horse battery staple\n' >secret.txt
run "${workload[@]}" encrypt demo-encryption --in secret.txt --out secret.v1.kbc
run "${workload[@]}" decrypt --in secret.v1.kbc --out secret.v1.txt
run cmp secret.txt secret.v1.txt
echo "-> identical"

step "Admin: rotate the encryption key (version 2 becomes primary)"
run "${admin[@]}" rotate demo-encryption

step "Workload: the version-1 ciphertext still decrypts; new ciphertexts use version 2"
run "${workload[@]}" decrypt --in secret.v1.kbc --out secret.v1-again.txt
run cmp secret.txt secret.v1-again.txt
echo "-> identical"
run "${workload[@]}" encrypt demo-encryption --in secret.txt --out secret.v2.kbc
run "${workload[@]}" decrypt --in secret.v2.kbc --out secret.v2.txt
run cmp secret.txt secret.v2.txt
echo "-> identical"

step "Workload: creating a key is not granted, so the policy refuses it"
expect_exit 5 "${workload[@]}" create workload-key --algorithm ec-p256 --purpose sign --tag team=demo

step "Workload: another team's key is refused too"
run "${admin[@]}" create payments-signing --algorithm ec-p256 --purpose sign --tag team=payments
expect_exit 5 "${workload[@]}" sign payments-signing --in release.txt --out payments.sig

step "Workload: attest (development evidence) and get a certificate for a key made here"
agent=(keybroker-agent --endpoint "https://localhost:$port" --server-ca broker/pki/ca.pem
  --cert broker/pki/workload.pem --key broker/pki/workload-key.pem
  --evidence dev --dev-measurement "$(printf 'ab%.0s' $(seq 48))")
run "${agent[@]}" get-cert --out identity
run ls identity
run openssl verify -CAfile identity/bundle.pem identity/svid.pem
run openssl x509 -in identity/svid.pem -noout -ext subjectAltName,extendedKeyUsage -enddate

step "Workload: a JWT for one audience (attested again; sub is its SPIFFE ID)"
run "${agent[@]}" get-token --audience https://db.example --out db.jwt
cut -d. -f2 db.jwt | tr '_-' '/+' | base64 -d 2>/dev/null | head -c 400; echo

step "Admin: put a secret (the value from a 0600 file, never an argument)"
secrets=(keybroker secrets --client-config broker/admin.toml)
(umask 077 && printf 'correct horse battery staple' >db-password)
run "${secrets[@]}" put demo/db-password --value-file db-password --description "demo database"
run "${secrets[@]}" list

step "Workload: attest with a KEM key, get the secret sealed to it, open it here"
run "${agent[@]}" get-secret demo/db-password --out db-password.released
run cmp db-password db-password.released
run stat -c '%a %n' db-password.released

step "Workload: a dynamic secret, leased (32 random bytes from the HSM), renewed, revoked"
run "${agent[@]}" generate-secret demo/session-key --ttl 300 --out session.key >lease.json
run stat -c '%a %s %n' session.key
lease_id=$(sed -n 's/.*"lease_id": "\([^"]*\)".*/\1/p' lease.json)
run "${agent[@]}" renew-lease "$lease_id" --increment 600
run "${agent[@]}" revoke-lease "$lease_id"
expect_exit 1 "${agent[@]}" renew-lease "$lease_id"

step "Admin: a releasable AES-256 key; Workload: receive it, wrapped in the HSM to its attested key"
run "${admin[@]}" create demo-disk --algorithm aes-256 --purpose encrypt --releasable --tag team=demo
run "${agent[@]}" release-key demo-disk --out disk.key
run stat -c '%a %s %n' disk.key
step "Workload: a key that is not releasable never leaves"
expect_exit 1 "${agent[@]}" release-key demo-encryption --out no.key

step "Admin: key-encryption keys for sealing, in the HSM and on the TPM (a PCR policy)"
run "${admin[@]}" create demo-vault --algorithm aes-256 --purpose wrap --backend softhsm --tag team=demo
run "${admin[@]}" create demo-boot --algorithm aes-256 --purpose wrap --backend swtpm --tag team=demo

step "Workload: seal a file locally under a data key, and through the broker; open both"
seal=(keybroker seal --client-config broker/workload.toml)
unseal=(keybroker unseal --client-config broker/workload.toml)
head -c 3000000 /dev/urandom >backup.tar
run "${seal[@]}" --key demo-vault --in backup.tar --out backup.tar.sealed --context app=demo
run "${unseal[@]}" --in backup.tar.sealed --out backup.opened --context app=demo
run cmp backup.tar backup.opened
run "${seal[@]}" --key demo-boot --remote --in backup.tar --out boot.sealed --context app=demo
run "${unseal[@]}" --remote --in boot.sealed --out boot.opened --context app=demo
run cmp backup.tar boot.opened
echo "-> identical"

step "Workload: another encryption context is refused, and leaves no output"
expect_exit 1 "${unseal[@]}" --in backup.tar.sealed --out wrong.opened --context app=other
run test ! -e wrong.opened

step "Admin: rotate the vault key; Workload: rewrap the directory (headers only), open again"
run "${admin[@]}" rotate demo-vault
mkdir sealed && mv backup.tar.sealed sealed/
run keybroker rewrap --client-config broker/workload.toml sealed
run "${unseal[@]}" --in sealed/backup.tar.sealed --out backup.again --context app=demo
run cmp backup.tar backup.again
echo "-> identical"

step "Security team: check every row of the broker's store against its MAC, offline"
run env SOFTHSM2_CONF=broker/softhsm2.conf keybroker store verify --config broker/config.toml

step "Stop the broker"
printf '$ %s\n' "kill -TERM $broker_pid"
stop_broker
echo "Done: every step behaved as expected. $work is removed on exit."
