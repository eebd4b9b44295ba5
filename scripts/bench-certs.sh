#!/usr/bin/env bash
# Benchmark: `meshctl certs gen --clusters N` against the same work done the way Istio's
# tools/certs Makefile does it (openssl genrsa / req / x509 per certificate, one after another).
#
# Usage: scripts/bench-certs.sh [N] [RUNS]     (defaults: N=10 clusters, best of RUNS=3)
# Prints one line per contender and the ratios. Targets (issue 2): RSA-4096 >= 1.7x, ECDSA P-256 >= 100x.
set -euo pipefail

n=${1:-10}
runs=${2:-3}
root_dir=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --manifest-path "$root_dir/Cargo.toml"
meshctl="$root_dir/target/release/meshctl"

now() { date +%s.%N; }

# The Makefile's steps (tools/certs/Makefile.selfsigned.mk + common.mk), with its config files.
makefile_way() {
  local d=$1 i
  mkdir -p "$d" && cd "$d"
  cat > root-ca.conf <<'CONF'
[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
default_bits = 4096
req_extensions = req_ext
x509_extensions = req_ext
distinguished_name = req_dn
[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
[ req_dn ]
O = Istio
CN = Root CA
CONF
  openssl genrsa -out root-key.pem 4096 2>/dev/null
  openssl req -sha256 -new -key root-key.pem -config root-ca.conf -out root-cert.csr
  openssl x509 -req -sha256 -days 3650 -signkey root-key.pem -extensions req_ext -extfile root-ca.conf \
    -in root-cert.csr -out root-cert.pem 2>/dev/null
  for i in $(seq 1 "$n"); do
    mkdir -p "cluster$i"
    cat > "cluster$i/intermediate.conf" <<CONF
[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
default_bits = 4096
req_extensions = req_ext
x509_extensions = req_ext
distinguished_name = req_dn
[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
subjectAltName=@san
[ san ]
DNS.1 = istiod.istio-system.svc
[ req_dn ]
O = Istio
CN = Intermediate CA
L = cluster$i
CONF
    openssl genrsa -out "cluster$i/ca-key.pem" 4096 2>/dev/null
    openssl req -sha256 -new -config "cluster$i/intermediate.conf" -key "cluster$i/ca-key.pem" \
      -out "cluster$i/cluster-ca.csr"
    openssl x509 -req -sha256 -days 3650 -CA root-cert.pem -CAkey root-key.pem -CAcreateserial \
      -extensions req_ext -extfile "cluster$i/intermediate.conf" \
      -in "cluster$i/cluster-ca.csr" -out "cluster$i/ca-cert.pem" 2>/dev/null
    cat "cluster$i/ca-cert.pem" root-cert.pem > "cluster$i/cert-chain.pem"
    cp root-cert.pem "cluster$i/root-cert.pem"
  done
}

# best_of CMD...: the shortest wall time of $runs runs, in seconds.
best_of() {
  local best="" t0 t1 t _
  for _ in $(seq 1 "$runs"); do
    rm -rf "$work/out"
    t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
    t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    if [ -z "$best" ] || awk -v t="$t" -v b="$best" 'BEGIN { exit !(t < b) }'; then best=$t; fi
  done
  printf '%.3f' "$best"
}

base=$(best_of bash -c "$(declare -f makefile_way); n=$n; makefile_way '$work/out'")
rsa=$(best_of "$meshctl" certs gen --clusters "$n" --out "$work/out")
ec=$(best_of "$meshctl" certs gen --clusters "$n" --out "$work/out" --key-type ecdsa-p256)

echo "clusters: $n, best of $runs runs, $(nproc) cores"
echo "openssl, Makefile way (RSA-4096): ${base}s"
echo "meshctl certs gen (RSA-4096):     ${rsa}s  ratio $(awk -v a="$base" -v b="$rsa" 'BEGIN { printf "%.2f", a / b }')x (target >= 1.7x)"
echo "meshctl certs gen (ECDSA P-256):  ${ec}s  ratio $(awk -v a="$base" -v b="$ec" 'BEGIN { printf "%.1f", a / b }')x (target >= 100x)"
