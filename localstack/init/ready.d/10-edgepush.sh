#!/usr/bin/env bash
# Creates what edgepush needs in LocalStack (or moto), idempotently: safe to
# run again on a running emulator, it converges to the same state.
#
#   SQS   edgepush-dispatch-dlq   dead-letter queue, 14 days retention
#         edgepush-dispatch       the hand-off queue: RedrivePolicy to the DLQ
#                                 with maxReceiveCount 5; visibility timeout
#                                 180 s (6 x the dispatch function's 30 s)
#   SSM   /edgepush/jwt-secret    SecureString, the HS256 key of client tokens
#         /edgepush/push-secret   SecureString, the push API credential secret
#   SM    edgepush/api-keys       {"api_keys": "local:<key>"}, for
#                                 EDGEPUSH_API_KEYS=secretsmanager:edgepush/api-keys#api_keys
#
# Where it runs:
# - inside the LocalStack container, from /etc/localstack/init/ready.d
#   (localstack/docker-compose.yml mounts it): uses `awslocal`;
# - on the host (scripts/start-localstack): uses $EDGEPUSH_AWS_CLI, or `aws`,
#   with --endpoint-url $AWS_ENDPOINT_URL.
#
# Values can be overridden: EDGEPUSH_LOCAL_JWT_SECRET,
# EDGEPUSH_LOCAL_PUSH_SECRET, EDGEPUSH_LOCAL_API_KEYS. The defaults are
# development values, never for a real deployment.
set -euo pipefail

jwt_secret=${EDGEPUSH_LOCAL_JWT_SECRET:-local-dev-jwt-secret-change-me}
push_secret=${EDGEPUSH_LOCAL_PUSH_SECRET:-dev-push-secret}
api_keys=${EDGEPUSH_LOCAL_API_KEYS:-local:local-dev-api-key}

if [[ -n ${AWS_ENDPOINT_URL:-} ]]; then
    cli=("${EDGEPUSH_AWS_CLI:-aws}" --endpoint-url "$AWS_ENDPOINT_URL")
elif command -v awslocal >/dev/null 2>&1; then
    cli=(awslocal)
else
    echo "10-edgepush.sh: set AWS_ENDPOINT_URL (or run inside LocalStack, which has awslocal)" >&2
    exit 1
fi
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}

aws_() { "${cli[@]}" "$@"; }

# json_string TEXT: TEXT as a JSON string literal (quotes and backslashes
# escaped; the values here have no control characters).
json_string() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

# ensure_queue NAME ATTRIBUTES_JSON: the queue's URL on stdout; creates it,
# or sets the attributes of the existing one (CreateQueue refuses different
# attributes on an existing queue).
ensure_queue() {
    local name=$1 attributes=$2 url
    if url=$(aws_ sqs get-queue-url --queue-name "$name" --query QueueUrl --output text 2>/dev/null); then
        aws_ sqs set-queue-attributes --queue-url "$url" --attributes "$attributes" >/dev/null
    else
        url=$(aws_ sqs create-queue --queue-name "$name" --attributes "$attributes" \
            --query QueueUrl --output text)
    fi
    printf '%s\n' "$url"
}

dlq_url=$(ensure_queue edgepush-dispatch-dlq '{"MessageRetentionPeriod":"1209600"}')
dlq_arn=$(aws_ sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names QueueArn \
    --query Attributes.QueueArn --output text)
redrive="{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":\\\"5\\\"}"
queue_url=$(ensure_queue edgepush-dispatch \
    "{\"VisibilityTimeout\":\"180\",\"MessageRetentionPeriod\":\"345600\",\"RedrivePolicy\":\"$redrive\"}")
echo "10-edgepush.sh: queue $queue_url (dead letters: $dlq_url)"

put_parameter() {
    aws_ ssm put-parameter --name "$1" --type SecureString --value "$2" --overwrite >/dev/null
    echo "10-edgepush.sh: SSM parameter $1"
}
put_parameter /edgepush/jwt-secret "$jwt_secret"
put_parameter /edgepush/push-secret "$push_secret"

secret="{\"api_keys\":$(json_string "$api_keys")}"
if aws_ secretsmanager describe-secret --secret-id edgepush/api-keys >/dev/null 2>&1; then
    aws_ secretsmanager put-secret-value --secret-id edgepush/api-keys --secret-string "$secret" >/dev/null
else
    aws_ secretsmanager create-secret --name edgepush/api-keys --secret-string "$secret" >/dev/null
fi
echo "10-edgepush.sh: Secrets Manager secret edgepush/api-keys"
