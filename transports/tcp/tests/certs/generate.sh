#!/bin/sh
# Regenerates the test PKI: a cluster CA, certificates for servers a, b and
# mallory (SAN DNS name = server id, serverAuth + clientAuth), and a rogue CA
# with its own certificate for a. EC P-256 keys in PKCS#8, valid 100 years.
set -eu
cd "$(dirname "$0")"
ca() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"
    openssl req -x509 -new -key "$1.key" -sha256 -days 36500 -subj "/CN=$1" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.pem"
}
leaf() { # leaf <ca> <id> <file>
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$3.key"
    openssl req -new -key "$3.key" -subj "/CN=$2" -out "$3.csr"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:%s\n' "$2" > "$3.ext"
    openssl x509 -req -in "$3.csr" -CA "$1.pem" -CAkey "$1.key" -CAcreateserial -sha256 -days 36500 \
        -extfile "$3.ext" -out "$3.pem"
    rm -f "$3.csr" "$3.ext"
}
ca ca
leaf ca a a
leaf ca b b
leaf ca mallory mallory
ca rogue-ca
leaf rogue-ca a rogue-a
rm -f ./*.srl
