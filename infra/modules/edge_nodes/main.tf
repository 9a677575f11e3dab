# Self-hosted edge nodes: `edge-node serve` on ECS Fargate behind a Network
# Load Balancer.
#
#   clients --TCP 80 / TLS 443--> NLB --> task:ws_port   (GET /ws)
#   NLB health check ------------------> task:push_port  (GET /healthz)
#   dispatch --------------------------> task:push_port  (push API, SigV4)
#
# Shutdown of a task (deployment, scale-in): ECS deregisters it from the
# target group, so new connections go elsewhere while established sockets
# keep flowing (connection_termination = false), and waits the deregistration
# delay (drain_timeout_seconds). Then it sends SIGTERM: the node closes its
# sockets with 1012 within EDGEPUSH_DRAIN_TIMEOUT_MS (node_drain_timeout_ms),
# clients reconnect through the NLB to another node and resume with
# `after=<seq>`. stopTimeout is above the node's drain, so SIGKILL never
# cuts a drain short.
#
# The push URL a node registers in Redis must be reachable by dispatch: the
# task's own VPC address. The entry point finds it with `hostname -i` (the
# task's ENI address under awsvpc networking) and exports EDGEPUSH_PUSH_URL
# before exec'ing the node.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}

data "aws_region" "current" {}

locals {
  container_name = "edge-node"
  # Fargate allows at most 120 s.
  stop_timeout = min(120, ceil(var.node_drain_timeout_ms / 1000) + 10)
  # NLB and target group names are limited to 32 characters.
  short_name = substr(var.name, 0, 28)

  environment = merge(
    {
      EDGEPUSH_WS_ADDR          = "0.0.0.0:${var.ws_port}"
      EDGEPUSH_PUSH_ADDR        = "0.0.0.0:${var.push_port}"
      EDGEPUSH_PUSH_PORT        = tostring(var.push_port)
      EDGEPUSH_DRAIN_TIMEOUT_MS = tostring(var.node_drain_timeout_ms)
      EDGEPUSH_LOG_FORMAT       = "json"
      RUST_LOG                  = "info"
    },
    var.environment,
  )

  # EDGEPUSH_PUSH_URL from the task's address, unless set explicitly.
  entrypoint_script = <<-EOT
    if [ -z "$${EDGEPUSH_PUSH_URL:-}" ]; then
      set -- $(hostname -i)
      EDGEPUSH_PUSH_URL="http://$1:$${EDGEPUSH_PUSH_PORT}"
      export EDGEPUSH_PUSH_URL
    fi
    exec edge-node serve
  EOT
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-owned keys; these logs hold no secrets, so no CMK is required.
  #checkov:skip=CKV_AWS_338:Retention is the operator's choice (log_retention_days, default 30): a year of logs is a cost, not a security control, here.
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days

  tags = var.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = var.enable_container_insights ? "enabled" : "disabled"
  }

  tags = var.tags
}

# ---------------------------------------------------------------------------
# Task execution role: pull the image, write logs, read the secrets ECS
# injects. The node itself calls no AWS API, so the task has no task role.
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "execution" {
  #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken takes no resource ("*" is its only form); the image pulls are limited to ecr_repository_arns when given.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "EcrPull"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = length(var.ecr_repository_arns) > 0 ? var.ecr_repository_arns : ["*"]
  }

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  dynamic "statement" {
    for_each = length(var.secrets) > 0 ? [1] : []
    content {
      sid       = "InjectedSecrets"
      actions   = ["ssm:GetParameters"]
      resources = sort(distinct(values(var.secrets)))
    }
  }

  dynamic "statement" {
    for_each = var.ssm_kms_key_arn != null && length(var.secrets) > 0 ? [1] : []
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = [var.ssm_kms_key_arn]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.name}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# ---------------------------------------------------------------------------
# Task definition and service.
# ---------------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name        = local.container_name
      image       = var.container_image
      essential   = true
      entryPoint  = ["/bin/sh", "-c"]
      command     = [local.entrypoint_script]
      stopTimeout = local.stop_timeout

      portMappings = [
        { containerPort = var.ws_port, protocol = "tcp", name = "ws" },
        { containerPort = var.push_port, protocol = "tcp", name = "push" },
      ]

      environment = [for key in sort(keys(local.environment)) : { name = key, value = local.environment[key] }]
      secrets     = [for key in sort(keys(var.secrets)) : { name = key, valueFrom = var.secrets[key] }]

      ulimits = [
        { name = "nofile", softLimit = var.open_files_limit, hardLimit = var.open_files_limit },
      ]

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "edge"
        }
      }
    },
  ])

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.container_image != null && var.container_image != ""
      error_message = "container_image (root: edge_node_image) must name the edge node image."
    }
    precondition {
      condition     = var.node_drain_timeout_ms < var.drain_timeout_seconds * 1000
      error_message = "node_drain_timeout_ms must be shorter than drain_timeout_seconds (the deregistration delay)."
    }
    precondition {
      condition     = var.node_drain_timeout_ms <= 110000
      error_message = "node_drain_timeout_ms must leave stopTimeout (at most 120 s on Fargate) 10 s above it."
    }
  }
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:NLB access logs cover TLS listeners only and need an S3 bucket with a bucket policy; enable them per deployment (access_logs) where required.
  name                             = "${local.short_name}-nlb"
  load_balancer_type               = "network"
  internal                         = var.internal
  subnets                          = var.public_subnet_ids
  security_groups                  = [var.nlb_security_group_id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection

  tags = var.tags
}

resource "aws_lb_target_group" "ws" {
  name                   = "${local.short_name}-ws"
  port                   = var.ws_port
  protocol               = "TCP"
  target_type            = "ip"
  vpc_id                 = var.vpc_id
  deregistration_delay   = var.drain_timeout_seconds
  connection_termination = false

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = tostring(var.push_port)
    path                = "/healthz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

resource "aws_lb_listener" "tcp" {
  for_each = toset([for port in var.tcp_listener_ports : tostring(port)])

  load_balancer_arn = aws_lb.this.arn
  port              = tonumber(each.value)
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ws.arn
  }

  tags = var.tags
}

resource "aws_lb_listener" "tls" {
  count = var.certificate_arn == null ? 0 : 1

  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = var.tls_policy

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ws.arn
  }

  tags = var.tags
}

resource "aws_ecs_service" "this" {
  name            = var.name
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.this.arn
  desired_count   = var.desired_count
  launch_type     = "FARGATE"

  # Replace nodes one by one, never below the desired count.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  health_check_grace_period_seconds = 30
  propagate_tags                    = "SERVICE"
  enable_ecs_managed_tags           = true

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [var.edge_security_group_id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.ws.arn
    container_name   = local.container_name
    container_port   = var.ws_port
  }

  tags = var.tags

  # The target group must be attached to a listener before ECS registers tasks.
  depends_on = [aws_lb_listener.tcp, aws_lb_listener.tls, aws_iam_role_policy.execution]
}
