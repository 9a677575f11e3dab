# Optional managed edge: an API Gateway WebSocket API holding client sockets
# instead of (or next to) the self-hosted edge nodes.
#
#   $connect     REQUEST authorizer = the auth function, then connections
#                (admits the connection under the per-user cap, records it)
#   $disconnect  connections (removes the route and the record)
#   $default     connections (client frames: resume -> hello, the route and
#                the replay; ping; ack)
#   schedule     connections' sweep, every minute (EventBridge): closes
#                connections whose token expired (4001)
#
# Dispatch pushes with PostToConnection on
# https://<id>.execute-api.<region>.amazonaws.com/<stage>/@connections/<id>,
# the same aws-sdk-apigatewaymanagement client it points at edge nodes.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}

resource "aws_apigatewayv2_api" "this" {
  name                       = var.name
  protocol_type              = "WEBSOCKET"
  description                = "edgepush managed edge"
  route_selection_expression = "$request.body.type"

  tags = var.tags
}

resource "aws_apigatewayv2_authorizer" "auth" {
  api_id           = aws_apigatewayv2_api.this.id
  name             = "${var.name}-auth"
  authorizer_type  = "REQUEST"
  authorizer_uri   = var.auth_invoke_arn
  identity_sources = var.identity_sources
}

resource "aws_apigatewayv2_integration" "connections" {
  api_id                    = aws_apigatewayv2_api.this.id
  integration_type          = "AWS_PROXY"
  integration_uri           = var.connections_invoke_arn
  integration_method        = "POST"
  content_handling_strategy = "CONVERT_TO_TEXT"
  passthrough_behavior      = "WHEN_NO_MATCH"
}

resource "aws_apigatewayv2_route" "connect" {
  api_id             = aws_apigatewayv2_api.this.id
  route_key          = "$connect"
  authorization_type = "CUSTOM"
  authorizer_id      = aws_apigatewayv2_authorizer.auth.id
  target             = "integrations/${aws_apigatewayv2_integration.connections.id}"
}

resource "aws_apigatewayv2_route" "disconnect" {
  #checkov:skip=CKV_AWS_309:API Gateway authorizes a WebSocket connection once, on $connect; other routes cannot take an authorizer and belong to an authorized connection.
  api_id    = aws_apigatewayv2_api.this.id
  route_key = "$disconnect"
  target    = "integrations/${aws_apigatewayv2_integration.connections.id}"
}

resource "aws_apigatewayv2_route" "default" {
  #checkov:skip=CKV_AWS_309:API Gateway authorizes a WebSocket connection once, on $connect; other routes cannot take an authorizer and belong to an authorized connection.
  api_id    = aws_apigatewayv2_api.this.id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.connections.id}"
}

resource "aws_cloudwatch_log_group" "access" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-owned keys; access logs hold no secrets (no headers, no bodies), so no CMK is required.
  #checkov:skip=CKV_AWS_338:Retention is the operator's choice (log_retention_days, default 30): a year of logs is a cost, not a security control, here.
  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days

  tags = var.tags
}

resource "aws_apigatewayv2_stage" "this" {
  #checkov:skip=CKV2_AWS_51:Clients are browsers and apps holding a JWT (checked by the $connect authorizer); mutual TLS client certificates do not fit them.
  api_id      = aws_apigatewayv2_api.this.id
  name        = var.stage_name
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = var.throttling_burst_limit
    throttling_rate_limit  = var.throttling_rate_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.access.arn
    format = jsonencode({
      requestId    = "$context.requestId"
      ip           = "$context.identity.sourceIp"
      requestTime  = "$context.requestTime"
      routeKey     = "$context.routeKey"
      eventType    = "$context.eventType"
      connectionId = "$context.connectionId"
      status       = "$context.status"
      authorizer   = "$context.authorizer.error"
      integration  = "$context.integrationErrorMessage"
    })
  }

  tags = var.tags

  # A stage deploys the routes that exist when it is created.
  depends_on = [
    aws_apigatewayv2_route.connect,
    aws_apigatewayv2_route.disconnect,
    aws_apigatewayv2_route.default,
  ]
}

# API Gateway may call auth as this API's authorizer only.
resource "aws_lambda_permission" "auth" {
  statement_id  = "AllowWebSocketAuthorizer"
  action        = "lambda:InvokeFunction"
  function_name = var.auth_function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this.execution_arn}/authorizers/${aws_apigatewayv2_authorizer.auth.id}"
}

# API Gateway may call connections for this API's routes only.
resource "aws_lambda_permission" "connections" {
  statement_id  = "AllowWebSocketRoutes"
  action        = "lambda:InvokeFunction"
  function_name = var.connections_function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this.execution_arn}/*"
}

# The sweep of the connections function (functions/connections/src/sweep.rs):
# closes connections whose token expired while they stayed quiet (4001), and
# forgets those past API Gateway's 2-hour lifetime whose $disconnect never
# came. The function tells this event from a WebSocket event by its source.
resource "aws_cloudwatch_event_rule" "sweep" {
  name                = "${var.name}-sweep"
  description         = "Runs the connections function's sweep of expired managed-edge connections."
  schedule_expression = var.sweep_schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "sweep" {
  rule = aws_cloudwatch_event_rule.sweep.name
  arn  = var.connections_function_arn
}

# EventBridge may call connections for this rule only.
resource "aws_lambda_permission" "sweep" {
  statement_id  = "AllowSweepSchedule"
  action        = "lambda:InvokeFunction"
  function_name = var.connections_function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.sweep.arn
}
