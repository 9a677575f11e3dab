# edgepush on AWS: the whole deployment.
#
#   business systems --HTTPS--> HTTP API --> collect --SQS--> dispatch
#                                              |                 |  push API (SigV4)
#                                           MongoDB        Redis |  or PostToConnection
#                                                                v
#   clients --ws(s)--> NLB --> edge nodes (ECS Fargate)   API Gateway WebSocket (optional)
#
# Modules (infra/modules/<name>): network, params, redis, queue, functions,
# http_api, websocket_api (optional), edge_nodes (optional).
# MongoDB is not created here: its connection string comes from
# var.mongodb_uri (Atlas, a replica set, DocumentDB) and is kept in SSM.
#
# Build the functions first (infra/README.md):
#   cargo lambda build --release --arm64 --output-format zip

locals {
  name       = "${var.project}-${var.environment}"
  ssm_prefix = "/${var.project}/${var.environment}"
  lambda_dir = var.lambda_dir != null ? var.lambda_dir : "${path.root}/../target/lambda"

  # SSM parameters as {name, arn}, by key (jwt-secret, api-keys, ...).
  ssm = { for key, name in module.params.names : key => { name = name, arn = module.params.arns[key] } }

  # ---- Environment contract of the functions and edge nodes ----------------
  # Plain settings are environment variables; secrets are SSM parameters,
  # handed to the functions as `<VAR>=ssm:<parameter name>` (resolved at
  # cold start by edgepush-aws; the functions module adds the prefix) and
  # injected as `<VAR>=<value>` into the edge node containers by ECS.
  jwt_env = merge(
    { EDGEPUSH_JWT_ALG = var.jwt_algorithm },
    var.jwt_issuer != null ? { EDGEPUSH_JWT_ISSUER = var.jwt_issuer } : {},
    var.jwt_audience != null ? { EDGEPUSH_JWT_AUDIENCE = var.jwt_audience } : {},
  )
  # `try`: jwt-public-keys exists only with jwt_public_keys_pem (the
  # precondition below explains a missing one).
  jwt_ssm_candidates = var.jwt_algorithm == "HS256" ? {
    EDGEPUSH_JWT_SECRET = try(local.ssm["jwt-secret"], null)
    } : {
    EDGEPUSH_JWT_PUBLIC_KEYS = try(local.ssm["jwt-public-keys"], null)
  }
  jwt_ssm = { for env_var, param in local.jwt_ssm_candidates : env_var => param if param != null }
  push_ssm = {
    EDGEPUSH_PUSH_ACCESS_KEY_ID     = local.ssm["push-access-key-id"]
    EDGEPUSH_PUSH_SECRET_ACCESS_KEY = local.ssm["push-secret-access-key"]
  }
  common_env = {
    RUST_LOG             = var.rust_log
    EDGEPUSH_REDIS_URL   = module.redis.url
    EDGEPUSH_PUSH_REGION = var.aws_region
  }

  function_environment = {
    auth = merge(local.jwt_env, { RUST_LOG = var.rust_log })
    # Collect hands stored messages to dispatch through the queue.
    collect = merge(local.common_env, {
      EDGEPUSH_MONGODB_DATABASE = var.mongodb_database
      EDGEPUSH_HANDOFF          = "sqs"
      EDGEPUSH_QUEUE_URL        = module.queue.queue_url
    })
    dispatch = local.common_env
    # connections derives the @connections endpoint from its events; MongoDB
    # holds what it replays on a client's resume and the acks it records.
    connections = merge(local.common_env, { EDGEPUSH_MONGODB_DATABASE = var.mongodb_database })
  }
  function_ssm = {
    auth = local.jwt_ssm
    # The push credential: collect's in-process dispatch fallback
    # (EDGEPUSH_HANDOFF=direct) signs with it too.
    collect = merge(local.push_ssm, {
      EDGEPUSH_API_KEYS    = local.ssm["api-keys"]
      EDGEPUSH_MONGODB_URI = local.ssm["mongodb-uri"]
    })
    dispatch    = local.push_ssm
    connections = { EDGEPUSH_MONGODB_URI = local.ssm["mongodb-uri"] }
  }

  edge_environment = merge(local.common_env, local.jwt_env, {
    EDGEPUSH_MONGODB_DATABASE = var.mongodb_database
  }, var.edge_node_environment)
  edge_secrets = merge(
    { for env_var, param in merge(local.jwt_ssm, local.push_ssm) : env_var => param.arn },
    { EDGEPUSH_MONGODB_URI = local.ssm["mongodb-uri"].arn },
  )
}

# Cross-variable checks Terraform cannot express in `validation` blocks (< 1.9).
resource "terraform_data" "input_checks" {
  lifecycle {
    precondition {
      condition     = var.jwt_algorithm == "HS256" || var.jwt_public_keys_pem != null
      error_message = "jwt_public_keys_pem is required when jwt_algorithm is RS256 or ES256."
    }
    precondition {
      condition     = !var.enable_edge_nodes || var.edge_node_image != null
      error_message = "edge_node_image is required when enable_edge_nodes is true."
    }
    precondition {
      condition     = var.edge_node_drain_timeout_ms < var.drain_timeout_seconds * 1000
      error_message = "edge_node_drain_timeout_ms must be shorter than drain_timeout_seconds."
    }
  }
}

