# Inputs of the edgepush stack. Only `mongodb_uri` and (with edge nodes)
# `edge_node_image` have no default; see terraform.tfvars.example.

# ---------------------------------------------------------------------------
# General
# ---------------------------------------------------------------------------

variable "aws_region" {
  description = "AWS region of the whole stack."
  type        = string
  default     = "us-east-1"
}

variable "project" {
  description = "Project name: the first part of resource names and of the SSM path (/<project>/<environment>/...)."
  type        = string
  default     = "edgepush"
}

variable "environment" {
  description = "Environment name (prod, staging, ...): the second part of resource names and of the SSM path."
  type        = string
  default     = "prod"
}

variable "tags" {
  description = "Tags added to every resource (Project and Environment are always set)."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of every CloudWatch log group (functions, APIs, edge nodes)."
  type        = number
  default     = 30
}

# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Availability zones to use (at least 2)."
  type        = number
  default     = 2
}

variable "enable_nat_gateway" {
  description = "NAT gateways for the private subnets. Needed to reach MongoDB Atlas over the internet and the API Gateway management API (managed edge); without it use enable_vpc_endpoints and PrivateLink/peering for MongoDB."
  type        = bool
  default     = true
}

variable "single_nat_gateway" {
  description = "One shared NAT gateway (cheaper) instead of one per zone (zone-outage tolerant)."
  type        = bool
  default     = true
}

variable "enable_vpc_endpoints" {
  description = "Interface endpoints for SSM, SQS, CloudWatch Logs and ECR, and an S3 gateway endpoint."
  type        = bool
  default     = false
}

