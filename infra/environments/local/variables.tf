variable "localstack_endpoint" {
  description = "LocalStack's edge endpoint (every service on one port)."
  type        = string
  default     = "http://localhost:4566"
}

variable "aws_region" {
  description = "Region LocalStack pretends to be."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Environment name: resource names are edgepush-<environment>-..., parameters live under /edgepush/<environment>/."
  type        = string
  default     = "local"
}

variable "mongodb_uri" {
  description = "MongoDB the functions use (a local mongod or FerretDB; from inside LocalStack's Lambda containers use a host name they can reach, e.g. host.docker.internal)."
  type        = string
  default     = "mongodb://localhost:27017"
  sensitive   = true
}

variable "mongodb_database" {
  description = "MongoDB database name."
  type        = string
  default     = "edgepush"
}

variable "redis_url" {
  description = "Redis the functions and edge nodes use (ElastiCache is not in LocalStack's free edition)."
  type        = string
  default     = "redis://localhost:6379"
}

variable "jwt_secret" {
  description = "HS256 token secret; null generates one (read it back with `aws --endpoint-url ... ssm get-parameter --with-decryption`)."
  type        = string
  default     = null
  sensitive   = true
}

variable "push_access_key_id" {
  description = "Push credential key id; dev mode's default is dev-push."
  type        = string
  default     = "dev-push"
}

variable "push_secret_access_key" {
  description = "Push credential secret; dev mode's default is dev-push-secret."
  type        = string
  default     = "dev-push-secret"
  sensitive   = true
}

variable "api_keys" {
  description = "Collect API keys, source name => key."
  type        = map(string)
  default     = { default = "dev-api-key" }
  sensitive   = true
}

variable "enable_functions" {
  description = "Also create the Lambda functions and the queue's event source mapping. LocalStack runs Lambda functions only with a Docker engine; leave false without one."
  type        = bool
  default     = false
}

variable "lambda_dir" {
  description = "Where cargo lambda put the zips (<dir>/<binary>/bootstrap.zip); null means the workspace's target/lambda."
  type        = string
  default     = null
}

variable "lambda_architecture" {
  description = "Architecture of the zips: x86_64 (`--compiler cargo` on an x86_64 host) or arm64."
  type        = string
  default     = "x86_64"
}
