#!/usr/bin/env bash
# Pool churn (issue 16): the primary's Connections and Com_stmt_prepare during 10 s of sysbench
# oltp_point_select (server-side prepared statements) at THREADS (default 256) threads, through
# the proxy and direct, on a sandbox of one primary. Needs a release build and .ci/setup.
#   cargo build --release && bash benches/load/churn.sh [THREADS]
set -euo pipefail
T=${1:-256}
B=$(cd "$(dirname "$0")/../.." && pwd)/target/release/shardgate
D=$(mktemp -d /tmp/churn-XXXX)
$B sandbox up --dir $D --shards 1 --replicas 0 >/dev/null
trap '$B sandbox down --dir $D >/dev/null 2>&1 || true; kill $PP 2>/dev/null || true' EXIT
PRIM=$(python3 -c "import json;d=json.load(open('$D/cluster.json'));print([s['port'] for s in d['servers'] if s['role']=='primary'][0])")
mariadb -h127.0.0.1 -P$PRIM -uroot -e "SET GLOBAL max_connections=2000"
LISTEN=$(python3 -c "import tomllib;c=tomllib.load(open('$D/shardgate.toml','rb'));print(c['proxy']['listen'].rsplit(':',1)[1])")
USER=$(python3 -c "import tomllib;c=tomllib.load(open('$D/shardgate.toml','rb'));print(c['users'][0]['name'], c['users'][0]['password'])")
set -- $USER; U=$1; P=$2
$B serve --config $D/shardgate.toml > $D/proxy.log 2>&1 & PP=$!
sleep 2
SB="sysbench oltp_point_select --db-driver=mysql --mysql-user=$U --mysql-password=$P --mysql-db=app --tables=1 --table-size=10000 --db-ps-mode=auto"
$SB --mysql-host=127.0.0.1 --mysql-port=$PRIM prepare >/dev/null
st() { mariadb -h127.0.0.1 -P$PRIM -uroot -N -e "SHOW GLOBAL STATUS WHERE Variable_name IN ('Connections','Com_stmt_prepare')" | awk '{print $2}' | paste -sd' '; }
for target in proxy direct; do
  port=$PRIM; [ $target = proxy ] && port=$LISTEN
  read p0 c0 <<< "$(st)"
  out=$($SB --mysql-host=127.0.0.1 --mysql-port=$port --threads=$T --time=10 run 2>&1 | grep -E "queries:|transactions:" | tr -s ' ' | paste -sd' ')
  read p1 c1 <<< "$(st)"
  echo "$target: Connections +$((c1-c0)), Com_stmt_prepare +$((p1-p0)); $out"
done
