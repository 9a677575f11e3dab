# The same modules as infra/main.tf, minus what LocalStack's free edition
# cannot emulate; see versions.tf.

locals {
  name       = "edgepush-${var.environment}"
  ssm_prefix = "/edgepush/${var.environment}"
  lambda_dir = var.lambda_dir != null ? var.lambda_dir : "${path.root}/../../../target/lambda"
  ssm        = { for key, name in module.params.names : key => { name = name, arn = module.params.arns[key] } }

  push_ssm = {
    EDGEPUSH_PUSH_ACCESS_KEY_ID     = local.ssm["push-access-key-id"]
    EDGEPUSH_PUSH_SECRET_ACCESS_KEY = local.ssm["push-secret-access-key"]
  }
  common_env = {
    RUST_LOG             = "info"
    EDGEPUSH_REDIS_URL   = var.redis_url
    EDGEPUSH_PUSH_REGION = var.aws_region
  }
}

module "params" {
  source = "../../modules/params"

  prefix                 = local.ssm_prefix
  jwt_secret             = var.jwt_secret
  push_access_key_id     = var.push_access_key_id
  push_secret_access_key = var.push_secret_access_key
  api_keys               = var.api_keys
  mongodb_uri            = var.mongodb_uri
}

module "queue" {
  source = "../../modules/queue"

  name                        = "${local.name}-handoff"
  enable_event_source_mapping = var.enable_functions
  dispatch_function_arn       = var.enable_functions ? module.functions[0].dispatch_function_arn : null
}

module "functions" {
  source = "../../modules/functions"
  count  = var.enable_functions ? 1 : 0

  name_prefix  = local.name
  lambda_dir   = local.lambda_dir
  architecture = var.lambda_architecture
  queue_arn    = module.queue.queue_arn
  # LocalStack does not trace; no VPC locally.
  tracing_mode = "PassThrough"

  environment = {
    auth = { EDGEPUSH_JWT_ALG = "HS256", RUST_LOG = "info" }
    collect = merge(local.common_env, {
      EDGEPUSH_MONGODB_DATABASE = var.mongodb_database
      EDGEPUSH_HANDOFF          = "sqs"
      EDGEPUSH_QUEUE_URL        = module.queue.queue_url
    })
    dispatch = local.common_env
  }
  ssm_parameters = {
    auth = { EDGEPUSH_JWT_SECRET = local.ssm["jwt-secret"] }
    collect = merge(local.push_ssm, {
      EDGEPUSH_API_KEYS    = local.ssm["api-keys"]
      EDGEPUSH_MONGODB_URI = local.ssm["mongodb-uri"]
    })
    dispatch = local.push_ssm
  }
}