variable "client_cidr_blocks" {
  description = "Client networks allowed to reach the edge nodes' NLB."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

# ---------------------------------------------------------------------------
# MongoDB (Atlas, a replica set, or DocumentDB): not created here
# ---------------------------------------------------------------------------

variable "mongodb_uri" {
  description = "MongoDB connection string, stored as the SecureString <ssm>/mongodb-uri. Atlas: mongodb+srv://user:pass@cluster.example.mongodb.net/?retryWrites=true&w=majority (allow-list the NAT IPs or use PrivateLink). DocumentDB: add tls=true&retryWrites=false and ship its CA bundle."
  type        = string
  sensitive   = true
}

variable "mongodb_database" {
  description = "MongoDB database name (EDGEPUSH_MONGODB_DATABASE)."
  type        = string
  default     = "edgepush"
}

# ---------------------------------------------------------------------------
# Secrets (SSM SecureString). null generates a random value.
# ---------------------------------------------------------------------------

variable "jwt_algorithm" {
  description = "Client token algorithm (EDGEPUSH_JWT_ALG): HS256 (shared secret, <ssm>/jwt-secret) or RS256/ES256 (public keys, jwt_public_keys_pem)."
  type        = string
  default     = "HS256"

  validation {
    condition     = contains(["HS256", "RS256", "ES256"], var.jwt_algorithm)
    error_message = "jwt_algorithm must be HS256, RS256 or ES256."
  }
}

variable "jwt_secret" {
  description = "HS256 token secret (at least 16 bytes); null generates one. The service that issues tokens reads it from <ssm>/jwt-secret."
  type        = string
  default     = null
  sensitive   = true
}

variable "jwt_public_keys_pem" {
  description = "RS256/ES256 public key(s) in PEM; required unless jwt_algorithm is HS256."
  type        = string
  default     = null
}

variable "jwt_issuer" {
  description = "Required `iss` claim of client tokens (EDGEPUSH_JWT_ISSUER); null accepts any."
  type        = string
  default     = null
}

variable "jwt_audience" {
  description = "Required `aud` claim of client tokens (EDGEPUSH_JWT_AUDIENCE); null accepts any."
  type        = string
  default     = null
}

variable "push_access_key_id" {
  description = "Access key id of the internal push credential that dispatch signs push requests with (SigV4, service execute-api) and edge nodes verify. Not an IAM key."
  type        = string
  default     = "edgepush-push"
}

variable "push_secret_access_key" {
  description = "Secret of the internal push credential; null generates one."
  type        = string
  default     = null
  sensitive   = true
}

variable "api_keys" {
  description = "Collect API keys, source name => key; null generates one key for the source \"default\" (read it from <ssm>/api-keys)."
  type        = map(string)
  default     = null
  sensitive   = true
}

variable "ssm_kms_key_arn" {
  description = "Customer managed KMS key ARN for the SecureString parameters; null uses alias/aws/ssm."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------
# Functions (cargo lambda)
# ---------------------------------------------------------------------------

variable "lambda_dir" {
  description = "Where `cargo lambda build --release --output-format zip` put the functions (<dir>/<binary>/bootstrap.zip); null means ../target/lambda relative to this directory."
  type        = string
  default     = null
}

variable "lambda_architecture" {
  description = "Architecture the functions were built for: arm64 (`--arm64`, Graviton, cheaper) or x86_64 (`--compiler cargo` on an x86_64 host without zig)."
  type        = string
  default     = "arm64"
}

variable "function_settings" {
  description = "Memory (MB) and timeout (s) per function."
  type = map(object({
    memory_size = number
    timeout     = number
  }))
  default = {
    auth        = { memory_size = 128, timeout = 5 }
    collect     = { memory_size = 256, timeout = 15 }
    dispatch    = { memory_size = 256, timeout = 30 }
    connections = { memory_size = 128, timeout = 10 }
  }
}

variable "tracing_mode" {
  description = "X-Ray tracing of the functions: Active or PassThrough."
  type        = string
  default     = "Active"
}

variable "rust_log" {
  description = "RUST_LOG of every function and edge node."
  type        = string
  default     = "info"
}

# ---------------------------------------------------------------------------
# Queue (collect -> dispatch)
# ---------------------------------------------------------------------------

variable "queue_max_receive_count" {
  description = "Receives of one hand-off before it moves to the dead-letter queue."
  type        = number
  default     = 5
}

variable "dispatch_batch_size" {
  description = "SQS records per dispatch invocation."
  type        = number
  default     = 10
}

variable "dispatch_max_concurrency" {
  description = "Maximum concurrent dispatch invocations fed by the queue (2-1000); null: unbounded."
  type        = number
  default     = null
}

variable "alarm_sns_topic_arns" {
  description = "SNS topics notified when the dead-letter queue is not empty."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------
# Collect HTTP API
# ---------------------------------------------------------------------------

variable "collect_authorization_type" {
  description = "NONE (collect checks its API keys) or AWS_IAM (callers also sign with SigV4)."
  type        = string
  default     = "NONE"
}

# ---------------------------------------------------------------------------
# Redis (ElastiCache, cluster mode)
# ---------------------------------------------------------------------------

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_shards" {
  description = "Shards (node groups) of the Redis cluster."
  type        = number
  default     = 2
}

variable "redis_replicas_per_shard" {
  description = "Replicas per shard (1-5)."
  type        = number
  default     = 1
}

variable "redis_transit_encryption" {
  description = "TLS to Redis (rediss://)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------
# Managed edge: API Gateway WebSocket API (optional)
# ---------------------------------------------------------------------------

variable "enable_websocket_api" {
  description = "Create the API Gateway WebSocket API and the connections function (functions/connections) as a managed alternative, or complement, to the edge nodes."
  type        = bool
  default     = false
}

variable "websocket_stage" {
  description = "Stage name of the WebSocket API."
  type        = string
  default     = "prod"
}

variable "websocket_identity_sources" {
  description = "Where the $connect authorizer reads the token; clients lacking it are refused with 401 before auth runs."
  type        = list(string)
  default     = ["route.request.querystring.token"]
}

# ---------------------------------------------------------------------------
# Self-hosted edge nodes: ECS Fargate behind an NLB
# ---------------------------------------------------------------------------

variable "enable_edge_nodes" {
  description = "Run self-hosted edge nodes (ECS Fargate + NLB)."
  type        = bool
  default     = true
}

variable "edge_node_image" {
  description = "Container image running `edge-node serve` (needs /bin/sh), e.g. <account>.dkr.ecr.<region>.amazonaws.com/edgepush/edge-node:0.1.0. Required when enable_edge_nodes is true."
  type        = string
  default     = null
}

variable "edge_cpu_architecture" {
  description = "Architecture of the edge node image: X86_64 or ARM64."
  type        = string
  default     = "X86_64"
}

variable "edge_desired_count" {
  description = "Number of edge node tasks."
  type        = number
  default     = 2
}

variable "edge_cpu" {
  description = "CPU units per edge node task (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "edge_memory" {
  description = "Memory (MiB) per edge node task."
  type        = number
  default     = 2048
}

variable "edge_ws_port" {
  description = "Client WebSocket port inside the task."
  type        = number
  default     = 9001
}

variable "edge_push_port" {
  description = "Push API and health check port inside the task."
  type        = number
  default     = 9101
}

variable "edge_certificate_arn" {
  description = "ACM certificate for a TLS listener on 443 (wss://); null: only plain TCP listeners."
  type        = string
  default     = null
}

variable "edge_tcp_listener_ports" {
  description = "Plain TCP (ws://) listener ports of the NLB."
  type        = list(number)
  default     = [80]
}

variable "edge_deletion_protection" {
  description = "Protect the edge nodes' NLB from deletion; set false (and apply) before `terraform destroy`."
  type        = bool
  default     = true
}

variable "edge_internal" {
  description = "Internal NLB instead of internet-facing."
  type        = bool
  default     = false
}

variable "drain_timeout_seconds" {
  description = "Deregistration delay of the edge nodes' target group (seconds); must exceed edge_node_drain_timeout_ms."
  type        = number
  default     = 30
}

variable "edge_node_drain_timeout_ms" {
  description = "EDGEPUSH_DRAIN_TIMEOUT_MS: how long a node takes after SIGTERM to close its sockets with 1012."
  type        = number
  default     = 25000
}

variable "edge_node_environment" {
  description = "Extra EDGEPUSH_* environment of the edge nodes (e.g. EDGEPUSH_SEND_QUEUE)."
  type        = map(string)
  default     = {}
}
