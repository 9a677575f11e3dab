variable "name_prefix" {
  description = "Prefix of the function names: <name_prefix>-auth, -collect, -dispatch, -connections."
  type        = string
}

variable "lambda_dir" {
  description = "Directory holding `cargo lambda build --output-format zip` results: <lambda_dir>/<binary>/bootstrap.zip."
  type        = string
}

variable "architecture" {
  description = "CPU architecture the binaries were built for: \"arm64\" (`cargo lambda build --arm64`, Graviton) or \"x86_64\"."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be \"arm64\" or \"x86_64\"."
  }
}

variable "runtime" {
  description = "Lambda runtime of the Rust `bootstrap` binaries."
  type        = string
  default     = "provided.al2023"
}

variable "enable_connections" {
  description = "Deploy the `connections` function (API Gateway WebSocket $connect/$disconnect/$default handler) as well."
  type        = bool
  default     = false
}

variable "settings" {
  description = "Per function (auth, collect, dispatch, connections): memory in MB and timeout in seconds. Missing functions keep the defaults."
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

variable "environment" {
  description = "Per function: plain environment variables (non-secret configuration)."
  type        = map(map(string))
  default     = {}
}

variable "ssm_parameters" {
  description = "Per function: environment variable => SSM parameter {name, arn}. The function gets `<VAR> = ssm:<name>` in its environment (resolved at cold start by edgepush-aws) and IAM permission to read exactly these parameters."
  type = map(map(object({
    name = string
    arn  = string
  })))
  default = {}
}

variable "ssm_reference_prefix" {
  description = "Prefix that marks an environment value as an SSM parameter reference (edgepush-aws reads `ssm:<name>`), e.g. EDGEPUSH_JWT_SECRET=ssm:/edgepush/prod/jwt-secret."
  type        = string
  default     = "ssm:"
}

variable "ssm_kms_key_arn" {
  description = "ARN of the customer managed KMS key encrypting the SecureString parameters; null when they use alias/aws/ssm (which needs no extra permission)."
  type        = string
  default     = null
}

variable "queue_arn" {
  description = "ARN of the hand-off queue: collect may send to it, dispatch may consume it."
  type        = string
}

variable "enable_websocket" {
  description = "Grant dispatch and connections execute-api:ManageConnections on the WebSocket API (set with websocket_execution_arn)."
  type        = bool
  default     = false
}

variable "websocket_execution_arn" {
  description = "Execution ARN of the API Gateway WebSocket API (arn:aws:execute-api:region:account:api-id); used when enable_websocket is true."
  type        = string
  default     = null
}

variable "websocket_stage" {
  description = "Stage of the WebSocket API that dispatch posts to."
  type        = string
  default     = "prod"
}

variable "vpc_functions" {
  description = "Functions attached to the VPC (those that reach ElastiCache Redis or the edge nodes' push API). auth needs no VPC."
  type        = list(string)
  default     = ["collect", "dispatch", "connections"]
}

variable "subnet_ids" {
  description = "Private subnets for the VPC-attached functions; empty attaches no function to a VPC (LocalStack)."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups of the VPC-attached functions."
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Retention of each function's CloudWatch log group."
  type        = number
  default     = 30
}

variable "tracing_mode" {
  description = "X-Ray tracing: \"Active\" or \"PassThrough\"."
  type        = string
  default     = "Active"
}

variable "reserved_concurrency" {
  description = "Per function reserved concurrency (-1: unreserved). Bounds what a burst can do to MongoDB and Redis."
  type        = map(number)
  default     = {}
}

variable "tags" {
  description = "Extra tags for every resource of this module."
  type        = map(string)
  default     = {}
}