module "network" {
  source = "./modules/network"

  name                 = local.name
  cidr_block           = var.vpc_cidr
  az_count             = var.az_count
  enable_nat_gateway   = var.enable_nat_gateway
  single_nat_gateway   = var.single_nat_gateway
  enable_vpc_endpoints = var.enable_vpc_endpoints
  ws_port              = var.edge_ws_port
  push_port            = var.edge_push_port
  client_cidr_blocks   = var.client_cidr_blocks
  nlb_listener_ports   = concat(var.edge_tcp_listener_ports, var.edge_certificate_arn != null ? [443] : [])
}

module "params" {
  source = "./modules/params"

  prefix                 = local.ssm_prefix
  kms_key_id             = var.ssm_kms_key_arn
  jwt_secret             = var.jwt_secret
  jwt_public_keys_pem    = var.jwt_public_keys_pem
  push_access_key_id     = var.push_access_key_id
  push_secret_access_key = var.push_secret_access_key
  api_keys               = var.api_keys
  mongodb_uri            = var.mongodb_uri
}

module "redis" {
  source = "./modules/redis"

  name                       = local.name
  subnet_ids                 = module.network.private_subnet_ids
  security_group_ids         = [module.network.redis_security_group_id]
  node_type                  = var.redis_node_type
  num_node_groups            = var.redis_shards
  replicas_per_node_group    = var.redis_replicas_per_shard
  transit_encryption_enabled = var.redis_transit_encryption
}

module "queue" {
  source = "./modules/queue"

  name = "${local.name}-handoff"
  # Six times dispatch's timeout, as AWS advises for SQS event sources.
  visibility_timeout_seconds  = 6 * lookup(var.function_settings, "dispatch", { memory_size = 256, timeout = 30 }).timeout
  max_receive_count           = var.queue_max_receive_count
  enable_event_source_mapping = true
  dispatch_function_arn       = module.functions.dispatch_function_arn
  batch_size                  = var.dispatch_batch_size
  maximum_concurrency         = var.dispatch_max_concurrency
  dlq_alarm_actions           = var.alarm_sns_topic_arns
}

module "functions" {
  source = "./modules/functions"

  name_prefix             = local.name
  lambda_dir              = local.lambda_dir
  architecture            = var.lambda_architecture
  enable_connections      = var.enable_websocket_api
  settings                = var.function_settings
  environment             = local.function_environment
  ssm_parameters          = local.function_ssm
  ssm_kms_key_arn         = var.ssm_kms_key_arn
  queue_arn               = module.queue.queue_arn
  subnet_ids              = module.network.private_subnet_ids
  security_group_ids      = [module.network.functions_security_group_id]
  log_retention_days      = var.log_retention_days
  tracing_mode            = var.tracing_mode
  enable_websocket        = var.enable_websocket_api
  websocket_stage         = var.websocket_stage
  websocket_execution_arn = var.enable_websocket_api ? module.websocket_api[0].execution_arn : null
}

module "http_api" {
  source = "./modules/http_api"

  name                  = "${local.name}-collect"
  collect_function_name = module.functions.function_names["collect"]
  collect_invoke_arn    = module.functions.invoke_arns["collect"]
  authorization_type    = var.collect_authorization_type
  log_retention_days    = var.log_retention_days
}

module "websocket_api" {
  source = "./modules/websocket_api"
  count  = var.enable_websocket_api ? 1 : 0

  name                      = "${local.name}-ws"
  stage_name                = var.websocket_stage
  auth_function_name        = module.functions.function_names["auth"]
  auth_invoke_arn           = module.functions.invoke_arns["auth"]
  connections_function_name = module.functions.function_names["connections"]
  connections_invoke_arn    = module.functions.invoke_arns["connections"]
  connections_function_arn  = module.functions.function_arns["connections"]
  identity_sources          = var.websocket_identity_sources
  log_retention_days        = var.log_retention_days
}

module "edge_nodes" {
  source = "./modules/edge_nodes"
  count  = var.enable_edge_nodes ? 1 : 0

  name                   = "${local.name}-edge"
  vpc_id                 = module.network.vpc_id
  public_subnet_ids      = module.network.public_subnet_ids
  private_subnet_ids     = module.network.private_subnet_ids
  nlb_security_group_id  = module.network.nlb_security_group_id
  edge_security_group_id = module.network.edge_security_group_id
  internal               = var.edge_internal
  deletion_protection    = var.edge_deletion_protection
  container_image        = var.edge_node_image
  cpu_architecture       = var.edge_cpu_architecture
  cpu                    = var.edge_cpu
  memory                 = var.edge_memory
  desired_count          = var.edge_desired_count
  ws_port                = var.edge_ws_port
  push_port              = var.edge_push_port
  drain_timeout_seconds  = var.drain_timeout_seconds
  node_drain_timeout_ms  = var.edge_node_drain_timeout_ms
  tcp_listener_ports     = var.edge_tcp_listener_ports
  certificate_arn        = var.edge_certificate_arn
  environment            = local.edge_environment
  secrets                = local.edge_secrets
  ssm_kms_key_arn        = var.ssm_kms_key_arn
  log_retention_days     = var.log_retention_days
}
