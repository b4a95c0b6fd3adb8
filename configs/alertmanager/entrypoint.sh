#!/bin/sh
# Entrypoint of the alertmanager service (docker-compose.yaml): writes the Slack
# webhook URL from $SLACK_WEBHOOK_URL into the file alertmanager.yml names
# (global.slack_api_url_file), so the URL never appears in a config file,
# then runs Alertmanager with the arguments given.
# Needs /bin/sh in the image: prom/alertmanager up to v0.28 is busybox-based.
set -eu

url_file="${SLACK_API_URL_FILE:-/etc/alertmanager/secrets/slack_webhook_url}"

if [ -n "${SLACK_WEBHOOK_URL:-}" ]; then
    mkdir -p "$(dirname "$url_file")"
    umask 077
    printf '%s' "$SLACK_WEBHOOK_URL" > "$url_file"
elif [ -s "$url_file" ]; then
    : # a file mounted by the operator (Docker or Kubernetes secret)
else
    echo "entrypoint: SLACK_WEBHOOK_URL is not set and $url_file does not exist: Slack notifications will fail" >&2
fi

exec "${ALERTMANAGER_BIN:-/bin/alertmanager}" "$@"
