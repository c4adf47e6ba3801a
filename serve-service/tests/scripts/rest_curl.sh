#!/usr/bin/env bash
# curl against serve-service's REST API, the way a person checks a server by
# hand: health, metadata, one inference, an error of each common kind, a body
# over the limit, and the token on an unload and a load.
# Usage: rest_curl.sh BASE_URL TOKEN    (BASE_URL: http://host:port)
set -euo pipefail
base=$1
token=$2
body=$(mktemp)
headers=$(mktemp)
big=$(mktemp)
trap 'rm -f "$body" "$headers" "$big"' EXIT

fail() {
    echo "FAILED: $*" >&2
    echo "--- last answer: $(cat "$body")" >&2
    exit 1
}
# The status of a request; its body goes to $body, its headers to $headers.
status() {
    curl -sS --max-time 60 -o "$body" -D "$headers" -w '%{http_code}' "$@"
}
expect() {
    local want=$1 what=$2
    shift 2
    local got
    got=$(status "$@")
    [[ $got == "$want" ]] || fail "$what: status $got, expected $want"
}

curl -fsS --max-time 10 "$base/v2/health/live" >/dev/null || fail "live"
curl -fsS --max-time 10 "$base/v2/health/ready" >/dev/null || fail "ready"
expect 200 "server metadata" "$base/v2"
grep -q '"name":"serve-service"' "$body" || fail "server metadata names serve-service"
expect 200 "model metadata" "$base/v2/models/v1"
grep -q '"platform":"crs"' "$body" || fail "model metadata"
# The attributes the model reads, in its order: one INT8 column each.
attributes=$(sed -n 's/.*"parameters":{"attributes":"\([^"]*\)"}.*/\1/p' "$body")
[[ -n $attributes ]] || fail "the attributes parameter"
k=$(tr ',' '\n' <<<"$attributes" | wc -l)
zeros=$(printf '0,%.0s' $(seq "$k"))
request='{"id":"curl-1","inputs":[
  {"name":"entity_id","shape":[1],"datatype":"INT64","data":[7]},
  {"name":"device","shape":[1],"datatype":"BYTES","data":["Tablet"]},
  {"name":"attributes","shape":[1,'"$k"'],"datatype":"INT8","data":['"${zeros%,}"']}]}'
expect 200 "infer" -H 'Content-Type: application/json' -d "$request" "$base/v2/models/v1/infer"
grep -q '"id":"curl-1"' "$body" || fail "the id is echoed"
grep -q '"name":"cr","datatype":"FP64","shape":\[1\],"data":\[' "$body" || fail "the cr output"
echo "ok: curl health, metadata and infer ($k attributes)"

expect 400 "a bad device" -d "${request/Tablet/Phone}" "$base/v2/models/v1/infer"
grep -q "input 'device' row 0: unknown device" "$body" || fail "the bad device is named"
expect 400 "not JSON" -d 'not json' "$base/v2/models/v1/infer"
expect 404 "unknown model" "$base/v2/models/v9"
grep -q '"error":"unknown model' "$body" || fail "the unknown model is named"
# What no route takes needs the token, as an RPC outside the table does: without it, 401.
expect 401 "a wrong method without the token" -X DELETE "$base/v2/models/v1"
expect 405 "a wrong method" -X DELETE -H "Authorization: Bearer $token" "$base/v2/models/v1"
grep -qi '^allow: GET' "$headers" || fail "the 405 lists the allowed method"
# curl asks 100-continue first; the server answers 413 without taking the body.
head -c 17000000 /dev/zero >"$big"
expect 413 "a 17 MB body" --data-binary @"$big" "$base/v2/models/v1/infer"
grep -q 'MAX_MESSAGE_BYTES' "$body" || fail "the 413 names the limit"
echo "ok: curl errors: 400, 401, 404, 405, 413"

expect 401 "an unload without the token" -X POST "$base/v2/repository/models/v1/unload"
grep -qi '^www-authenticate: Bearer' "$headers" || fail "the 401 has a Bearer challenge"
expect 200 "an unload with the token" -X POST -H "Authorization: Bearer $token" "$base/v2/repository/models/v1/unload"
expect 400 "ready after the unload" "$base/v2/health/ready"
expect 200 "a load with the token" -X POST -H "Authorization: Bearer $token" "$base/v2/repository/models/v1/load"
expect 200 "ready after the load" "$base/v2/health/ready"
echo "ok: curl repository unload and load with the token, refused without"
echo "all curl checks passed"
