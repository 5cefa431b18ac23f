#!/bin/sh
# SPDX-License-Identifier: MIT
# Makes the certificates of the in-cluster etcd (deploy/k8s/base/etcd.yaml) with openssl and
# prints the three Secrets that hold them (docs/deploy.md "etcd"):
#   etcd-tls                 the members: ca.crt, server.crt/.key (client port, also their
#                            etcdctl's client certificate), peer-ca.crt, peer.crt/.key
#   dhaf-etcd-client         the dhaf nodes: ca.crt, tls.crt, tls.key (CN dhaf-node)
#   etcd-maintenance-client  the backup and defrag jobs: ca.crt, tls.crt, tls.key
# Two CAs: one for the client port (server certificate and client certificates), one for the
# peers, so no client certificate can act as a member. The CAs are kept in DIR and reused on
# the next run (new leaf certificates, same trust); keep DIR private, or delete it once the
# Secrets exist (then a later run makes new CAs, and every Secret must be replaced).
#
#   deploy/k8s/etcd-certs.sh -n dhaf | kubectl apply -f -
#
# usage: etcd-certs.sh [-n NAMESPACE] [-d DIR] [-m MEMBERS] [-s SERVICE] [-c CLUSTER_DOMAIN]
#                      [-D DAYS]
# defaults: namespace dhaf, DIR ./etcd-pki, 3 members, Service etcd, cluster.local, 825 days.
set -eu

ns=dhaf dir=./etcd-pki members=3 svc=etcd domain=cluster.local days=825
while getopts n:d:m:s:c:D:h opt; do
    case $opt in
    n) ns=$OPTARG ;;
    d) dir=$OPTARG ;;
    m) members=$OPTARG ;;
    s) svc=$OPTARG ;;
    c) domain=$OPTARG ;;
    D) days=$OPTARG ;;
    *)
        sed -n '/^# usage/,/^# defaults/p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
    esac
done
case $members in '' | *[!0-9]*) echo "etcd-certs.sh: -m $members is not a number" >&2; exit 2 ;; esac
case $days in '' | *[!0-9]*) echo "etcd-certs.sh: -D $days is not a number" >&2; exit 2 ;; esac
command -v openssl >/dev/null || { echo "etcd-certs.sh: openssl is not installed" >&2; exit 1; }

umask 077
mkdir -p "$dir"
cd "$dir"

key() { [ -s "$1" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # ca NAME CN: a CA, kept when it exists
    key "$1.key"
    [ -s "$1.crt" ] || openssl req -x509 -new -key "$1.key" -out "$1.crt" -days $((days * 2)) \
        -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

leaf() { # leaf NAME CA CN EKU [SAN]: a new key and certificate every run
    rm -f "$1.key"
    key "$1.key"
    ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$4"
    [ -z "${5:-}" ] || ext="$ext
subjectAltName=$5"
    printf '%s\n' "$ext" > "$1.ext"
    openssl req -new -key "$1.key" -subj "/CN=$3" 2>/dev/null |
        openssl x509 -req -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days "$days" \
            -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.ext"
}

# Every name a member is reached by: etcd-0.etcd (the manifests' URLs), and the longer forms.
san="DNS:localhost,IP:127.0.0.1,DNS:$svc,DNS:$svc.$ns.svc,DNS:$svc.$ns.svc.$domain"
i=0
while [ "$i" -lt "$members" ]; do
    m="$svc-$i.$svc"
    san="$san,DNS:$m,DNS:$m.$ns,DNS:$m.$ns.svc,DNS:$m.$ns.svc.$domain"
    i=$((i + 1))
done

ca client-ca "dhaf etcd client CA"
ca peer-ca "dhaf etcd peer CA"
leaf server client-ca etcd serverAuth,clientAuth "$san"
leaf peer peer-ca etcd-peer serverAuth,clientAuth "$san"
leaf dhaf-node client-ca dhaf-node clientAuth
leaf maintenance client-ca etcd-maintenance clientAuth

b64() { base64 < "$1" | tr -d '\n'; }

secret() { # secret NAME key=file...
    name=$1
    shift
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$ns"
    printf '  labels:\n    app.kubernetes.io/part-of: dhaf\ntype: Opaque\ndata:\n'
    for kv in "$@"; do
        printf '  %s: %s\n' "${kv%%=*}" "$(b64 "${kv#*=}")"
    done
}

{
    printf '# made by deploy/k8s/etcd-certs.sh for namespace %s, %s members\n' "$ns" "$members"
    secret etcd-tls ca.crt=client-ca.crt server.crt=server.crt server.key=server.key \
        peer-ca.crt=peer-ca.crt peer.crt=peer.crt peer.key=peer.key
    secret dhaf-etcd-client ca.crt=client-ca.crt tls.crt=dhaf-node.crt tls.key=dhaf-node.key
    secret etcd-maintenance-client ca.crt=client-ca.crt tls.crt=maintenance.crt \
        tls.key=maintenance.key
} > secrets.yaml
cat secrets.yaml
echo "etcd-certs.sh: certificates and secrets.yaml in $(pwd) (keep them private)" >&2
