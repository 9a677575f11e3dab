# The edgepush Lambda functions (auth, collect, dispatch, and optionally
# connections), built by cargo lambda:
#
#   cargo lambda build --release --arm64 --output-format zip
#
# which writes target/lambda/<binary>/bootstrap.zip. Each function gets its
# own IAM role with only what it needs (least privilege):
#
#   all          write its own log group; X-Ray when tracing is Active;
#                ENI management when attached to the VPC
#   auth         read its own SSM parameters (the JWT secret / public keys)
#   collect      sqs:SendMessage to the hand-off queue; its SSM parameters
#   dispatch     consume the hand-off queue; execute-api:ManageConnections
#                on the WebSocket API's stage; its SSM parameters
#   connections  execute-api:ManageConnections (replays, pong, closing
#                expired connections with DELETE); its SSM parameters

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}

locals {
  functions = merge(
    {
      auth     = { binary = "auth" }
      collect  = { binary = "collect" }
      dispatch = { binary = "dispatch" }
    },
    var.enable_connections ? { connections = { binary = "connections" } } : {},
  )

  default_settings = {
    auth        = { memory_size = 128, timeout = 5 }
    collect     = { memory_size = 256, timeout = 15 }
    dispatch    = { memory_size = 256, timeout = 30 }
    connections = { memory_size = 128, timeout = 10 }
  }
  settings = { for name, _ in local.functions : name => lookup(var.settings, name, local.default_settings[name]) }

  in_vpc = length(var.subnet_ids) > 0

  # Environment: plain values plus `<VAR> = ssm:<parameter name>`, which
  # the function resolves once at cold start.
  environment = {
    for name, _ in local.functions : name => merge(
      lookup(var.environment, name, {}),
      { for env_var, param in lookup(var.ssm_parameters, name, {}) : env_var => "${var.ssm_reference_prefix}${param.name}" },
    )
  }

  # `@connections` of the WebSocket stage: POST (push), GET (status), DELETE (close).
  manage_connections_arn = var.enable_websocket ? "${var.websocket_execution_arn}/${var.websocket_stage}/*/@connections/*" : null
}

# ---------------------------------------------------------------------------
# Log groups, created before the functions so that Lambda never creates one
# without retention.
# ---------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-owned keys; the functions log no secrets, so no CMK is required.
  #checkov:skip=CKV_AWS_338:Retention is the operator's choice (log_retention_days, default 30): a year of logs is a cost, not a security control, here.
  for_each = local.functions

  name              = "/aws/lambda/${var.name_prefix}-${each.key}"
  retention_in_days = var.log_retention_days

  tags = var.tags
}

# ---------------------------------------------------------------------------
# IAM: one role per function.
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = local.functions

  name               = "${var.name_prefix}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "function" {
  for_each = local.functions

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this[each.key].arn}:*"]
  }

  dynamic "statement" {
    for_each = var.tracing_mode == "Active" ? [1] : []
    content {
      sid       = "XRay"
      actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
      resources = ["*"]
    }
  }

  # What AWSLambdaVPCAccessExecutionRole grants, minus its logs:* on "*".
  dynamic "statement" {
    for_each = local.in_vpc && contains(var.vpc_functions, each.key) ? [1] : []
    content {
      sid = "VpcNetworkInterfaces"
      actions = [
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
      ]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = length(lookup(var.ssm_parameters, each.key, {})) > 0 ? [1] : []
    content {
      sid       = "OwnParameters"
      actions   = ["ssm:GetParameter", "ssm:GetParameters"]
      resources = sort([for param in values(lookup(var.ssm_parameters, each.key, {})) : param.arn])
    }
  }

  dynamic "statement" {
    for_each = var.ssm_kms_key_arn != null && length(lookup(var.ssm_parameters, each.key, {})) > 0 ? [1] : []
    content {
      sid       = "DecryptParameters"
      actions   = ["kms:Decrypt"]
      resources = [var.ssm_kms_key_arn]
      condition {
        test     = "StringLike"
        variable = "kms:ViaService"
        values   = ["ssm.*.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = each.key == "collect" ? [1] : []
    content {
      sid       = "SendToHandoffQueue"
      actions   = ["sqs:SendMessage"]
      resources = [var.queue_arn]
    }
  }

  dynamic "statement" {
    for_each = each.key == "dispatch" ? [1] : []
    content {
      sid = "ConsumeHandoffQueue"
      actions = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
      ]
      resources = [var.queue_arn]
    }
  }

  dynamic "statement" {
    for_each = var.enable_websocket && contains(["dispatch", "connections"], each.key) ? [1] : []
    content {
      sid       = "ManageWebSocketConnections"
      actions   = ["execute-api:ManageConnections"]
      resources = [local.manage_connections_arn]
    }
  }
}

resource "aws_iam_role_policy" "this" {
  for_each = local.functions

  name   = "${var.name_prefix}-${each.key}"
  role   = aws_iam_role.this[each.key].id
  policy = data.aws_iam_policy_document.function[each.key].json
}

# ---------------------------------------------------------------------------
# The functions.
# ---------------------------------------------------------------------------

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:No function is invoked asynchronously: API Gateway and the authorizer call them synchronously, and dispatch's SQS queue has its own dead-letter queue (modules/queue).
  #checkov:skip=CKV_AWS_173:The environment holds no secret: secrets are ssm: references resolved at cold start (modules/params).
  #checkov:skip=CKV_AWS_272:The zips are built by the deployer with cargo lambda; code signing needs a signing profile the project does not run. Add code_signing_config_arn where one exists.
  for_each = local.functions

  function_name = "${var.name_prefix}-${each.key}"
  description   = "edgepush ${each.key}"
  role          = aws_iam_role.this[each.key].arn
  runtime       = var.runtime
  handler       = "bootstrap"
  architectures = [var.architecture]
  memory_size   = local.settings[each.key].memory_size
  timeout       = local.settings[each.key].timeout

  filename         = "${var.lambda_dir}/${each.value.binary}/bootstrap.zip"
  source_code_hash = filebase64sha256("${var.lambda_dir}/${each.value.binary}/bootstrap.zip")

  reserved_concurrent_executions = lookup(var.reserved_concurrency, each.key, -1)

  environment {
    variables = local.environment[each.key]
  }

  tracing_config {
    mode = var.tracing_mode
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.this[each.key].name
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc && contains(var.vpc_functions, each.key) ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  tags = var.tags

  # The role must be able to write logs (and, in a VPC, create ENIs) before
  # the first invocation.
  depends_on = [aws_iam_role_policy.this]
}
